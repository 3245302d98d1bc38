"""Templates and the deterministic generator of the ``ss_arith`` word problems (exact integer answers).

Each template is ``(rng, name, other, obj) -> (question, work, answer)``: ``work`` is a :class:`Work` whose
steps ``a op b = c`` are computed as they are written, and ``answer`` is computed again by a separate
closed formula; :func:`problem` raises if the two disagree, so every shipped solution is checked twice.
The first seven templates are the original ``ss_arith`` ones (the few-shot ``train`` rows still come from
them, unchanged); the others add percentages, rates, comparisons, remainders, averages, ratios, units
and multi-step problems.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

NAMES = ["Ana", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kate", "Liam",
         "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sam", "Tara"]  # fmt: skip
OBJECTS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "stamps", "shells", "cards", "coins"]
# (item, plural, second item)
ITEMS = [("notebook", "notebooks", "pen"), ("sandwich", "sandwiches", "juice"), ("ticket", "tickets", "poster"),
         ("shirt", "shirts", "cap"), ("cake", "cakes", "candle")]  # fmt: skip
SHOP = ["jacket", "lamp", "backpack", "board game", "watch", "kettle", "pair of boots", "tent"]
MACHINES = [("A machine", "fills", "fill", "bottles"), ("A printer", "prints", "print", "pages"),
            ("A pump", "moves", "move", "liters of water"), ("A factory line", "makes", "make", "toys")]  # fmt: skip
# (subject, verb, slowest and fastest speed in km/h)
TRAVELLERS = [("A car", "travel", 40, 100), ("A train", "travel", 60, 150), ("A cyclist", "ride", 8, 25),
              ("A boat", "sail", 5, 30)]  # fmt: skip
GROUPS = [("students", "van", "vans", "holds"), ("guests", "table", "tables", "seats"),
          ("books", "box", "boxes", "holds"), ("players", "bus", "buses", "carries")]  # fmt: skip
EVENTS = ["film", "concert", "flight", "train ride", "football match", "play"]
FRACTIONS = [(2, "half"), (3, "a third"), (4, "a quarter"), (5, "a fifth")]
PLOTS = ["garden", "room", "field", "playground", "parking lot", "swimming pool"]
FENCED = ["garden", "field", "playground", "parking lot", "paddock", "vegetable patch"]
LENGTHS = ["rope", "ribbon", "board", "cable", "curtain"]
VENUES = ["hall", "theater", "cinema", "stadium section", "lecture room"]
RATIOS = [("In a class", "boys", "girls"), ("At a shelter", "cats", "dogs"), ("In a jar", "red beads", "blue beads"),
          ("In an orchard", "apple trees", "pear trees"), ("In a parking lot", "cars", "motorbikes")]  # fmt: skip


class Work:
    """Worked steps ``a op b = c``; each result is computed here, so every written step is true arithmetic."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.last: int | None = None

    def __call__(self, a: int, op: str, b: int) -> int:
        if op == "/" and a % b:
            raise ValueError(f"ss_arith: {a} / {b} is not an integer")
        c = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if op == "/" else 0}[op]
        if min(a, b, c) < 0:
            raise ValueError(f"ss_arith: negative number in {a} {op} {b} = {c}")
        self.steps.append(f"{a} {op} {b} = {c}")
        self.last = c
        return c

    def text(self) -> str:
        return " and ".join(self.steps)


Template = Callable[[random.Random, str, str, str], tuple[str, Work, int]]


# ------------------------------------------------------------------ the original seven (train rows come from these)
def t_add(rng, name, other, obj):
    a, b = rng.randint(5, 60), rng.randint(3, 40)
    w = Work()
    w(a, "+", b)
    return f"{name} has {a} {obj}. {name} gets {b} more {obj}. How many {obj} does {name} have now?", w, a + b


def t_subtract(rng, name, other, obj):
    b = rng.randint(3, 40)
    a = b + rng.randint(2, 50)
    w = Work()
    w(a, "-", b)
    return f"{name} had {a} {obj} and gave {b} of them to {other}. How many {obj} does {name} have left?", w, a - b


def t_boxes(rng, name, other, obj):
    a, b = rng.randint(2, 12), rng.randint(2, 15)
    w = Work()
    w(a, "*", b)
    return f"There are {a} boxes with {b} {obj} in each box. How many {obj} are there in total?", w, a * b


def t_share(rng, name, other, obj):
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    w = Work()
    w(a * b, "/", a)
    return f"{name} shares {a * b} {obj} equally among {a} friends. How many {obj} does each friend get?", w, b


def t_packs_give(rng, name, other, obj):
    a, b = rng.randint(2, 8), rng.randint(3, 12)
    c = rng.randint(1, a * b - 1)
    w = Work()
    w(w(a, "*", b), "-", c)
    return (f"{name} buys {a} packs of {obj} with {b} {obj} in each pack and then gives away {c} {obj}. "
            f"How many {obj} does {name} have left?"), w, a * b - c  # fmt: skip


def t_prices(rng, name, other, obj):
    first, firsts, second = rng.choice(ITEMS)
    a, b, n = rng.randint(2, 20), rng.randint(1, 10), rng.randint(2, 6)
    w = Work()
    w(w(n, "*", a), "+", b)
    return (f"A {first} costs {a} dollars and a {second} costs {b} dollar{'s' * (b != 1)}. "
            f"How many dollars do {n} {firsts} and one {second} cost together?"), w, n * a + b  # fmt: skip


def t_ages(rng, name, other, obj):
    a, b, c = rng.randint(5, 40), rng.randint(1, 15), rng.randint(1, 10)
    w = Work()
    w(w(a, "+", b), "+", c)
    q = f"{name} is {a} years old. {other} is {b} years older than {name}. How old will {other} be in {c} years?"
    return q, w, a + b + c


# ------------------------------------------------------------------ percentages, rates, comparisons, remainders
def _percent(rng: random.Random, choices: list[int], k_max: int) -> tuple[int, int]:
    """A percentage and a base whose percentage is a whole number."""
    pct = rng.choice(choices)
    return pct, rng.randint(2, k_max) * (100 // math.gcd(pct, 100))


def t_percent_of(rng, name, other, obj):
    pct, base = _percent(rng, [10, 20, 25, 50, 75], 20)
    w = Work()
    w(w(base, "*", pct), "/", 100)
    q = f"{name} has {base} {obj} and gives {pct}% of them to {other}. How many {obj} does {name} give to {other}?"
    return q, w, base * pct // 100


def t_discount(rng, name, other, obj):
    item = rng.choice(SHOP)
    pct, price = _percent(rng, [10, 20, 25, 30, 40, 50], 24)
    w = Work()
    w(price, "-", w(w(price, "*", pct), "/", 100))
    q = (f"A {item} costs {price} dollars. The shop takes {pct}% off the price. "
         f"How many dollars does the {item} cost after the discount?")  # fmt: skip
    return q, w, price * (100 - pct) // 100


def t_rate_total(rng, name, other, obj):
    subject, verbs, verb, unit = rng.choice(MACHINES)
    r, t = rng.randint(3, 40), rng.randint(2, 30)
    w = Work()
    w(r, "*", t)
    return f"{subject} {verbs} {r} {unit} every minute. How many {unit} does it {verb} in {t} minutes?", w, r * t


def t_rate_time(rng, name, other, obj):
    subject, verb, slow, fast = rng.choice(TRAVELLERS)
    v, t = rng.randint(slow, fast), rng.randint(2, 9)
    w = Work()
    w(v * t, "/", v)
    q = (f"{subject} moves at a steady {v} kilometers per hour. "
         f"How many hours does it take to {verb} {v * t} kilometers?")  # fmt: skip
    return q, w, t


def t_speed(rng, name, other, obj):
    v, t = rng.randint(8, 20), rng.randint(2, 6)
    w = Work()
    w(v * t, "/", t)
    q = (f"{name} cycles {v * t} kilometers in {t} hours at a steady pace. "
         f"How many kilometers does {name} cycle each hour?")  # fmt: skip
    return q, w, v


def t_compare_more(rng, name, other, obj):
    b = rng.randint(4, 60)
    a = b + rng.randint(1, 45)
    w = Work()
    w(a, "-", b)
    q = f"{name} has {a} {obj} and {other} has {b} {obj}. How many more {obj} does {name} have than {other}?"
    return q, w, a - b


def t_times_as_many(rng, name, other, obj):
    a, k = rng.randint(3, 25), rng.randint(2, 6)
    w = Work()
    w(a, "+", w(a, "*", k))
    q = (f"{name} has {a} {obj}. {other} has {k} times as many {obj} as {name}. "
         f"How many {obj} do they have together?")  # fmt: skip
    return q, w, a * (k + 1)


def t_fewer_total(rng, name, other, obj):
    a = rng.randint(10, 70)
    b = rng.randint(1, a - 1)
    w = Work()
    w(a, "+", w(a, "-", b))
    q = f"{name} has {a} {obj}. {other} has {b} fewer {obj} than {name}. How many {obj} do they have together?"
    return q, w, 2 * a - b


def t_remainder(rng, name, other, obj):
    b = rng.randint(3, 12)
    n = b * rng.randint(2, 12) + rng.randint(1, b - 1)
    w = Work()
    w(n, "-", w(n // b, "*", b))
    q = f"{name} puts {n} {obj} into bags of {b}, filling as many bags as possible. How many {obj} are left over?"
    return q, w, n % b


def t_groups_needed(rng, name, other, obj):
    people, one, many, verb = rng.choice(GROUPS)
    c = rng.randint(3, 12)
    n = c * rng.randint(2, 10) + rng.randint(1, c - 1)
    w = Work()
    w(n, "-", w(n // c, "*", c))
    w(n // c, "+", 1)
    q = f"There are {n} {people}. Each {one} {verb} {c} {people}. How many {many} are needed for all the {people}?"
    return q, w, -(-n // c)


def t_change(rng, name, other, obj):
    item, items, _ = rng.choice(ITEMS)
    bill = rng.choice([20, 50, 100])
    a = rng.randint(2, 6)
    p = rng.randint(2, (bill - 1) // a)
    w = Work()
    w(bill, "-", w(a, "*", p))
    q = (f"{name} buys {a} {items} for {p} dollars each and pays with a {bill}-dollar bill. "
         f"How many dollars of change does {name} get?")  # fmt: skip
    return q, w, bill - a * p


def t_average(rng, name, other, obj):
    x, y, z = rng.randint(5, 40), rng.randint(5, 40), rng.randint(5, 40)
    z += (-(x + y + z)) % 3
    w = Work()
    w(w(w(x, "+", y), "+", z), "/", 3)
    q = f"{name} scored {x}, {y} and {z} points in three games. What was {name}'s average score per game?"
    return q, w, (x + y + z) // 3


def t_fraction_keep(rng, name, other, obj):
    d, word = rng.choice(FRACTIONS)
    n = d * rng.randint(2, 15)
    w = Work()
    w(n, "-", w(n, "/", d))
    q = f"{name} has {n} {obj} and gives {word} of them to {other}. How many {obj} does {name} keep?"
    return q, w, n * (d - 1) // d


def t_half_after(rng, name, other, obj):
    a = rng.randint(4, 50)
    b = rng.randint(2, 40)
    b += (a + b) % 2
    w = Work()
    w(w(a, "+", b), "/", 2)
    q = (f"{name} had {a} {obj} and bought {b} more. Then {name} gave half of all the {obj} to {other}. "
         f"How many {obj} does {name} have now?")  # fmt: skip
    return q, w, (a + b) // 2


# ------------------------------------------------------------------ time, money, geometry, units, ratios
def t_minutes(rng, name, other, obj):
    event = rng.choice(EVENTS)
    h, m = rng.randint(1, 3), rng.randint(1, 59)
    w = Work()
    w(w(h, "*", 60), "+", m)
    return f"A {event} lasts {h} hours and {m} minutes. How many minutes long is the {event}?", w, 60 * h + m


def t_save_weeks(rng, name, other, obj):
    a, n = rng.randint(3, 30), rng.randint(2, 15)
    w = Work()
    w(a * n, "/", a)
    return f"{name} saves {a} dollars every week. How many weeks does it take {name} to save {a * n} dollars?", w, n


def t_wages(rng, name, other, obj):
    pay, h, d = rng.randint(8, 25), rng.randint(2, 8), rng.randint(2, 6)
    w = Work()
    w(w(pay, "*", h), "*", d)
    q = f"{name} earns {pay} dollars an hour and works {h} hours a day. How many dollars does {name} earn in {d} days?"
    return q, w, pay * h * d


def t_area(rng, name, other, obj):
    plot = rng.choice(PLOTS)
    b, a = sorted((rng.randint(3, 30), rng.randint(2, 20)))  # the length is the longer side
    w = Work()
    w(a, "*", b)
    return f"A rectangular {plot} is {a} meters long and {b} meters wide. What is its area in square meters?", w, a * b


def t_perimeter(rng, name, other, obj):
    plot = rng.choice(FENCED)
    b, a = sorted((rng.randint(3, 40), rng.randint(2, 30)))
    w = Work()
    w(w(a, "+", b), "*", 2)
    q = (f"A rectangular {plot} is {a} meters long and {b} meters wide. "
         f"How many meters of fence are needed to go all the way around it?")  # fmt: skip
    return q, w, 2 * (a + b)


def t_length_units(rng, name, other, obj):
    thing = rng.choice(LENGTHS)
    m, c = rng.randint(1, 9), rng.randint(1, 99)
    w = Work()
    w(w(m, "*", 100), "+", c)
    return f"A {thing} is {m} meters and {c} centimeters long. How long is the {thing} in centimeters?", w, 100 * m + c


def t_seats(rng, name, other, obj):
    venue = rng.choice(VENUES)
    r, s = rng.randint(3, 20), rng.randint(5, 25)
    t = rng.randint(1, r * s - 1)
    w = Work()
    w(w(r, "*", s), "-", t)
    q = f"A {venue} has {r} rows with {s} seats in each row. {t} seats are taken. How many seats are still empty?"
    return q, w, r * s - t


def t_ratio(rng, name, other, obj):
    where, x, y = rng.choice(RATIOS)
    a, b = rng.sample(range(1, 8), 2)
    while math.gcd(a, b) != 1:
        a, b = rng.sample(range(1, 8), 2)
    k = rng.randint(2, 9)
    w = Work()
    w(w(k * a, "/", a), "*", b)
    q = f"{where} the ratio of {x} to {y} is {a} to {b}. There are {k * a} {x}. How many {y} are there?"
    return q, w, k * b


def t_age_later(rng, name, other, obj):
    c, b = rng.randint(2, 10), rng.randint(1, 12)
    a = c + b + rng.randint(3, 40)
    w = Work()
    w(w(a, "-", c), "-", b)
    q = (f"In {c} years {name} will be {a} years old. {other} is {b} years younger than {name}. "
         f"How old is {other} now?")  # fmt: skip
    return q, w, a - c - b


def t_temperature(rng, name, other, obj):
    t, u = rng.randint(2, 20), rng.randint(2, 15)
    v = rng.randint(1, t + u - 1)
    w = Work()
    w(w(t, "+", u), "-", v)
    q = (f"In the morning the temperature was {t} degrees. By noon it had risen by {u} degrees, and by night it "
         f"had fallen by {v} degrees from the noon value. What was the temperature at night?")  # fmt: skip
    return q, w, t + u - v


LEGACY: dict[str, Template] = {"add": t_add, "subtract": t_subtract, "boxes": t_boxes, "share": t_share,
                               "packs_give": t_packs_give, "prices": t_prices, "ages": t_ages}  # fmt: skip
TEMPLATES: dict[str, Template] = {
    **LEGACY,
    "percent_of": t_percent_of, "discount": t_discount, "rate_total": t_rate_total, "rate_time": t_rate_time,
    "speed": t_speed, "compare_more": t_compare_more, "times_as_many": t_times_as_many,
    "fewer_total": t_fewer_total, "remainder": t_remainder, "groups_needed": t_groups_needed, "change": t_change,
    "average": t_average, "fraction_keep": t_fraction_keep, "half_after": t_half_after, "minutes": t_minutes,
    "save_weeks": t_save_weeks, "wages": t_wages, "area": t_area, "perimeter": t_perimeter,
    "length_units": t_length_units, "seats": t_seats, "ratio": t_ratio, "age_later": t_age_later,
    "temperature": t_temperature,
}  # fmt: skip


def problem(rng: random.Random, template: str) -> tuple[str, str, int]:
    """One problem of ``template``: (question, worked solution ending in 'The answer is N.', N)."""
    name, other = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    q, work, ans = TEMPLATES[template](rng, name, other, obj)
    if work.last != ans or ans < 0:
        raise ValueError(f"ss_arith {template}: worked steps give {work.last}, the formula gives {ans}: {q}")
    return q, f"{work.text()}. The answer is {ans}.", ans


def legacy_problem(rng: random.Random) -> tuple[str, str, int, str]:
    """The original generator (template drawn uniformly from the first seven): (question, solution, N, template)."""
    template = list(LEGACY)[rng.randrange(len(LEGACY))]
    return (*problem(rng, template), template)
