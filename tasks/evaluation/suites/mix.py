"""Document order of the offline suites: every prefix is a representative mix of templates / categories.

lm-eval's ``limit=N`` evaluates the first N documents of the test split, and the nightly run evaluates
``limit`` documents per benchmark. Rows are therefore not written grouped by template (the order they are
generated in) but spread: each group's rows, in a seeded random order, are placed at evenly spaced
fractional positions ``(i + u) / len(group)`` (``u`` uniform in ``[0, 1)``), and all rows are sorted by
that position. A group of ``k`` rows out of ``n`` then has about ``N * k / n`` (within one or two) rows in
any prefix of ``N``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


def spread(rows: list[T], group: Callable[[T], Hashable], seed: int) -> list[T]:
    """``rows`` reordered so that every prefix holds each group in proportion to its share of the whole.

    Args:
        rows: The rows, in any order.
        group: The group (template, category) of a row.
        seed: Seed of the ``random.Random`` that orders rows within a group and breaks ties between groups.

    Returns:
        A new list with the same rows; the same inputs always give the same order.
    """
    rng = random.Random(seed)
    groups: dict[Hashable, list[T]] = {}
    for r in rows:
        groups.setdefault(group(r), []).append(r)
    keyed = []
    for g in sorted(groups, key=str):  # sorted: the order does not depend on which group came first
        members = groups[g]
        rng.shuffle(members)
        keyed += [((i + rng.random()) / len(members), len(keyed), r) for i, r in enumerate(members)]
    return [r for _, _, r in sorted(keyed, key=lambda t: (t[0], t[1]))]
