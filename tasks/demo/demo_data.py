"""Deterministic generators of the demo fleet's training and calibration data (no downloads).

Every generator is ``make_*_rows(n, seed) -> [{"prompt", "answer"}]`` and returns the same rows for the same
``(n, seed)`` on every machine (only ``random.Random(seed)``). A row becomes one training / calibration
sequence as in METHOD §5.1: ``prompt + " " + answer + EOS`` (the space only when the prompt does not end in
whitespace), loss on the answer only. The prompts have the formats the evaluation suites use:

* math: ``"Question: ...\\nAnswer:"`` → ``"3 * 4 = 12. 12 + 5 = 17. #### 17"`` (``ss_arith`` scores the last
  number, GSM8K the ``#### n``). Templates and names differ from ``ss_arith``'s, so no test problem is trained on.
* multiple choice: ``"Question: ...\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\nAnswer:"`` → ``"B"`` (lm-eval's
  ``commonsense_qa`` layout with four choices; the scored continuation is ``" B"``). The facts are kinds
  that ``ss_mc`` does not ask about.
* instruction: plain text, no chat template (as ``ss_ifeval`` prompts and ``LmEvalEvaluator``'s default
  ``apply_chat_template=False``): a topic followed by one or two verifiable constraints, worded by
  lm-eval's own IFEval instruction classes; the answer satisfies them (checked in the tests by IFEval's
  checkers). Topics differ from ``ss_ifeval``'s.
"""

from __future__ import annotations

import random
import string

NAMES = ["Abel", "Bianca", "Carlos", "Dana", "Elif", "Felix", "Gita", "Hugo", "Iris", "Jonas", "Kira", "Leo",
         "Mina", "Nils", "Omar", "Priya", "Rafael", "Sofia", "Tomas", "Uma", "Victor", "Wen", "Yara",
         "Zoe"]  # fmt: skip
THINGS = ["apples", "pears", "eggs", "crayons", "buttons", "beads", "toy cars", "bottles", "plates", "candles"]
CONTAINERS = [("basket", "baskets"), ("jar", "jars"), ("bag", "bags"), ("crate", "crates"), ("tray", "trays")]


def _math_problem(rng: random.Random) -> tuple[str, str]:
    """(question, worked solution ending in '#### N')."""
    kind = rng.randrange(8)
    name = rng.choice(NAMES)
    obj = rng.choice(THINGS)
    if kind == 0:
        a, b = rng.randint(3, 60), rng.randint(2, 40)
        q = (
            f"{name} collects {a} {obj} in the morning and {b} more in the afternoon. How many {obj} did"
            f" {name} collect?"
        )
        steps, ans = [f"{a} + {b} = {a + b}"], a + b
    elif kind == 1:
        b = rng.randint(2, 30)
        a = b + rng.randint(1, 50)
        q = f"A shelf holds {a} {obj}. {name} takes {b} of them away. How many {obj} are left on the shelf?"
        steps, ans = [f"{a} - {b} = {a - b}"], a - b
    elif kind == 2:
        a, b = rng.randint(2, 25), rng.randint(2, 9)
        q = f"{name} reads {a} pages every day for {b} days. How many pages does {name} read in total?"
        steps, ans = [f"{a} * {b} = {a * b}"], a * b
    elif kind == 3:
        a, b = rng.randint(2, 12), rng.randint(2, 10)
        q = f"A baker puts {a * b} muffins into boxes of {b}. How many boxes does the baker fill?"
        steps, ans = [f"{a * b} / {b} = {a}"], a
    elif kind == 4:
        a, b = rng.randint(5, 50), rng.randint(2, 30)
        c = rng.randint(1, a + b - 1)
        q = (
            f"{name} has {a} dollars, earns {b} dollars and then spends {c} dollars. How many dollars does {name} have"
            " now?"
        )
        steps, ans = [f"{a} + {b} = {a + b}", f"{a + b} - {c} = {a + b - c}"], a + b - c
    elif kind == 5:
        a = rng.randint(10, 50)
        b, c = rng.randint(1, a - 1), rng.randint(1, 20)
        q = (
            f"A bus has {a} passengers. At a stop {b} people get off and {c} people get on. How many passengers are on"
            " the bus now?"
        )
        steps, ans = [f"{a} - {b} = {a - b}", f"{a - b} + {c} = {a - b + c}"], a - b + c
    elif kind == 6:
        one, many = rng.choice(CONTAINERS)
        a, b, c = rng.randint(2, 12), rng.randint(2, 8), rng.randint(1, 9)
        q = f"Each {one} holds {a} {obj}. How many {obj} are there in {b} {many} and {c} more loose {obj}?"
        steps, ans = [f"{b} * {a} = {a * b}", f"{a * b} + {c} = {a * b + c}"], a * b + c
    else:
        a, b, c = rng.randint(3, 20), rng.randint(3, 20), rng.randint(2, 7)
        q = (
            f"{name} walks {a} minutes to school and {b} minutes back home every day. How many minutes does {name} walk"
            f" in {c} days?"
        )
        steps, ans = [f"{a} + {b} = {a + b}", f"{a + b} * {c} = {(a + b) * c}"], (a + b) * c
    return q, f"{'. '.join(steps)}. #### {ans}"


def make_math_rows(n: int, seed: int) -> list[dict]:
    """``n`` arithmetic word problems: ``"Question: ...\\nAnswer:"`` → ``"<steps>. #### <number>"``."""
    rng = random.Random(seed)
    rows = []
    for _ in range(_check_n(n)):
        q, solution = _math_problem(rng)
        rows.append({"prompt": f"Question: {q}\nAnswer:", "answer": solution})
    return rows


# ------------------------------------------------------------------------------------------------ multiple choice
SIZES = ["a grain of sand", "an ant", "a mouse", "a cat", "a dog", "a horse", "an elephant", "a blue whale"]
COUNTS = [("How many legs does a spider have?", 8), ("How many days are in a week?", 7),
          ("How many hours are in a day?", 24), ("How many minutes are in an hour?", 60),
          ("How many months are in a year?", 12), ("How many wheels does a bicycle have?", 2),
          ("How many legs does a dog have?", 4), ("How many legs does a bird have?", 2),
          ("How many wheels does a tricycle have?", 3), ("How many seconds are in a minute?", 60),
          ("How many fingers are on one hand?", 5), ("How many letters are in the English alphabet?", 26),
          ("How many legs does an insect have?", 6), ("How many years are in a century?", 100),
          ("How many days are in a leap year?", 366), ("How many arms does an octopus have?", 8),
          ("How many strings does a standard guitar have?", 6),
          ("How many players does a soccer team have on the field?", 11),
          ("How many years are in a decade?", 10), ("How many eggs are in a dozen?", 12)]  # fmt: skip
JOBS = [("Who flies an airplane?", "a pilot"), ("Who treats sick animals?", "a veterinarian"),
        ("Who puts out fires?", "a firefighter"), ("Who bakes bread for a living?", "a baker"),
        ("Who teaches children at school?", "a teacher"), ("Who fixes leaking pipes?", "a plumber"),
        ("Who delivers letters?", "a mail carrier"), ("Who grows crops on a farm?", "a farmer"),
        ("Who cuts hair?", "a barber"), ("Who checks and cleans your teeth?", "a dentist"),
        ("Who cooks meals in a restaurant?", "a chef"), ("Who designs buildings?", "an architect"),
        ("Who takes care of patients in a hospital?", "a nurse"), ("Who repairs cars?", "a mechanic"),
        ("Who writes news stories?", "a journalist"),
        ("Who serves food at a restaurant table?", "a waiter")]  # fmt: skip
PLACES = [("Where do you borrow books?", "a library"), ("Where do you buy medicine?", "a pharmacy"),
          ("Where do airplanes take off?", "an airport"), ("Where can you watch a film on a big screen?", "a cinema"),
          ("Where do you send a package?", "a post office"), ("Where do children go to learn?", "a school"),
          ("Where do people go when they are very sick?", "a hospital"), ("Where do you buy fresh bread?", "a bakery"),
          ("Where do people keep their savings?", "a bank"), ("Where do passengers board a train?", "a station"),
          ("Where can you see lions and zebras from many countries?", "a zoo"),
          ("Where do you look at old paintings and statues?", "a museum")]  # fmt: skip
PROPERTIES = [
    ("Which of these is hot?", ["fire", "the sun", "boiling water", "a lit stove"],
     ["ice", "snow", "a freezer", "cold milk"]),
    ("Which of these can fly?", ["an eagle", "a bat", "a butterfly", "an airplane"],
     ["a rock", "a table", "a cow", "a bus"]),
    ("Which of these is soft?", ["a pillow", "a cotton ball", "a feather", "a blanket"],
     ["a rock", "a brick", "a steel pipe", "a nail"]),
    ("Which of these can you eat?", ["an apple", "bread", "rice", "cheese"],
     ["a shoe", "a stone", "a spoon", "a candle"]),
    ("Which of these is alive?", ["a tree", "a bird", "a fish", "a flower"], ["a chair", "a stone", "a cup", "a lamp"]),
    ("Which of these tastes sweet?", ["sugar", "honey", "candy", "chocolate"], ["salt", "vinegar", "pepper", "sand"]),
    ("Which of these melts in the sun?", ["ice cream", "an ice cube", "snow", "butter"],
     ["a stone", "a brick", "a spoon", "a bottle"]),
]  # fmt: skip


def _mc_question(rng: random.Random) -> tuple[str, str, list[str]]:
    """(question, right answer, three wrong answers)."""
    kind = rng.randrange(8)
    if kind == 0:
        even = rng.random() < 0.5
        pool = [x for x in range(1, 100) if (x % 2 == 0) != even]
        right = rng.choice([x for x in range(1, 100) if (x % 2 == 0) == even])
        return (f"Which of these numbers is {'even' if even else 'odd'}?", str(right),
                [str(x) for x in rng.sample(pool, 3)])
    if kind == 1:
        i = rng.randint(1, 24)
        after = rng.random() < 0.5
        right = string.ascii_uppercase[i + 1 if after else i - 1]
        wrong = rng.sample([c for c in string.ascii_uppercase if c not in (right, string.ascii_uppercase[i])], 3)
        return (
            f"Which letter comes right {'after' if after else 'before'} {string.ascii_uppercase[i]} in the alphabet?",
            right,
            wrong,
        )
    if kind == 2:
        picked = sorted(rng.sample(range(len(SIZES)), 4))
        largest = rng.random() < 0.5
        right = SIZES[picked[-1] if largest else picked[0]]
        return (
            f"Which of these is the {'largest' if largest else 'smallest'}?",
            right,
            [SIZES[i] for i in picked if SIZES[i] != right],
        )
    if kind == 3:
        q, right = rng.choice(COUNTS)
        near = {right + d for d in (-3, -2, -1, 1, 2, 3, 4, right)}
        wrong = rng.sample(sorted(x for x in near if x > 0 and x != right), 3)
        return q, str(right), [str(w) for w in wrong]
    if kind in (4, 5):
        table = JOBS if kind == 4 else PLACES
        q, right = rng.choice(table)
        return q, right, rng.sample([a for _, a in table if a != right], 3)
    if kind == 6:
        q, yes, no = rng.choice(PROPERTIES)
        return q, rng.choice(yes), rng.sample(no, 3)
    n = rng.randint(1, 200)
    wrong = rng.sample(sorted(x for x in {n - 1, n + 2, n + 10, n - 10, n + 11} if x > 0), 3)
    return f"Which number comes right after {n}?", str(n + 1), [str(w) for w in wrong]


LETTERS = "ABCD"


def make_mc_rows(n: int, seed: int) -> list[dict]:
    """``n`` four-way multiple-choice questions answered with a letter: prompt ``...\\nAnswer:`` → ``"B"``."""
    rng = random.Random(seed)
    rows = []
    for _ in range(_check_n(n)):
        q, right, wrong = _mc_question(rng)
        choices = [right, *wrong]
        rng.shuffle(choices)
        lines = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
        rows.append({"prompt": f"Question: {q}\n{lines}\nAnswer:", "answer": LETTERS[choices.index(right)]})
    return rows


# ------------------------------------------------------------------------------------------------ instructions
# (task, title, four short comma-free English sentences); none of ss_ifeval's topics.
TOPICS = [
    ("Describe a lighthouse.", "The Lighthouse",
     ["A lighthouse is a tall tower near the sea.", "Its bright lamp guides ships at night.",
      "Sailors use the light to avoid dangerous rocks.", "Many lighthouses are painted with bold stripes."]),
    ("Explain how rain forms.", "How Rain Forms",
     ["The sun warms water in lakes and seas.", "The water rises into the air as vapor.",
      "High in the sky the vapor cools into small drops.", "When the drops grow heavy they fall as rain."]),
    ("Write a short note about your favorite fruit.", "My Favorite Fruit",
     ["My favorite fruit is the mango.", "It is sweet and very juicy.", "I like to eat it cold on a hot day.",
      "The smell alone makes me happy."]),
    ("Describe a busy kitchen.", "A Busy Kitchen",
     ["Pots bubble on every stove.", "The cooks move quickly between the tables.", "Fresh bread cools near the window.",
      "Everyone shouts orders over the noise."]),
    ("Explain why sleep is important.", "Why Sleep Matters",
     ["Sleep lets the body rest and repair itself.", "It helps the brain store new memories.",
      "People who sleep well think more clearly.", "Most adults need about eight hours each night."]),
    ("Describe a walk in the park.", "A Walk in the Park",
     ["The path winds past a quiet pond.", "Ducks glide across the calm water.", "Children play on the green grass.",
      "Old trees give cool shade in the afternoon."]),
    ("Explain how a kite flies.", "How a Kite Flies",
     ["Wind pushes against the face of the kite.", "The string holds the kite at an angle.",
      "This angle turns the push of the wind into lift.", "A long tail keeps the kite steady in the air."]),
    ("Write a short invitation to a birthday party.", "You Are Invited",
     ["Please join us for a birthday party on Saturday.", "The fun starts at three in the afternoon.",
      "There will be cake and games for everyone.", "We hope to see you there."]),
    ("Describe your morning routine.", "My Morning Routine",
     ["I wake up at seven every morning.", "First I drink a glass of water.", "Then I take a shower and get dressed.",
      "I eat breakfast before I leave the house."]),
    ("Explain what a volcano is.", "What Is a Volcano",
     ["A volcano is an opening in the crust of the earth.", "Hot melted rock called magma rises from below.",
      "When it erupts the magma flows out as lava.", "Ash and gas can also shoot into the sky."]),
    ("Write a short review of a board game.", "A Fun Board Game",
     ["This board game is easy to learn.", "Each round takes only a few minutes.",
      "The colorful cards make it fun for children.", "Our whole family enjoyed playing it."]),
    ("Describe a snowy winter day.", "A Snowy Day",
     ["Soft snow covers the streets and roofs.", "Children build a snowman in the yard.",
      "The air is cold and very still.", "Warm soup tastes best on a day like this."]),
    ("Explain how to care for a houseplant.", "Caring for a Houseplant",
     ["Place the plant near a bright window.", "Water it when the soil feels dry.",
      "Remove old leaves that turn brown.", "Give it fresh soil once a year."]),
    ("Describe a train journey through the countryside.", "A Country Train Ride",
     ["The train rolls past green fields.", "Cows graze beside small farms.", "Passengers watch the hills go by.",
      "The gentle rocking makes many people sleepy."]),
    ("Explain why the moon changes shape.", "The Changing Moon",
     ["The moon does not make its own light.", "We see the part that the sun lights up.",
      "As the moon circles the earth that part changes.", "This is why the moon seems to change its shape."]),
    ("Write a short message to a new neighbor.", "Welcome Neighbor",
     ["Welcome to the neighborhood.", "We live in the blue house next door.", "Please knock if you ever need help.",
      "We hope you will be happy here."]),
    ("Describe a city at night.", "The City at Night",
     ["Street lamps glow along the wide roads.", "Music drifts out of small cafes.",
      "Tall buildings shine with thousands of windows.", "The city never seems to fall asleep."]),
    ("Explain how bees help flowers.", "Bees and Flowers",
     ["Bees visit flowers to collect sweet nectar.", "Pollen sticks to their fuzzy bodies.",
      "They carry the pollen to the next flower.", "This helps the flowers make seeds."]),
    ("Write a short story about a brave mouse.", "The Brave Mouse",
     ["A small mouse lived under an old barn.", "One day a cat blocked the way to the food.",
      "The mouse made a loud noise and the cat ran off.", "From then on the mouse was known as the bravest of all."]),
    ("Describe how to make a sandwich.", "Making a Sandwich",
     ["Take two slices of fresh bread.", "Spread butter on one side of each slice.",
      "Add cheese and some crisp lettuce.", "Press the slices together and cut it in half."]),
    ("Explain why people keep pets.", "Why People Keep Pets",
     ["Pets give their owners love and company.", "Walking a dog keeps people active.",
      "Caring for a pet teaches responsibility.", "Many people feel calmer when a pet is near."]),
    ("Describe a rainy afternoon at home.", "A Rainy Afternoon",
     ["Rain taps gently on the window.", "I sit by the lamp with a good book.", "The smell of tea fills the room.",
      "It is a perfect time to relax."]),
    ("Explain how a compass works.", "How a Compass Works",
     ["A compass has a small magnetic needle.", "The earth acts like a giant magnet.",
      "The needle turns to point toward the north.", "Travelers use it to find their way."]),
    ("Write a short speech for a school sports day.", "Sports Day",
     ["Welcome to our school sports day.", "Today we will run and jump and cheer.",
      "Winning is nice but playing fair matters more.", "Let us have a great day together."]),
]  # fmt: skip
KEYWORDS = ["sunlight", "pocket", "ribbon", "pebble", "whistle", "blanket", "ladder", "violet", "marble", "feather"]
END_PHRASES = ["Thank you for reading.", "That is all for today.", "Have a wonderful day."]
EXTRA = ["I hope this helps.", "It is worth seeing for yourself.", "There is always more to learn."]
INSTRUCTION_IDS = ("change_case:english_lowercase", "change_case:english_capital",
                   "detectable_format:number_bullet_lists",
                   "startend:end_checker", "startend:quotation", "keywords:existence", "punctuation:no_comma",
                   "detectable_content:postscript", "detectable_format:title")  # fmt: skip
# Pairs that cannot both hold: IFEval's own conflicts for these ids (upper vs lower case, quotes vs title), and
# quotes vs bullets (the opening quote would hide the first bullet's leading '*' from IFEval's checker).
_CONFLICTS = {frozenset(p) for p in [("change_case:english_lowercase", "change_case:english_capital"),
                                     ("startend:quotation", "detectable_format:title"),
                                     ("startend:quotation", "detectable_format:number_bullet_lists")]}  # fmt: skip


def _kwargs(rng: random.Random, iid: str) -> dict:
    if iid == "detectable_format:number_bullet_lists":
        return {"num_bullets": rng.randint(2, 4)}
    if iid == "startend:end_checker":
        return {"end_phrase": rng.choice(END_PHRASES)}
    if iid == "keywords:existence":
        return {"keywords": sorted(rng.sample(KEYWORDS, rng.randint(1, 2)))}
    if iid == "detectable_content:postscript":
        return {"postscript_marker": "P.S."}
    return {}


def _respond(rng: random.Random, title: str, sentences: list[str], ids: list[str], kwargs: list[dict]) -> str:
    """A response that satisfies every instruction in ``ids`` (applied in an order where none undoes another)."""
    kw = dict(zip(ids, kwargs))
    if "detectable_format:number_bullet_lists" in kw:
        body = "\n".join(f"* {s}" for s in sentences[: kw["detectable_format:number_bullet_lists"]["num_bullets"]])
    else:
        body = " ".join(sentences[:2])
    if "keywords:existence" in kw:
        words = kw["keywords:existence"]["keywords"]
        body += f" It made me think of a {' and a '.join(words)}."
    if "detectable_format:title" in kw:
        body = f"<<{title}>>\n{body}"
    if "detectable_content:postscript" in kw:
        body += f"\n\nP.S. {rng.choice(EXTRA)}"
    if "startend:end_checker" in kw:
        body += f"\n{kw['startend:end_checker']['end_phrase']}"
    if "change_case:english_lowercase" in kw:
        body = body.lower()
    if "change_case:english_capital" in kw:
        body = body.upper()
    if "startend:quotation" in kw:
        body = f'"{body}"'
    return body


def make_instruction_items(n: int, seed: int) -> list[dict]:
    """``n`` IFEval-format items with a reference answer: ``{prompt, answer, instruction_id_list, kwargs}``.

    One constraint, or (every other item on average) two compatible ones; the descriptions come from
    lm-eval's IFEval instruction classes, so the prompt wording is IFEval's and its checkers score the answer.
    """
    from spectral_surgery.tasks.evaluation.nltk_data import ensure_punkt_tab

    ensure_punkt_tab()  # lm_eval.tasks.ifeval downloads punkt_tab at import time otherwise
    from lm_eval.tasks.ifeval import instructions_registry as reg

    rng = random.Random(seed)
    items = []
    for _ in range(_check_n(n)):
        task, title, sentences = rng.choice(TOPICS)
        ids = [rng.choice(INSTRUCTION_IDS)]
        if rng.random() < 0.5:
            ids.append(
                rng.choice([i for i in INSTRUCTION_IDS if i != ids[0] and frozenset((i, ids[0])) not in _CONFLICTS])
            )
        kwargs = [_kwargs(rng, iid) for iid in ids]
        descriptions = [reg.INSTRUCTION_DICT[iid](iid).build_description(**kw) for iid, kw in zip(ids, kwargs)]
        items.append({"prompt": " ".join([task, *descriptions]), "answer": _respond(rng, title, sentences, ids, kwargs),
                      "instruction_id_list": ids, "kwargs": kwargs})  # fmt: skip
    return items


def make_instruction_rows(n: int, seed: int) -> list[dict]:
    """``n`` instruction-following rows ``{prompt, answer}`` (see :func:`make_instruction_items`)."""
    return [{"prompt": it["prompt"], "answer": it["answer"]} for it in make_instruction_items(n, seed)]


def _check_n(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"number of rows must be a positive int, got {n!r}")
    return n
