"""Deployments: every YAML parses, configs are RunConfigs, prefect.yaml matches the flow, and the flow really runs
on a Dask task runner and from a process work pool (never two nightly runs at once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spectral_surgery.tasks.run_config import RunConfig
from tests import tiny

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = REPO / "deployments"
PREFECT_YAML = DEPLOYMENTS / "prefect.yaml"
CONFIGS = sorted((DEPLOYMENTS / "configs").glob("*.yaml"))
CRON, TIMEZONE = "0 2 * * *", "UTC"
# Which config file each prefect.yaml deployment copies (keys of the copy that the file leaves to the environment).
COPIES = {"nightly-refinement": ("nightly-cpu.yaml", ()),
          "nightly-refinement-gpu-k8s": ("nightly-gpu.yaml", ("registry_url",))}


def _prefect_yaml() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


def _deployments() -> list[dict]:
    return _prefect_yaml()["deployments"]


def _tiny_config(data_dir: Path, **kw) -> dict:
    """A RunConfig (as the JSON a deployment receives) for tiny adapters with the fake evaluator."""
    return {"data_dir": str(data_dir), "evaluator": "fake", "evaluator_options": {"n_docs": 40}, "task_limit": 40,
            "guard_limit": 40, "surgery": {"calib": {"n_samples": 4, "batch_size": 4}}, **kw}


def _tiny_fleet(base: Path, root: Path, n: int) -> Path:
    """``n`` tiny adapters registered (with their calibration file) in a fresh registry under ``root/data``."""
    from spectral_surgery.registry.repository import Registry

    calib = root / "calib.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    reg = Registry.open(None, root / "data")
    for i in range(n):
        ad = tiny.save_adapter(base, root / f"ad{i}", seed=i + 1)
        reg.register_adapter(f"ad{i}", str(ad), str(base), "math", config={"calib": str(calib)})
    reg.close()
    return root / "data"


# ------------------------------------------------------------------------------------------ files parse
@pytest.mark.parametrize("path", sorted(DEPLOYMENTS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(DEPLOYMENTS)))
def test_every_yaml_parses(path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_is_a_run_config(path):
    from spectral_surgery.tasks.evaluation.benchmarks import PROFILES, resolve_benchmark
    from spectral_surgery.tasks.evaluation.evaluate import EVALUATORS
    from spectral_surgery.tasks.surgery.policies import get_policy

    data = yaml.safe_load(path.read_text())
    cfg = RunConfig.model_validate(data)
    # values only, by registered name: no import paths, no machine-specific locations
    assert "data_dir" not in data and "registry_url" not in data
    assert all(get_policy(p).name == p for p in cfg.surgery.policies)
    assert cfg.evaluator in EVALUATORS
    for family in PROFILES[cfg.benchmark_profile]:
        resolve_benchmark(family, profile=cfg.benchmark_profile)


def test_configs_exist():
    assert {p.name for p in CONFIGS} >= {"nightly-cpu.yaml", "nightly-gpu.yaml"}


# ------------------------------------------------------------------------------------------ prefect.yaml
def test_prefect_yaml_matches_prefects_schema():
    from prefect.cli.deploy._models import PrefectYamlModel  # what `prefect deploy` validates the file with

    model = PrefectYamlModel.model_validate(_prefect_yaml())
    assert [d.name for d in model.deployments] == list(COPIES)
    for d in model.deployments:
        assert d.work_pool is not None and d.work_pool.name
    assert model.deployments[0].work_pool.name == "spectral-surgery-process"


@pytest.mark.parametrize("dep", _deployments(), ids=lambda d: d["name"])
def test_entrypoint_imports_and_parameters_fit_the_flow(dep, monkeypatch):
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    monkeypatch.chdir(REPO)  # entrypoints are relative to the repository root, as for `prefect deploy`
    flow = load_flow_from_entrypoint(dep["entrypoint"])
    assert flow.name == "nightly-refinement"
    schema = parameter_schema(flow).model_dump_for_openapi()
    validate(dep["parameters"], schema, raise_on_error=True)
    validated = flow.validate_parameters(dep["parameters"])
    assert isinstance(validated["config"], RunConfig)


@pytest.mark.parametrize("dep", _deployments(), ids=lambda d: d["name"])
def test_never_two_nightly_runs_at_once(dep):
    assert dep["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert [(s["cron"], s["timezone"]) for s in dep["schedules"]] == [(CRON, TIMEZONE)]


@pytest.mark.parametrize("dep", _deployments(), ids=lambda d: d["name"])
def test_parameters_equal_the_config_files(dep):
    name, extra = COPIES[dep["name"]]
    params = {k: v for k, v in dep["parameters"]["config"].items() if k not in extra}
    assert params == yaml.safe_load((DEPLOYMENTS / "configs" / name).read_text())


def test_serve_builds_the_same_deployment(monkeypatch):
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from spectral_surgery.deployments import serve

    monkeypatch.chdir(REPO)
    dep = _deployments()[0]
    built = serve.build_deployment()
    # the same deployment under its own name (both may live on one server: prefect.yaml's must not be replaced)
    assert built.name == serve.NAME == dep["name"] + "-served" and built.entrypoint == dep["entrypoint"]
    assert built.concurrency_limit == 1
    assert built.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
    assert [(s.schedule.cron, s.schedule.timezone) for s in built.schedules] == [(CRON, TIMEZONE)]
    assert built.parameters == dep["parameters"]
    assert sorted(built.tags) == sorted(dep["tags"])
    assert set(built._parameter_openapi_schema.model_dump()["properties"]) == {"config"}


def test_serve_main_serves_with_a_global_limit_of_one(monkeypatch):
    from spectral_surgery.flows.refine_fleet import nightly_refinement
    from spectral_surgery.deployments import serve

    calls = []
    monkeypatch.setattr(nightly_refinement, "serve", lambda **kw: calls.append(kw))
    assert serve.main(["--config", str(DEPLOYMENTS / "configs" / "nightly-gpu.yaml"), "--cron", "30 1 * * *"]) == 0
    (kw,) = calls
    assert kw["global_limit"].limit == 1 and kw["global_limit"].collision_strategy.value == "CANCEL_NEW"
    assert kw["limit"] == 1 and kw["name"] == "nightly-refinement-served"
    # its own name: a served process and prefect.yaml's work-pool deployment can live on one server side by side
    assert kw["name"] not in {d["name"] for d in _deployments()}
    assert kw["schedules"][0].cron == "30 1 * * *" and kw["schedules"][0].timezone == "UTC"
    assert kw["parameters"]["config"]["benchmark_profile"] == "paper"


def test_serve_rejects_a_bad_config(tmp_path, capsys):
    from spectral_surgery.deployments import serve

    bad = tmp_path / "bad.yaml"
    bad.write_text("surgery:\n  policies: [random_index]\n")
    assert serve.main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "random_index" in err


# ------------------------------------------------------------------------------------------ running it
def test_worker_threads_split_the_cores():
    from spectral_surgery.flows.refine_fleet import THREAD_VARS, worker_thread_env

    assert worker_thread_env(4, cpus=16) == {v: "4" for v in THREAD_VARS}
    assert worker_thread_env(3, cpus=16) == {v: "5" for v in THREAD_VARS}
    assert worker_thread_env(4, cpus=2) == {v: "1" for v in THREAD_VARS}  # never 0


def test_dask_task_runner_refines_every_adapter(prefect_harness, fresh_worker, tiny_base, tmp_path):
    from spectral_surgery.flows import worker
    from spectral_surgery.flows.refine_adapter import adapter_config_hash
    from spectral_surgery.flows.refine_fleet import run_nightly

    data = _tiny_fleet(tiny_base, tmp_path, 2)
    # the flow's default LocalCluster: two worker processes, each with its own base model and registry handle
    cfg = RunConfig.model_validate(_tiny_config(data, task_runner="dask", concurrency=2))
    assert cfg.dask_workers == "processes"
    out = run_nightly(cfg)
    assert out["refined"] == 2 and out["failed"] == 0, [r.get("error") for r in out["results"]]
    assert sorted(r["adapter"] for r in out["results"]) == ["ad0", "ad1"]
    # the two adapters were refined in two worker processes, neither of them this one
    pids = {int(r["worker"].rsplit(":", 1)[1]) for r in out["results"]}
    assert len(pids) == 2 and os.getpid() not in pids
    # the machine's cores split between the two workers (Dask alone would give each one thread)
    assert {r["worker_threads"] for r in out["results"]} == {max(1, (os.cpu_count() or 1) // 2)}
    reg = worker.registry(cfg)
    for name in ("ad0", "ad1"):
        version = reg.list_versions(name)[0]
        decision = reg.decision_of_run(version.id, adapter_config_hash(cfg, reg.get_adapter(name)))
        assert decision is not None and decision.sentence
        # three policies, the global scalar, three random seeds, the zero rebuild and the bare base (the ladder)
        assert len(reg.list_candidates(version.id)) == 9


@pytest.mark.slow
def test_process_work_pool_runs_prefect_yaml(prefect_harness, fresh_worker, tiny_base, tmp_path):
    """`prefect deploy` of prefect.yaml, then a process worker: one run refines, the overlapping one is cancelled."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.settings import get_current_settings

    from spectral_surgery.registry.repository import Registry

    data = _tiny_fleet(tiny_base, tmp_path, 1)
    dep = _deployments()[0]
    pool = dep["work_pool"]["name"]
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    env = {**os.environ, "PREFECT_API_URL": get_current_settings().api.url, "PREFECT_HOME": str(tmp_path / "ph"),
           "PYTHONPATH": str(REPO), "SPECTRAL_SURGERY_REPO": str(REPO), "SPECTRAL_SURGERY_HOME": str(tmp_path / "home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    deployed = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file",
         str(PREFECT_YAML.relative_to(REPO)),
         "--name", dep["name"]], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    # Prefect 3.8.8's CLI, after creating the deployment, lists the pool's workers with "limit": null, which the
    # server rejects under fastapi 0.154 (422 on /workers/filter): the deployment exists; only that check fails.
    out = deployed.stdout + deployed.stderr
    assert deployed.returncode == 0 or "workers/filter" in out, out[-3000:]
    with get_client(sync_client=True) as client:
        d = client.read_deployment_by_name(f"nightly-refinement/{dep['name']}")
        assert d.global_concurrency_limit.limit == 1
        assert d.concurrency_options.collision_strategy.value == "CANCEL_NEW"
        assert [(s.schedule.cron, s.schedule.timezone) for s in d.schedules] == [(CRON, TIMEZONE)]
        assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
        client.pause_deployment(d.id)  # no 02:00 run sneaks in; manual runs still go
    params = {"config": _tiny_config(data)}
    runs = [run_deployment(name=f"nightly-refinement/{dep['name']}", parameters=params, timeout=0) for _ in range(2)]
    worker = subprocess.run([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--run-once"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=500)
    assert worker.returncode == 0, (worker.stdout + worker.stderr)[-3000:]
    with get_client(sync_client=True) as client:
        states = sorted((client.read_flow_run(r.id).state for r in runs), key=lambda s: s.type.value)
    assert [s.type for s in states] == [StateType.CANCELLED, StateType.COMPLETED], states
    assert "concurrency limit" in states[0].message.lower()
    reg = Registry.open(None, data)
    assert [r.status for r in reg.adapter_runs(1)] == ["completed"]
    assert len(reg.list_candidates(reg.list_versions("ad0")[0].id)) == 9  # policies, scalar, 3 seeds, canaries
    reg.close()


class FlowClock:
    """An injected clock for the flow's process only: ``refine_one`` travels to a Dask worker by value, with the
    clock it reads (``refine_fleet.monotonic``), and there (another process) this one is the real clock."""

    def __init__(self) -> None:
        self.pid, self.now = os.getpid(), 0.0

    def __call__(self) -> float:
        import time

        return self.now if os.getpid() == self.pid else time.monotonic()


def test_dask_process_workers_stop_at_the_window_s_hard_stop(prefect_harness, fresh_worker, tiny_base, tmp_path,
                                                               monkeypatch):
    """The window's hard stop under Dask worker processes (issue 27 §1): two adapters in flight in two worker
    processes are released at their next checkpoint once ``wall_clock + grace`` passes (each worker holds at the
    ``editing`` stage, :mod:`flows.stage_hook`, and its hold's checkpoint meets the deadline by the worker's own
    clock), recorded deferred with nothing promoted and nothing left ``running``; the third is not started (the
    flow's clock, injected, says the night ran long); the run completes as under the thread runner."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from spectral_surgery.flows import refine_fleet, stage_hook, worker
    from spectral_surgery.registry import models as m
    from spectral_surgery.registry.night import run_plan

    data = _tiny_fleet(tiny_base, tmp_path, 3)
    window = {"wall_clock": "3s", "grace": "0s", "default_adapter_seconds": 1}
    cfg = RunConfig.model_validate(_tiny_config(data, task_runner="dask", concurrency=2, window=window))
    assert cfg.dask_workers == "processes"
    # the worker processes inherit the environment: each adapter holds at its first written candidate until the
    # hard stop (3 s after it started, by the worker's clock) releases it; never longer, whatever the machine
    monkeypatch.setenv(stage_hook.ENV_AT, "editing")
    clock = FlowClock()  # the flow's: the plan and both starts at 0 s; an adapter's end moves it past the window
    monkeypatch.setattr(refine_fleet, "monotonic", clock)
    result = refine_fleet._result

    def finished(future) -> dict:
        out = result(future)
        clock.now += 100.0
        return out

    monkeypatch.setattr(refine_fleet, "_result", finished)
    out = refine_fleet.run_nightly(cfg)
    res = {r["adapter"]: r for r in out["results"]}
    assert (out["completed"], out["failed"], out["deferred"]) == (0, 0, 3), res
    assert [r["action"] for r in out["plan"]] == ["start", "start", "start"]  # all fitted; the night ran long
    for name in ("ad0", "ad1"):  # released in a worker process, not this one
        assert res[name]["released"] and "window ended" in res[name]["reason"], res[name]
        assert int(res[name]["worker"].rsplit(":", 1)[1]) != os.getpid()
    assert "the night ran long" in res["ad2"]["reason"] and "not started" in res["ad2"]["reason"]
    reg = worker.registry(cfg)
    assert reg.get_run(out["run_id"]).status == "completed"
    assert {r.adapter: r.status for r in run_plan(reg, out["run_id"])} == {n: "deferred" for n in ("ad0", "ad1",
                                                                                                   "ad2")}
    with Session(reg.engine) as s:
        assert not s.scalars(select(m.AdapterRun).where(m.AdapterRun.status.in_(("pending", "running")))).all()
        assert s.scalar(select(m.Decision.id).limit(1)) is None  # nothing decided, so nothing promoted
    assert all(reg.production(n).candidate_id is None for n in ("ad0", "ad1", "ad2"))
    # in Prefect, each released adapter's task run (in its worker process) ends in the named state, not Crashed
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
            any_=[reg.get_run(out["run_id"]).flow_run_id])), task_run_filter=TaskRunFilter(name=TaskRunFilterName(
                any_=["refine-ad0", "refine-ad1"])))
        states = sorted((r.name, r.state.type.value, r.state.name, r.state.message) for r in runs)
    assert [s[:3] for s in states] == [("refine-ad0", "COMPLETED", "Released"),
                                       ("refine-ad1", "COMPLETED", "Released")], states
    assert all("released by the window: the night's window ended" in s[3] for s in states), states
