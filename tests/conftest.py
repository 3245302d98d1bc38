"""Shared fixtures: offline mode, a tiny random base model on disk and tiny PEFT adapters, the session's Prefect
test server and the bundled SmolLM2 converted once.

Session-scoped fixtures are built once per test process: once per run, or once per pytest-xdist worker (the
README's command runs the suite on every CPU through ``-n logical`` in pyproject.toml; ``-p no:xdist`` or ``-n 0``
runs it in one process).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The command lines the tests start stop their Prefect server at exit (no server shared across runs, left idling in
# a test's temporary Prefect home): tests/flows/test_shared_server.py turns sharing on where it is under test.
os.environ.setdefault("SPECTRAL_SURGERY_PREFECT_IDLE", "0")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # A pytest-xdist worker: torch (and the command lines the tests start) get an equal share of the CPUs, not one
    # thread per CPU in every worker (oversubscribed OpenMP threads spin and wait on each other).
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import pytest
import torch

from tests import tiny


# pytest-xdist (``-n logical --dist loadscope`` in pyproject.toml) runs each test file whole on one worker, so that
# its module-scoped fixtures are built once. The files of one group below share a session fixture that is expensive
# to build (the SmolLM2 conversion, the MLflow server): a group runs on one worker, so the fixture is built once per
# run, not once per worker. (``xdist_group`` marks would say this per test, but pytest-xdist 3.8 cannot apply them
# under pytest 9, whose node ids it can no longer rename.)
SHARED_FILES = {
    # the demo's smoke test starts from a copy of the conversion (a user's second run; its own would be ~25 s more)
    "smol": ("tests/tasks/test_model.py", "tests/tasks/evaluation/arms/test_generation.py",
             "tests/tasks/decision/test_continuous.py", "tests/flows/test_demo.py"),
    "mlflow": ("tests/flows/test_mlflow_follow.py", "tests/flows/test_mlflow_client.py"),
    # dashboard_support's registries (two real nightly runs; 200 adapters x 30 nights), memoised per process: on one
    # worker they are built once, not once in each worker that gets one of these files. (Not shared across workers on
    # disk: test_dashboard reads the flow's Prefect artifacts from the worker's own Prefect test server.)
    "dashboard": ("tests/flows/test_dashboard.py", "tests/flows/test_dashboard_serve.py",
                  "tests/flows/test_dashboard_browser.py"),
}
GROUP_OF = {path: group for group, paths in SHARED_FILES.items() for path in paths}
# The longest files (or groups) go to the workers first, longest first, the rest in collection order: a long file
# that started last would leave the other workers idle at the end of the run.
LONGEST_FIRST = ("smol", "tests/flows/test_interrupt.py", "tests/flows/test_nightly.py")


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: without pytest-xdist it is never called
def pytest_xdist_make_scheduler(config, log):
    """Whole files (or the groups above) to the workers, the longest first."""
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return GROUP_OF.get(path, path)

        def _assign_work_unit(self, node) -> None:
            longest = next((scope for scope in LONGEST_FIRST if scope in self.workqueue), None)
            if longest is not None:
                self.workqueue.move_to_end(longest, last=False)
            super()._assign_work_unit(node)

    config.option.loadscopereorder = False  # xdist would order the files by their number of tests
    return FileScheduling(config, log)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _logging_enabled():
    """Every test starts with logging on and unfiltered: a command stopped in this process turns library logging off
    for the rest of its process (:func:`flows.cli.run._on_stop`), and a quiet ``run``/``demo`` leaves its terminal
    filter on the handlers it found (pytest's capture handler among them), both meant for a process that exits;
    under pytest-xdist the tests after them in the same worker would otherwise miss log records."""
    import logging
    import sys

    logging.disable(logging.NOTSET)
    runlog = sys.modules.get("spectral_surgery.flows.cli.runlog")
    if runlog is not None:  # a quiet command's terminal filter stays on the handlers it found (pytest's own too)
        for handler in logging.getLogger().handlers:
            handler.removeFilter(runlog.ONLY_OWN)
    yield


@pytest.fixture
def code_sandbox(monkeypatch):
    """For tests that run honest generated code (HumanEval's canonical solutions): bubblewrap where it works, else
    the opted-in python-guard, so they pass on a machine without bubblewrap (the refusal itself is tested in
    tests/tasks/evaluation/test_sandbox.py)."""
    from spectral_surgery.tasks.evaluation.sandbox import ENV_SANDBOX, bwrap_problem

    if bwrap_problem() is not None:
        monkeypatch.setenv(ENV_SANDBOX, "python-guard")


@pytest.fixture
def fresh_worker():
    """The worker's cached registries and evaluators forgotten before and after the test (:func:`flows.worker.reset`):
    no registry or evaluator of one test reaches the next. Opt in per file with
    ``pytestmark = pytest.mark.usefixtures("fresh_worker")`` (not autouse: files whose tests share a warm worker
    cache leave it out)."""
    from spectral_surgery.flows import worker

    worker.reset()
    yield
    worker.reset()


@pytest.fixture(scope="module")
def fresh_worker_module():
    """As :func:`fresh_worker`, once around a whole file: for files whose tests share one module-scoped fleet and
    registry (``pytestmark = pytest.mark.usefixtures("fresh_worker_module")``)."""
    from spectral_surgery.flows import worker

    worker.reset()
    yield
    worker.reset()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """Path of a saved tiny Llama model + tokenizer (2 layers, hidden 32)."""
    return tiny.save_base(tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture(scope="session")
def tiny_adapter(tiny_base, tmp_path_factory):
    """Path of a PEFT LoRA adapter (r=4, alpha=8, all seven projections) on ``tiny_base``."""
    return tiny.save_adapter(tiny_base, tmp_path_factory.mktemp("tiny_adapter"))


@pytest.fixture(scope="session")
def calib_file(tmp_path_factory):
    """A JSONL calibration file with 8 prompt/answer rows."""
    p = tmp_path_factory.mktemp("calib") / "calib.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    return p


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API for the whole session, shared by tests/flows and tests/deployments (one server per
    test process: starting one takes seconds, and an idle one still burns CPU on its background services)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=600):
        yield


@pytest.fixture(scope="session")
def prefect_home_template(tmp_path_factory):
    """A Prefect home whose (empty) database is migrated already, built once per test process.

    A command line started without ``PREFECT_API_URL`` starts Prefect's temporary server, which migrates a fresh
    ``$PREFECT_HOME/prefect.db`` first: about half the server's start-up CPU (5 of 10 s measured). Tests whose
    subject is not a first run give the command a copy of this home (``shutil.copytree``), as a user's second run
    finds it (the demo's smoke test too); the tests of a fresh home (tests/flows/test_prefect_home.py, test_prescan.py)
    keep theirs.
    """
    import asyncio

    from prefect.server.database import provide_database_interface
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect_home_template")

    async def migrate() -> None:
        db = provide_database_interface()
        await db.create_db()  # Prefect's own migrations, as its server runs them at start-up
        await (await db.engine()).dispose()  # no connection outlives this event loop

    with temporary_settings({PREFECT_API_DATABASE_CONNECTION_URL: f"sqlite+aiosqlite:///{home / 'prefect.db'}"}):
        asyncio.run(migrate())
    return home


@pytest.fixture(scope="session")
def smol_base(tmp_path_factory):
    """The bundled SmolLM2-135M-Instruct converted once per session: ``(data_dir, model dir)``.

    Conversion from the GGUF takes about 20 s (more on a busy machine); the real-model tests share it, and the demo's
    smoke test (tests/flows/test_demo.py) gives its ``demo`` a copy. The tests that alter the cache
    (tests/tasks/test_model.py) put back what they changed.
    """
    from tests.smol import bundled_base_dir

    data_dir = tmp_path_factory.mktemp("smol") / "data"
    return data_dir, bundled_base_dir(data_dir)


from tests.pg import pg_server, pg_url  # noqa: E402,F401  (fixtures shared by tests/registry and tests/flows)
