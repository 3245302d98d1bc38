"""The operator's corpus of bad inputs (issue 13 §7), through the real command line in-process.

Each case says how the bad input is made, the command that meets it, the exit code, the fragments that name the
file and the field, and the fragment that says how to fix it. ``register`` (and ``run``'s option parsing, and
``edit``) refuse at the door what can be checked without a model pass; what only fails at run time goes through
one ``spectral-surgery run --evaluator fake`` with a good adapter beside the bad ones: the failure is recorded in
the registry, the good adapter completes, and the console shows one line per failure and no traceback.

:func:`test_corpus_figures` computes the figures in docs/operations.md: cases, clear (the message names the file or
field and says how to fix it), recorded (run-time failures found in the registry), crashes (tracebacks).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from spectral_surgery.flows import worker
from tests import tiny
from tests.flows.cli_support import Result, cli

WF, CF = "adapter_model.safetensors", "adapter_config.json"
O_PROJ_A = "base_model.model.model.layers.1.self_attn.o_proj.lora_A.weight"
O_PROJ_B = "base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight"
RESAVE = "save_pretrained"  # the fix of a damaged adapter: save it again with PEFT


@dataclass(frozen=True)
class Case:
    """One bad input: ``make(env, dir)`` builds it in ``dir`` and returns the command lines (the last is the one
    judged, the others must succeed); ``names`` are the file / field fragments; ``fix`` says how to fix it."""

    id: str
    category: str  # weights, config, calibration, names and paths, sources, YAML and CLI values
    make: Callable[[SimpleNamespace, Path], list[list]]
    names: tuple[str, ...]
    fix: str
    code: int = 2


RESULTS: dict[str, dict] = {}  # case id -> {"clear", "crash", "recorded"}: the figures


# ------------------------------------------------------------------------------------------------ bad inputs
def _copy(env, d: Path, name: str = "bad") -> Path:
    return Path(shutil.copytree(env.good, d / name))


def _config(p: Path, **kw) -> Path:
    cfg = json.loads((p / CF).read_text())
    for k, v in kw.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (p / CF).write_text(json.dumps(cfg))
    return p


def _tensors(p: Path, fn) -> Path:
    t = load_file(p / WF)
    fn(t)
    save_file(t, p / WF)
    return p


def _put(key, value):
    return lambda t: t.__setitem__(key, value)


def _register(env, source, *extra, name: str = "x") -> list:
    return ["register", name, "--source", source, "--base", env.base, "--family", "math", *extra]


def _weights(fn) -> Callable:
    """A register case on a copy of the good adapter, damaged by ``fn(path)``."""
    def make(env, d):
        p = _copy(env, d)
        fn(p)
        return [_register(env, p)]
    return make


def _calib(text: str, *, name: str = "c.jsonl") -> Callable:
    def make(env, d):
        (d / name).write_text(text)
        return [_register(env, env.good, "--calib", d / name)]
    return make


def _run_with(*options, config: str | None = None) -> Callable:
    """``run`` with bad options (or a bad --config file): refused before any work starts."""
    def make(env, d):
        extra = []
        if config is not None:
            (d / "run.yaml").write_text(config)
            extra = ["--config", d / "run.yaml"]
        return [["run", "--evaluator", "fake", *extra, *options]]
    return make


def _truncate(p: Path) -> None:
    (p / WF).write_bytes((p / WF).read_bytes()[:-100])


def _pickle(p: Path) -> None:
    torch.save(load_file(p / WF), p / "adapter_model.bin")
    (p / WF).unlink()


def _edit(env, adapter, *extra) -> list:
    return ["edit", "--adapter", adapter, "--out", env.root / "edit-out", *extra]


GOOD_ROW = json.dumps(tiny.calib_rows(1)[0])

CASES = [
    # -------------------------------------------------------------------------------------------- weights
    Case("garbage-weights", "weights", _weights(lambda p: (p / WF).write_bytes(b"\x00\x01 not safetensors")),
         (WF, "<safetensors>"), RESAVE),
    Case("truncated-weights", "weights", _weights(_truncate), (WF, "<safetensors>"), RESAVE),
    Case("empty-weights", "weights", _weights(lambda p: (p / WF).write_bytes(b"")), (WF, "<safetensors>"), RESAVE),
    Case("no-weights-file", "weights", _weights(lambda p: (p / WF).unlink()), (WF,), RESAVE),
    Case("nan-weights", "weights",
         _weights(lambda p: _tensors(p, lambda t: t[O_PROJ_B].__setitem__((0, 0), float("nan")))),
         (WF, O_PROJ_B, "NaN"), "checkpoint"),
    Case("inf-weights", "weights",
         _weights(lambda p: _tensors(p, lambda t: t[O_PROJ_A].__setitem__((1, 2), float("-inf")))),
         (WF, O_PROJ_A, "Inf"), "checkpoint"),
    Case("missing-lora-B", "weights", _weights(lambda p: _tensors(p, lambda t: t.pop(O_PROJ_B))),
         (WF, O_PROJ_A, "lora_B"), RESAVE),
    Case("missing-lora-A", "weights", _weights(lambda p: _tensors(p, lambda t: t.pop(O_PROJ_A))),
         (WF, O_PROJ_B, "lora_A"), RESAVE),
    Case("A-rank-differs", "weights", _weights(lambda p: _tensors(p, _put(O_PROJ_A, torch.ones(3, 32)))),
         (WF, O_PROJ_A, "r=4"), "set r"),
    Case("A-not-2d", "weights", _weights(lambda p: _tensors(p, _put(O_PROJ_A, torch.ones(4, 32, 1)))),
         (WF, O_PROJ_A, "2-D"), "Linear"),
    Case("dora-magnitude", "weights",
         _weights(lambda p: _tensors(p,
                                     _put(O_PROJ_A.replace("lora_A.weight", "lora_magnitude_vector"), torch.ones(32)))),
         (WF, "lora_magnitude_vector", "DoRA"), "use_dora=False"),
    Case("no-lora-pairs", "weights",
         _weights(lambda p: _tensors(p, lambda t: [t.pop(k) for k in list(t) if "lora_" in k])),
         (WF, "lora_A"), RESAVE),
    Case("pickle-weights", "weights", _weights(_pickle), ("adapter_model.bin", "allow_pickle"),
         "convert to safetensors"),
    # --------------------------------------------------------------------------------------------- config
    Case("no-config", "config", _weights(lambda p: (p / CF).unlink()), (CF,), RESAVE),
    Case("invalid-json-config", "config", _weights(lambda p: (p / CF).write_text('{"r": 4,')), (CF, "<json>"), RESAVE),
    Case("config-not-object", "config", _weights(lambda p: (p / CF).write_text("[1, 2]")), (CF, "<json>"), RESAVE),
    Case("dora-config", "config", _weights(lambda p: _config(p, use_dora=True)), (CF, "use_dora"), "use_dora=False"),
    Case("not-lora", "config", _weights(lambda p: _config(p, peft_type="IA3")), (CF, "peft_type"), "LoRA adapter"),
    Case("rank-zero", "config", _weights(lambda p: _config(p, r=0)), (CF, "'r'"), "set r"),
    Case("no-rank", "config", _weights(lambda p: _config(p, r=None)), (CF, "'r'"), "set r"),
    Case("alpha-text", "config", _weights(lambda p: _config(p, lora_alpha="eight")), (CF, "lora_alpha"),
         "set lora_alpha"),
    Case("rank-pattern-list", "config", _weights(lambda p: _config(p, rank_pattern=[4])), (CF, "rank_pattern"),
         "mapping"),
    # ----------------------------------------------------------------------------------------- calibration
    Case("calib-missing", "calibration", lambda env, d: [_register(env, env.good, "--calib", d / "missing.jsonl")],
         ("config.calib", "missing.jsonl"), "give an existing", code=2),
    Case("calib-empty", "calibration", _calib(""), ("--calib", "c.jsonl"), "add"),
    Case("calib-bad-json", "calibration", _calib(GOOD_ROW + "\n{not json\n"), ("c.jsonl", "line 2"),
         "JSON object per line"),
    Case("calib-missing-answer", "calibration", _calib(json.dumps({"prompt": "2+2?"}) + "\n"),
         ("c.jsonl", "line 1", "'answer'"), "prompt"),
    Case("calib-not-object", "calibration", _calib("[1, 2]\n"), ("c.jsonl", "line 1"), "JSON object per line"),
    Case("calib-loader-typo", "calibration", lambda env, d: [_register(env, env.good, "--calib", "gsm8kk")],
         ("config.calib", "gsm8kk"), "Did you mean 'gsm8k'?"),
    Case("edit-calib-missing", "calibration", lambda env, d: [_edit(env, env.good, "--base", env.base, "--calib",
                                                                    d / "nope.jsonl", "--policy", "smooth_abs")],
         ("nope.jsonl",), "give an existing", code=2),
    # ------------------------------------------------------------------------------------- names and paths
    Case("name-with-space", "names and paths", lambda env, d: [_register(env, env.good, name="no spaces")],
         ("name", "'no spaces'"), "letters"),
    Case("source-missing", "names and paths", lambda env, d: [_register(env, d / "gone")], ("--source", "gone"),
         "give hf://", code=3),
    Case("source-is-a-file", "names and paths", lambda env, d: [_register(env, env.good / WF)], ("--source", WF),
         "adapter directory"),
    Case("base-missing-dir", "names and paths", lambda env, d: [["register", "x", "--source", env.good, "--base",
                                                                 d / "no-base", "--family", "math"]],
         ("--base", "no-base"), "model directory"),
    Case("base-no-config", "names and paths", lambda env, d: [["register", "x", "--source", env.good, "--base", d,
                                                               "--family", "math"]], ("--base", "config.json"),
         "model directory"),
    Case("base-gguf-missing", "names and paths", lambda env, d: [["register", "x", "--source", env.good, "--base",
                                                                  d / "m.Q4.gguf", "--family", "math"]],
         ("--base", "m.Q4.gguf"), "GGUF"),
    Case("base-not-cached", "names and paths", lambda env, d: [["register", "x", "--source", env.good, "--base",
                                                                "acme/never-downloaded", "--family", "math"]],
         ("--base", "acme/never-downloaded"), "hf download"),
    Case("family-typo", "names and paths", lambda env, d: [["register", "x", "--source", env.good, "--base",
                                                            env.base, "--family", "mth"]],
         ("task_family", "'mth'"), "Did you mean 'math'?"),
    Case("benchmark-typo", "names and paths", lambda env, d: [_register(env, env.good, "--benchmark", "ss_arth")],
         ("benchmark_override", "'ss_arth'"), "Did you mean 'ss_arith'?"),
    Case("history-unknown-adapter", "names and paths", lambda env, d: [_register(env, env.good, name="ad0"),
                                                                       ["history", "ad00"]],
         ("'ad00'",), "did you mean 'ad0'?", code=3),
    # --------------------------------------------------------------------------------------------- sources
    Case("hf-no-org", "sources", lambda env, d: [_register(env, "hf://just-a-name")], ("hf://just-a-name",),
         "expected hf://<org>/<name>"),
    Case("unknown-scheme", "sources", lambda env, d: [_register(env, "s3://bucket/adapter")], ("s3://bucket/adapter",),
         "hf://"),
    Case("edit-adapter-missing", "sources", lambda env, d: [_edit(env, d / "nope", "--policy", "hns")],
         ("nope", "path"), "existing adapter directory"),
    # -------------------------------------------------------------------------------------- YAML and CLI values
    Case("run-config-missing", "YAML and CLI values", _run_with("--config", "/nonexistent/run.yaml"),
         ("run.yaml",), "give", code=3),
    Case("run-config-bad-yaml", "YAML and CLI values", _run_with(config="surgery: [unclosed\n"), ("run.yaml",),
         "YAML"),
    Case("run-config-unknown-key", "YAML and CLI values", _run_with(config="concurrancy: 2\n"),
         ("run.yaml", "concurrancy"), "Did you mean 'concurrency'?"),
    Case("run-config-wrong-type", "YAML and CLI values", _run_with(config="concurrency: many\n"),
         ("run.yaml", "concurrency"), "integer"),
    Case("run-config-not-mapping", "YAML and CLI values", _run_with(config="- 1\n- 2\n"), ("run.yaml",), "mapping"),
    Case("run-policy-typo", "YAML and CLI values", _run_with("--policy", "smooth_ab"), ("'smooth_ab'",),
         "Did you mean 'smooth_abs'?"),
    Case("run-evaluator-typo", "YAML and CLI values", _run_with("--evaluator", "lm_evl"), ("evaluator", "'lm_evl'"),
         "Did you mean 'lm_eval'?"),
    Case("run-evaluator-option", "YAML and CLI values", _run_with("--evaluator-option", "n_docs"),
         ("--evaluator-option", "n_docs"), "KEY=VALUE"),
    Case("run-concurrency-zero", "YAML and CLI values", _run_with("--concurrency", "0"), ("--concurrency",),
         "give a whole number from 1 to 256"),
    Case("run-limit-text", "YAML and CLI values", _run_with("--task-limit", "lots"), ("--task-limit", "'lots'"),
         "give a whole number of at least 1"),
    Case("edit-set-typo", "YAML and CLI values", lambda env, d: [_edit(env, env.good, "--policy", "hns", "--set",
                                                                       "preserve_enrgy=l2")],
         ("preserve_enrgy",), "Did you mean 'preserve_energy'?"),
]


@pytest.fixture(scope="module")
def env(fleet_base, tmp_path_factory):
    """The tiny base and one good adapter; each case copies what it damages."""
    root = tmp_path_factory.mktemp("corpus")
    good = tiny.save_adapter(fleet_base, root / "good", seed=3)
    return SimpleNamespace(root=root, base=fleet_base, good=good)


def _judge(case_id: str, r: Result, names: tuple[str, ...], fix: str, code: int, *, recorded: bool | None = None):
    """Record the figures of one case, then assert it: exit code, one ``error:`` line (or the run's failure line),
    the file/field fragments and the fix, no traceback."""
    text = r.err
    crash = "Traceback" in text or "Traceback" in r.out
    clear = all(n in text for n in names) and fix in text
    RESULTS[case_id] = {"clear": clear, "crash": crash, "recorded": recorded}
    assert not r.exited and r.code == code, (r.code, r.out, r.err)
    assert not crash, text
    for n in (*names, fix):
        assert n in text, (n, text)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_file_field_and_fix(case: Case, env, tmp_path):
    data = tmp_path / "home"
    assert cli("init", "--data-dir", data).code == 0
    argvs = case.make(env, tmp_path)
    for argv in argvs[:-1]:
        r = cli(*argv, "--data-dir", data)
        assert r.code == 0, r.err
    before = cli("list", "--json", "--data-dir", data).json()
    r = cli(*argvs[-1], "--data-dir", data)
    lines = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and r.out == "", (r.out, r.err)  # one line, nothing on stdout
    _judge(case.id, r, case.names, case.fix, case.code)
    assert cli("list", "--json", "--data-dir", data).json() == before  # nothing was registered


# ------------------------------------------------------------------------------------- found only at run time
def _registered(env, d: Path, name: str, *extra, damage=None, before=None) -> Callable:
    """Copy the good adapter to ``d/name``; ``before(p)`` damages it before ``register`` (which then needs
    ``--no-check``), ``damage(p)`` after."""
    def make(data: Path) -> None:
        p = _copy(env, d, name)
        if before:
            before(p)
        r = cli("register", name, "--source", p, "--base", env.base, "--family", "math", *extra, "--data-dir", data)
        assert r.code == 0, r.err
        if damage:
            damage(p)
    return make


def _own_calib(d: Path, name: str, then: Callable[[Path], None]) -> tuple[list, Callable]:
    path = d / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    return ["--calib", path], lambda p: then(path)


@dataclass(frozen=True)
class RunCase:
    """A bad input the door cannot see (or was told not to look at: ``--no-check``); ``at_scan``: recorded on the
    adapter (its source could not be read), else as a failed adapter run."""

    id: str
    category: str
    names: tuple[str, ...]
    fix: str
    at_scan: bool = False


RUN_CASES = [
    RunCase("run-corrupt-weights-no-check", "weights", (WF, "<safetensors>"), RESAVE),
    RunCase("run-nan-after-register", "weights", (WF, O_PROJ_B, "NaN"), "checkpoint"),
    RunCase("run-source-removed", "sources", ("source_uri", "run-source-removed"), "--source", at_scan=True),
    RunCase("run-calib-emptied", "calibration", ("run-calib-emptied.jsonl",), "add rows"),
    RunCase("run-calib-bad-row", "calibration", ("run-calib-bad-row.jsonl", "line 9"), "JSON object per line"),
    RunCase("run-other-base-shapes", "names and paths", (WF, "_features", "!="), "register it on the base model"),
]


def _night_fleet(env, d: Path, data: Path) -> None:
    """Register the good adapter and one adapter per :data:`RUN_CASES`, damaged after (or unchecked at) the door."""
    def nan(p):
        _tensors(p, lambda t: t[O_PROJ_B].__setitem__((0, 0), float("nan")))

    empty_args, empty = _own_calib(d, "run-calib-emptied", lambda c: c.write_text(""))
    bad_args, bad_row = _own_calib(d, "run-calib-bad-row", lambda c: c.write_text(c.read_text() + "{oops\n"))
    wide = tiny.save_base(d / "wide-base", hidden=48)  # an adapter trained on another base: the shapes differ
    makes = {
        "run-corrupt-weights-no-check": _registered(env, d, "run-corrupt-weights-no-check", "--no-check",
                                                    before=lambda p: (p / WF).write_bytes(b"\x00 not safetensors")),
        "run-nan-after-register": _registered(env, d, "run-nan-after-register", damage=nan),
        "run-source-removed": _registered(env, d, "run-source-removed", damage=shutil.rmtree),
        "run-calib-emptied": _registered(env, d, "run-calib-emptied", *empty_args, damage=empty),
        "run-calib-bad-row": _registered(env, d, "run-calib-bad-row", *bad_args, damage=bad_row),
    }
    for make in makes.values():
        make(data)
    other = tiny.save_adapter(wide, d / "run-other-base-shapes", seed=4)
    r = cli("register", "run-other-base-shapes", "--source", other, "--base", env.base, "--family", "math",
            "--data-dir", data)
    assert r.code == 2 and "do not fit the base" in r.err, r.err  # the door reads the base's shapes now
    r = cli("register", "run-other-base-shapes", "--source", other, "--base", env.base, "--family", "math",
            "--no-check", "--data-dir", data)
    assert r.code == 0, r.err  # told not to look: the night finds it
    assert cli("register", "good", "--source", env.good, "--base", env.base, "--family", "math",
               "--data-dir", data).code == 0


@pytest.fixture(scope="module")
def night(prefect_harness, env, tmp_path_factory):
    """One ``spectral-surgery run --evaluator fake`` over the good adapter and every run-time bad input."""
    from prefect.settings import PREFECT_API_URL

    from spectral_surgery.registry.repository import Registry

    worker.reset()
    d = tmp_path_factory.mktemp("night")
    data = d / "home"
    assert cli("init", "--data-dir", data).code == 0
    calib = d / "calib.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    _night_fleet(env, d, data)
    # in a process of its own, as an operator runs it (in this one, the test harness set Prefect's logging up)
    p = subprocess.run([sys.executable, "-m", "spectral_surgery.flows.cli", "run", "--evaluator", "fake",
                        "--task-limit", "20",
                        "--guard-limit", "20", "--n-samples", "4", "--policy", "smooth_abs", "--calib", str(calib),
                        "--json", "--data-dir", str(data)], capture_output=True, text=True, timeout=600, check=False,
                       cwd=Path(__file__).resolve().parents[2],
                       env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "250"})
    r = Result(p.returncode, p.stdout, p.stderr)
    reg = Registry.open(None, data)
    yield SimpleNamespace(r=r, reg=reg, summary=json.loads(r.out) if r.out.strip() else None)
    reg.close()
    worker.reset()


@pytest.mark.slow  # one nightly run through Prefect over seven adapters (about 40 s)
@pytest.mark.parametrize("case", RUN_CASES, ids=[c.id for c in RUN_CASES])
def test_run_time_failure_is_recorded_in_one_line(case: RunCase, night):
    r, reg = night.r, night.reg
    assert night.summary is not None, r.err
    by_name = {x["adapter"]: x for x in night.summary["results"]}
    assert by_name["good"]["status"] == "completed"  # the rest of the fleet went on
    assert by_name[case.id]["status"] == "failed"
    if case.at_scan:
        recorded = reg.get_adapter(case.id).fetch_error or ""
        shown = Result(r.code, r.out, by_name[case.id]["error"])
    else:
        (arun,) = [a for a in reg.adapter_runs(night.summary["run_id"])
                   if reg.get_version(a.adapter_version_id).adapter.name == case.id]
        recorded = arun.error_message if arun.status == "failed" else ""
        lines = [line for line in r.err.splitlines() if line.startswith(f"✗ {case.id} failed:")]
        assert len(lines) == 1, r.err  # one line on the console (rich folds it at the terminal's width)
        # judged on the exception's line of the recorded traceback: what that console line prints, unfolded
        shown = Result(r.code, r.out, recorded.strip().splitlines()[-1] if recorded else "")
        assert "Traceback" not in lines[0]
    assert recorded and all(n in recorded for n in case.names), recorded
    _judge(case.id, shown, case.names, case.fix, 1, recorded=bool(recorded))
    assert "Traceback" not in r.err


def test_corpus_figures():
    """The figures in docs/operations.md, from the cases that ran in this session (all of them when the file runs
    whole)."""
    every = [c.id for c in CASES] + [c.id for c in RUN_CASES]
    if set(RESULTS) != set(every):
        pytest.skip(f"figures need the whole file: {len(RESULTS)} of {len(every)} cases ran")
    figures = {"cases": len(RESULTS), "clear": sum(v["clear"] for v in RESULTS.values()),
               "recorded": sum(bool(v["recorded"]) for v in RESULTS.values()),
               "crashes": sum(v["crash"] for v in RESULTS.values())}
    categories = {c.category for c in CASES} | {c.category for c in RUN_CASES}
    print(f"\nbad-input corpus: {figures} over {len(categories)} categories")
    assert figures == {"cases": len(every), "clear": len(every), "recorded": len(RUN_CASES), "crashes": 0}
    assert len(CASES) + len(RUN_CASES) >= 40 and len(categories) == 6
