"""The deterministic generator of the ``ss_mc`` multiple-choice items (about 1,200, 15 categories).

Every item is a plain fact with one right answer and three plausible wrong ones, built from the tables
in :mod:`tasks.evaluation.suites.mc_tables` or computed (calendar and clock arithmetic, unit conversions, number
comparisons, sums, alphabetical order). Where the wrong choices only make sense next to each other
("Which of these is a fruit?") the question lists the four choices, so that every question text is
unique. Items are spread so that any prefix mixes the categories (:func:`tasks.evaluation.suites.mix.spread`),
and the right answer's position cycles through A-D within every four consecutive items.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from spectral_surgery.tasks.evaluation.suites import mc_tables as t
from spectral_surgery.tasks.evaluation.suites.mix import spread

SEED = 20240611
OPTIONS = "{options}"  # replaced by the four choices in their final order: "a, b, c or d"


@dataclass(frozen=True)
class Draft:
    """An item before its choices are placed: the question may contain :data:`OPTIONS`."""

    category: str
    question: str
    answer: str
    distractors: tuple[str, ...]

    def key(self) -> Hashable:
        """Two drafts with the same key would render the same question text."""
        if OPTIONS in self.question:
            return self.question, frozenset((self.answer, *self.distractors))
        return self.question


def _pick(rng: random.Random, pool: Iterable[str], exclude: Iterable[str], prefer: Iterable[str] = ()) -> list[str]:
    """Three wrong choices: the ``prefer`` ones first (likely confusions), then random ones from ``pool``."""
    exclude = set(exclude)
    out = [x for x in dict.fromkeys(prefer) if x not in exclude][:3]
    rest = sorted(set(pool) - exclude - set(out))
    return out + rng.sample(rest, 3 - len(out))


def _numbers(cands: Iterable[int], answer: int, rng: random.Random, exclude: Iterable[int] = ()) -> list[str]:
    """Three distinct positive wrong numbers from ``cands`` (in a random choice), as strings."""
    ok = sorted({c for c in cands if c > 0 and c != answer and c not in set(exclude)})
    return [str(c) for c in rng.sample(ok, 3)]


def _fill(n: int, make: Callable[[int], Draft]) -> list[Draft]:
    """``n`` drafts with distinct keys from ``make(i)`` (random ones may repeat and are drawn again)."""
    out, seen, i = [], set(), 0
    while len(out) < n:
        d = make(i)
        i += 1
        if d.key() not in seen:
            seen.add(d.key())
            out.append(d)
        if i > 50 * n:
            raise RuntimeError(f"ss_mc: cannot draw {n} distinct {d.category} items")
    return out


# ------------------------------------------------------------------------------------------------ generators
def calendar(rng: random.Random) -> list[Draft]:
    out = []
    for seq, unit in ((t.DAYS, "day"), (t.MONTHS, "month")):
        m = len(seq)
        for i, x in enumerate(seq):
            nxt, prev = seq[(i + 1) % m], seq[i - 1]
            out.append(Draft("calendar", f"Which {unit} comes right after {x}?", nxt,
                             tuple(_pick(rng, seq, {nxt, x}, [seq[(i + 2) % m], prev]))))  # fmt: skip
            out.append(Draft("calendar", f"Which {unit} comes right before {x}?", prev,
                             tuple(_pick(rng, seq, {prev, x}, [seq[i - 2], nxt]))))  # fmt: skip
    for i, x in enumerate(t.DAYS):
        for k in range(2, 7):
            ans = t.DAYS[(i + k) % 7]
            near = [t.DAYS[(i + k - 1) % 7], t.DAYS[(i + k + 1) % 7]]
            out.append(Draft("calendar", f"What day of the week is it {k} days after {x}?", ans,
                             tuple(_pick(rng, t.DAYS, {ans, x}, near))))  # fmt: skip
    for i, x in enumerate(t.MONTHS):
        for k in range(2, 6):
            ans = t.MONTHS[(i + k) % 12]
            near = [t.MONTHS[(i + k - 1) % 12], t.MONTHS[(i + k + 1) % 12]]
            out.append(Draft("calendar", f"Which month is {k} months after {x}?", ans,
                             tuple(_pick(rng, t.MONTHS, {ans, x}, near))))  # fmt: skip
    for month, days in zip(t.MONTHS, t.MONTH_DAYS):
        out.append(Draft("calendar", f"How many days are there in {month} in a year that is not a leap year?",
                         str(days), tuple(str(d) for d in (28, 29, 30, 31) if d != days)))  # fmt: skip
    return out


def clock(rng: random.Random) -> list[Draft]:
    pairs = rng.sample([(h, k) for h in range(1, 13) for k in range(2, 12)], 80)

    def hour(x: int) -> str:
        return f"{(x - 1) % 12 + 1} o'clock"

    return [Draft("clock", f"If it is {h} o'clock now, what time will it be in {k} hours?", hour(h + k),
                  tuple(_pick(rng, [hour(x) for x in range(1, 13)], {hour(h + k), hour(h)},
                              [hour(h + k + 1), hour(h + k - 1)])))
            for h, k in pairs]  # fmt: skip


def antonym(rng: random.Random) -> list[Draft]:
    near: dict[str, set[str]] = {}
    for w, x in t.NEAR_OPPOSITES:
        near.setdefault(w, set()).add(x)
    out = []
    for pairs in t.OPPOSITES.values():
        words = [w for pair in pairs for w in pair]
        for i, (a, b) in enumerate(pairs):
            for q, ans in [(a, b), (b, a)][: 1 + i % 2]:  # both directions for every other pair
                out.append(Draft("antonym", f"What is the opposite of '{q}'?", ans,
                                 tuple(_pick(rng, words, {a, b} | near.get(q, set())))))  # fmt: skip
    return out


def category(rng: random.Random) -> list[Draft]:
    cats = sorted(t.CATEGORIES)
    out = []
    for cat in cats:
        others = [c for c in cats if c != cat]
        for m in rng.sample(t.CATEGORIES[cat], 7):
            wrong = [rng.choice(t.CATEGORIES[c]) for c in rng.sample(others, 3)]
            out.append(Draft("category", f"Which of these is a {cat}: {OPTIONS}?", m, tuple(wrong)))
    return out


def odd_one_out(rng: random.Random) -> list[Draft]:
    cats = sorted(t.CATEGORIES)
    out = []
    for cat in cats:
        for _ in range(5):
            odd = rng.choice(t.CATEGORIES[rng.choice([c for c in cats if c != cat])])
            out.append(Draft("odd_one_out", f"Which of these is not a {cat}: {OPTIONS}?", odd,
                             tuple(rng.sample(t.CATEGORIES[cat], 3))))  # fmt: skip
    return out


def capital(rng: random.Random) -> list[Draft]:
    capitals = [c for _, c in t.CAPITALS]
    countries = [c for c, _ in t.CAPITALS]
    out = []
    for i, (country, cap) in enumerate(t.CAPITALS):
        trap = [t.NOT_CAPITAL[country]] if country in t.NOT_CAPITAL else []
        out.append(Draft("capital", f"What is the capital of {country}?", cap,
                         tuple(_pick(rng, capitals, {cap}, trap))))  # fmt: skip
        if i % 2:
            out.append(Draft("capital", f"{cap} is the capital of which country?", country,
                             tuple(_pick(rng, countries, {country}))))  # fmt: skip
    return out


def animal(rng: random.Random) -> list[Draft]:
    out = [Draft("animal", f"What sound does a {a} make?", s, tuple(_pick(rng, [x for _, x in t.SOUNDS], {s})))
           for a, s in t.SOUNDS]  # fmt: skip
    out += [Draft("animal", f"What is a young {a} called?", y, tuple(_pick(rng, [x for _, x in t.YOUNG], {y})))
            for a, y in t.YOUNG]  # fmt: skip
    out += [Draft("animal", q, a, tuple(_pick(rng, [x for _, x in t.FEATURES], {a}))) for q, a in t.FEATURES]
    return out


def units(rng: random.Random) -> list[Draft]:
    out = []
    for large, small, f in t.UNITS:
        for n in sorted(rng.sample(range(2, 13), 9)):
            ans = n * f
            cands = [(n - 1) * f, (n + 1) * f, n * (100 if f != 100 else 10), n * f * 10, n + f]
            out.append(Draft("units", f"How many {small} are in {n} {large}?", str(ans),
                             tuple(_numbers(cands, ans, rng))))
    return out


def numbers(rng: random.Random) -> list[Draft]:
    def extreme(i: int) -> Draft:
        if i % 2:
            digits = rng.sample(range(1, 10), 3)
            nums = rng.sample([int("".join(map(str, p))) for p in itertools.permutations(digits)], 4)
        else:
            base = rng.randint(100, 900)
            nums = [base + x for x in rng.sample(range(90), 4)]
        largest = i % 4 < 2
        ans = max(nums) if largest else min(nums)
        return Draft("numbers", f"Which number is the {'largest' if largest else 'smallest'}: {OPTIONS}?", str(ans),
                     tuple(str(n) for n in nums if n != ans))  # fmt: skip

    def halfway(i: int) -> Draft:
        a, gap = rng.randint(2, 60), 2 * rng.randint(2, 20)
        ans = a + gap // 2
        cands = [ans - 1, ans + 1, ans + 2, ans - 2, ans + 3, gap]
        return Draft("numbers", f"Which number is exactly halfway between {a} and {a + gap}?", str(ans),
                     tuple(_numbers(cands, ans, rng, exclude={a, a + gap})))  # fmt: skip

    return _fill(50, extreme) + _fill(20, halfway)


def arithmetic(rng: random.Random) -> list[Draft]:
    def add(i: int) -> Draft:
        a, b = rng.randint(12, 89), rng.randint(12, 89)
        ans = a + b
        return Draft("arithmetic", f"What is {a} + {b}?", str(ans),
                     tuple(_numbers([ans + 1, ans - 1, ans + 10, ans - 10], ans, rng)))  # fmt: skip

    def sub(i: int) -> Draft:
        a = rng.randint(30, 99)
        b = rng.randint(11, a - 5)
        ans = a - b
        return Draft("arithmetic", f"What is {a} - {b}?", str(ans),
                     tuple(_numbers([ans + 1, ans - 1, ans + 10, ans - 10, a + b], ans, rng)))  # fmt: skip

    def times(i: int) -> Draft:
        a, b = rng.randint(3, 12), rng.randint(3, 12)
        ans = a * b
        return Draft("arithmetic", f"What is {a} times {b}?", str(ans),
                     tuple(_numbers([ans + a, ans - a, ans + b, ans - b, ans + 1, a + b], ans, rng)))  # fmt: skip

    def sums(i: int) -> Draft:
        values = rng.sample(range(20, 41), 4)
        firsts = [rng.randint(5, v - 5) for v in values]
        exprs = {v: f"{a} + {v - a}" for v, a in zip(values, firsts)}
        largest = i % 2 == 0
        best = max(values) if largest else min(values)
        return Draft("arithmetic", f"Which sum is the {'largest' if largest else 'smallest'}: {OPTIONS}?", exprs[best],
                     tuple(exprs[v] for v in values if v != best))  # fmt: skip

    return _fill(30, add) + _fill(30, sub) + _fill(30, times) + _fill(30, sums)


def ordering(rng: random.Random) -> list[Draft]:
    def alpha(i: int) -> Draft:
        words = rng.sample(t.ALPHA_WORDS, 4)
        first = i % 2 == 0
        ans = min(words) if first else max(words)
        return Draft("ordering", f"Which word comes {'first' if first else 'last'} in alphabetical order: {OPTIONS}?",
                     ans, tuple(w for w in words if w != ans))  # fmt: skip

    def ranked(table: list[str], template: str, hi: str, lo: str) -> Callable[[int], Draft]:
        def make(i: int) -> Draft:
            picked = [table[j] for j in sorted(rng.sample(range(len(table)), 4))]
            ans = picked[-1] if i % 2 == 0 else picked[0]
            word = hi if i % 2 == 0 else lo
            return Draft("ordering", template.format(word, OPTIONS), ans, tuple(x for x in picked if x != ans))

        return make

    return (_fill(60, alpha) + _fill(30, ranked(t.WEIGHTS, "Which of these is the {}: {}?", "heaviest", "lightest"))
            + _fill(24, ranked(t.DURATIONS, "Which is the {} amount of time: {}?", "longest", "shortest")))  # fmt: skip


def _regular_past(v: str) -> str:
    if v.endswith("e"):
        return v + "d"
    if v.endswith("y") and v[-2] not in "aeiou":
        return v[:-1] + "ied"
    return v + "ed"


def _third_person(v: str) -> str:
    if v.endswith(("s", "sh", "ch", "x", "o")):
        return v + "es"
    if v.endswith("y") and v[-2] not in "aeiou":
        return v[:-1] + "ies"
    return v + "s"


def grammar(rng: random.Random) -> list[Draft]:
    out = [Draft("grammar", f"What is the plural of '{w}'?", p, tuple(wrong)) for w, p, wrong in t.PLURALS]
    for verb, past in t.PAST:
        wrong = (_regular_past(verb), _regular_past(past), _third_person(verb))
        out.append(Draft("grammar", f"What is the past tense of '{verb}'?", past, wrong))
    return out


def shape(rng: random.Random) -> list[Draft]:
    out = []
    for name, sides in t.SHAPES:
        d = _numbers(range(2, 13), sides, rng)
        out.append(Draft("shape", f"How many sides does a {name} have?", str(sides), tuple(d)))
    named = {n: f"{'an' if name[0] in 'aeiou' else 'a'} {name}" for name, n in t.SHAPES if n != 4}
    for sides, ans in named.items():
        out.append(Draft("shape", f"Which shape has exactly {sides} sides?", ans,
                         tuple(_pick(rng, named.values(), {ans}))))  # fmt: skip
    out += [Draft("shape", q, a, tuple(d)) for q, a, d in t.GEOMETRY]
    return out


def everyday(rng: random.Random) -> list[Draft]:
    return [Draft("everyday", q, a, tuple(d)) for q, a, d in t.EVERYDAY]


def color(rng: random.Random) -> list[Draft]:
    return [Draft("color", q, a, tuple(d)) for q, a, d in t.COLORS]


GENERATORS = (calendar, clock, antonym, category, odd_one_out, capital, animal, units, numbers, arithmetic,
              ordering, grammar, shape, everyday, color)  # fmt: skip


# ------------------------------------------------------------------------------------------------ assembly
def _options(choices: list[str]) -> str:
    return f"{', '.join(choices[:-1])} or {choices[-1]}"


def mc_items(seed: int = SEED) -> list[dict]:
    """All ``ss_mc`` items in their shipped order; each ``{question, choices[4], gold, category}``.

    Raises:
        ValueError: A question text repeats, or an item does not have four distinct choices.
    """
    rng = random.Random(seed)
    drafts, keys = [], set()
    for gen in GENERATORS:
        for d in gen(rng):
            if d.key() not in keys:  # the rare random repeat (same question, same choices) is dropped
                keys.add(d.key())
                drafts.append(d)
    rows, seen = [], set()
    for i, d in enumerate(spread(drafts, lambda d: d.category, seed)):
        if i % 4 == 0:
            positions = rng.sample(range(4), 4)  # each block of four uses every answer position once
        choices = rng.sample(d.distractors, 3)
        gold = positions[i % 4]
        choices.insert(gold, d.answer)
        question = d.question.replace(OPTIONS, _options(choices))
        if len(set(choices)) != 4 or len(d.distractors) != 3:
            raise ValueError(f"ss_mc: choices of {question!r} are not four distinct answers: {choices}")
        if question in seen:
            raise ValueError(f"ss_mc: duplicate question {question!r}")
        seen.add(question)
        rows.append({"question": question, "choices": choices, "gold": gold, "category": d.category})
    return rows
