"""Knowledge tables and the deterministic generator of the ``ss_mc`` multiple-choice items.

Every item is a plain fact (calendar order, antonyms, categories, capitals, animal sounds, shapes,
irregular plurals, number comparison, everyday physical commonsense) with one right answer and three
distractors drawn from the same kind of answer, shuffled by a fixed seed.
"""

from __future__ import annotations

import random

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]  # fmt: skip
OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"),
    ("open", "closed"), ("up", "down"), ("early", "late"), ("full", "empty"), ("hard", "soft"),
    ("wet", "dry"), ("young", "old"), ("strong", "weak"), ("rich", "poor"), ("loud", "quiet"),
    ("tall", "short"), ("thick", "thin"), ("clean", "dirty"), ("win", "lose"), ("buy", "sell"),
    ("push", "pull"), ("begin", "end"), ("above", "below"), ("inside", "outside"), ("true", "false"),
    ("first", "last"), ("easy", "difficult"), ("cheap", "expensive"), ("near", "far"), ("day", "night"),
    ("north", "south"), ("east", "west"), ("friend", "enemy"), ("question", "answer"), ("left", "right"),
    ("give", "take"), ("arrive", "leave"), ("remember", "forget"), ("accept", "refuse"), ("asleep", "awake"),
]  # fmt: skip
CATEGORIES = {
    "fruit": ["apple", "banana", "cherry", "grape", "mango", "pear", "peach", "plum", "lemon", "orange"],
    "vegetable": ["carrot", "potato", "onion", "cabbage", "spinach", "broccoli", "lettuce", "celery", "pea", "leek"],
    "animal": ["dog", "horse", "tiger", "rabbit", "elephant", "giraffe", "zebra", "wolf", "bear", "fox"],
    "vehicle": ["car", "bus", "truck", "bicycle", "train", "motorcycle", "tram", "van", "scooter", "tractor"],
    "musical instrument": ["piano", "violin", "guitar", "flute", "drum", "trumpet", "cello", "harp", "clarinet", "banjo"],
    "piece of furniture": ["chair", "table", "sofa", "bed", "desk", "wardrobe", "bookshelf", "stool", "dresser", "bench"],
    "tool": ["hammer", "saw", "screwdriver", "wrench", "drill", "chisel", "pliers", "shovel", "rake", "axe"],
    "piece of clothing": ["shirt", "jacket", "scarf", "sock", "coat", "sweater", "skirt", "glove", "hat", "dress"],
}  # fmt: skip
CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Russia", "Moscow"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Poland", "Warsaw"),
    ("Hungary", "Budapest"), ("Kenya", "Nairobi"), ("Argentina", "Buenos Aires"), ("Peru", "Lima"),
    ("Mexico", "Mexico City"), ("Thailand", "Bangkok"), ("South Korea", "Seoul"), ("Australia", "Canberra"),
    ("Turkey", "Ankara"), ("Denmark", "Copenhagen"), ("Belgium", "Brussels"), ("the Netherlands", "Amsterdam"),
]  # fmt: skip
SOUNDS = [("dog", "bark"), ("cat", "meow"), ("cow", "moo"), ("sheep", "baa"), ("duck", "quack"),
          ("lion", "roar"), ("snake", "hiss"), ("horse", "neigh"), ("pig", "oink"), ("owl", "hoot"),
          ("bee", "buzz"), ("frog", "croak")]  # fmt: skip
YOUNG = [("dog", "puppy"), ("cat", "kitten"), ("cow", "calf"), ("horse", "foal"), ("sheep", "lamb"),
         ("hen", "chick"), ("bear", "cub"), ("duck", "duckling"), ("goat", "kid"), ("frog", "tadpole")]  # fmt: skip
SHAPES = [("triangle", 3), ("square", 4), ("pentagon", 5), ("hexagon", 6), ("heptagon", 7), ("octagon", 8),
          ("rectangle", 4), ("decagon", 10)]  # fmt: skip
PLURALS = [("mouse", "mice", ["mouses", "mices", "mousen"]), ("child", "children", ["childs", "childes", "childrens"]),
           ("foot", "feet", ["foots", "feets", "footes"]), ("tooth", "teeth", ["tooths", "teeths", "toothes"]),
           ("goose", "geese", ["gooses", "geeses", "goosen"]), ("man", "men", ["mans", "mens", "manes"]),
           ("woman", "women", ["womans", "womens", "womanes"]), ("person", "people", ["persons", "peoples", "persones"]),
           ("leaf", "leaves", ["leafs", "leafes", "leavs"]), ("knife", "knives", ["knifes", "knive", "knifies"])]  # fmt: skip
EVERYDAY = [
    ("Where do you keep milk so that it stays cold?", "in a refrigerator", ["in an oven", "on a windowsill", "in a drawer"]),
    ("What do you use to cut paper?", "scissors", ["a spoon", "a pillow", "a towel"]),
    ("What do people use to dry themselves after a shower?", "a towel", ["a fork", "a pencil", "a brick"]),
    ("What falls from clouds when it rains?", "water", ["sand", "milk", "sugar"]),
    ("What do plants need from the sun to grow?", "light", ["noise", "salt", "plastic"]),
    ("What do you wear on your feet to walk outside?", "shoes", ["gloves", "earrings", "a hat"]),
    ("Where does a fish live?", "in water", ["in a tree", "in the sky", "in the desert sand"]),
    ("What do you use to write on paper?", "a pen", ["a plate", "a sock", "a cup"]),
    ("What happens to ice when it gets warm?", "it melts", ["it freezes", "it burns", "it grows"]),
    ("What do bees make?", "honey", ["milk", "silk", "wool"]),
    ("What do you need to open a locked door?", "a key", ["a spoon", "a blanket", "a candle"]),
    ("Which season usually has the coldest weather?", "winter", ["summer", "spring", "autumn"]),
    ("What do you use to see in the dark?", "a flashlight", ["a hammer", "a mirror", "a pillow"]),
    ("What is the usual color of grass?", "green", ["purple", "orange", "black"]),
    ("What do people use an umbrella for?", "to stay dry in the rain", ["to cook food", "to tell the time", "to dig holes"]),
    ("Where do people usually sleep at night?", "in a bed", ["in a bathtub", "on a roof", "in a fridge"]),
    ("What do you use to brush your teeth?", "a toothbrush", ["a comb", "a broom", "a paintbrush"]),
    ("What do cows eat most of the time?", "grass", ["meat", "fish", "stones"]),
    ("What does a thermometer measure?", "temperature", ["weight", "length", "speed"]),
    ("What do you call frozen water?", "ice", ["steam", "sand", "glass"]),
]  # fmt: skip

SEED = 20240611


def _item(rng: random.Random, question: str, answer: str, distractors: list[str]) -> dict:
    choices = [answer, *distractors[:3]]
    if len(set(choices)) != 4:
        raise ValueError(f"ss_mc: duplicate choices for {question!r}: {choices}")
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "gold": choices.index(answer)}


def _pick(rng: random.Random, pool: list[str], exclude: set[str], k: int = 3) -> list[str]:
    return rng.sample(sorted(set(pool) - exclude), k)


def mc_items(seed: int = SEED) -> list[dict]:
    """All ``ss_mc`` items (266), in a fixed order; each ``{question, choices[4], gold, category}``."""
    rng = random.Random(seed)
    out: list[tuple[str, dict]] = []

    def add(cat: str, q: str, a: str, d: list[str]) -> None:
        out.append((cat, _item(rng, q, a, d)))

    for seq, unit in ((DAYS, "day"), (MONTHS, "month")):
        for i, x in enumerate(seq):
            nxt, prev = seq[(i + 1) % len(seq)], seq[i - 1]
            add("calendar", f"Which {unit} comes right after {x}?", nxt, _pick(rng, seq, {nxt, x}))
            add("calendar", f"Which {unit} comes right before {x}?", prev, _pick(rng, seq, {prev, x}))
    words = [w for pair in OPPOSITES for w in pair]
    for a, b in OPPOSITES:
        add("antonym", f"What is the opposite of '{a}'?", b, _pick(rng, words, {a, b}))
    for cat, members in CATEGORIES.items():
        others = [m for c, ms in CATEGORIES.items() if c != cat for m in ms]
        for m in members[:6]:
            add("category", f"Which of these is a {cat}?", m, _pick(rng, others, set()))
    capitals = [c for _, c in CAPITALS]
    for country, cap in CAPITALS:
        add("capital", f"What is the capital of {country}?", cap, _pick(rng, capitals, {cap}))
    for animal, sound in SOUNDS:
        add("animal", f"What sound does a {animal} make?", sound, _pick(rng, [s for _, s in SOUNDS], {sound}))
    for animal, young in YOUNG:
        add("animal", f"What is a young {animal} called?", young, _pick(rng, [y for _, y in YOUNG], {young}))
    for shape, sides in SHAPES:
        d = [str(n) for n in rng.sample(sorted(set(range(2, 13)) - {sides}), 3)]
        add("shape", f"How many sides does a {shape} have?", str(sides), d)
    for word, plural, wrong in PLURALS:
        add("plural", f"What is the plural of '{word}'?", plural, list(wrong))
    for q, a, d in EVERYDAY:
        add("everyday", q, a, list(d))
    for i in range(50):
        nums = rng.sample(range(1, 1000), 4)
        largest = i % 2 == 0
        ans = max(nums) if largest else min(nums)
        add("numbers", f"Which number is the {'largest' if largest else 'smallest'}?", str(ans),
            [str(n) for n in nums if n != ans])  # fmt: skip
    return [{**item, "category": cat} for cat, item in out]
