"""Tests for tasks/delivery/export_watch.py: the polling loop of ``export DIR --watch`` on real adapters and a real
export."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from spectral_surgery.tasks.adapter_io import adapter_content_sha256
from spectral_surgery.tasks.delivery.export import MANIFEST, ExportItem
from spectral_surgery.tasks.delivery.export_watch import WatchState, item_key, watch, watch_tick
from tests import tiny


@pytest.fixture(scope="module")
def adapters(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("watch_src")
    return [tiny.save_adapter(tiny_base, root / f"p{i}", seed=i + 1, r=2 + i) for i in range(3)]


def item(name: str, path: Path | None, policy: str = "smooth_abs") -> ExportItem:
    sha = adapter_content_sha256(path) if path is not None else None
    return ExportItem(name, path, sha, {"policy": policy, "decision_id": 1})


class Recorder:
    """The report/warn callbacks: what the watcher said, in order."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str | None]] = []
        self.warnings: list[str] = []

    def report(self, outcome, item) -> None:
        self.lines.append((outcome.name, outcome.status, outcome.reason))

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


def tick(read, out, state, rec, **kw):
    return watch_tick(read, out, state, report=rec.report, warn=rec.warn, transient=(sqlite3.Error, OSError), **kw)


def test_only_what_changed_is_exported_again(adapters, tmp_path):
    out, rec, state = tmp_path / "serve", Recorder(), WatchState({}, {})
    current = {"a": item("a", adapters[0]), "b": item("b", adapters[1]), "c": item("c", None)}

    def read():
        return list(current.values())

    assert [o.status for o in tick(read, out, state, rec)] == ["exported", "exported", "skipped"]
    assert rec.lines == [("a", "exported", None), ("b", "exported", None)]
    manifest_mtime = (out / MANIFEST).stat().st_mtime_ns
    assert tick(read, out, state, rec) == []  # nothing changed: nothing read, nothing written
    assert (out / MANIFEST).stat().st_mtime_ns == manifest_mtime
    current["a"] = item("a", adapters[2], "abs_select")
    (o,) = tick(read, out, state, rec)
    assert (o.name, o.status) == ("a", "switched")
    assert adapter_content_sha256(out / "a") == adapter_content_sha256(adapters[2])
    assert rec.lines[-1] == ("a", "switched", None) and len(rec.lines) == 3
    assert state.exported["a"] == item_key(current["a"]) and state.ticks == 3


def test_a_failed_adapter_is_retried_and_reported_once(adapters, tmp_path):
    out, rec, state = tmp_path / "serve", Recorder(), WatchState({}, {})
    broken = tmp_path / "broken"
    shutil.copytree(adapters[0], broken)
    good = item("a", broken)
    (broken / "adapter_config.json").write_text("{}")  # altered after the registry recorded its hash
    current = [good]
    for _ in range(3):
        tick(lambda: current, out, state, rec)
    assert [(n, s) for n, s, _ in rec.lines] == [("a", "failed")] and "differs" in rec.lines[0][2]
    assert "a" in state.failed and not (out / "a").exists()
    shutil.copy(adapters[0] / "adapter_config.json", broken / "adapter_config.json")  # repaired
    (o,) = tick(lambda: current, out, state, rec)
    assert o.status == "exported" and "a" not in state.failed and rec.lines[-1][:2] == ("a", "exported")


def test_a_transient_read_error_is_reported_once_and_retried(adapters, tmp_path):
    """A real database error (a table missing for a while), not a stand-in: the read is an SQLite query."""
    db = tmp_path / "prod.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE prod (name TEXT, path TEXT)")
    con.execute("INSERT INTO prod VALUES ('a', ?)", (str(adapters[0]),))
    con.commit()

    def read():
        with sqlite3.connect(db) as c:
            return [item(n, Path(p)) for n, p in c.execute("SELECT name, path FROM prod")]

    out, rec, state = tmp_path / "serve", Recorder(), WatchState({}, {})
    tick(read, out, state, rec)
    con.execute("ALTER TABLE prod RENAME TO prod_away")
    for _ in range(3):
        assert tick(read, out, state, rec) == []
    assert len(rec.warnings) == 1 and "no such table: prod" in rec.warnings[0] and "retrying" in rec.warnings[0]
    con.execute("ALTER TABLE prod_away RENAME TO prod")
    con.execute("UPDATE prod SET path = ?", (str(adapters[1]),))
    con.commit()
    (o,) = tick(read, out, state, rec)
    assert o.status == "switched" and "works again" in rec.warnings[-1]
    assert adapter_content_sha256(out / "a") == adapter_content_sha256(adapters[1])
    con.close()


def test_other_errors_propagate(tmp_path):
    def read():
        raise KeyError("no adapter named 'x'")

    with pytest.raises(KeyError):
        watch(read, tmp_path, interval=0.01, report=print, warn=print, max_ticks=3, transient=(OSError,))
    with pytest.raises(ValueError, match="interval"):
        watch(read, tmp_path, interval=0, report=print, warn=print)


def test_the_loop_stops_on_its_event_and_after_max_ticks(adapters, tmp_path):
    rec = Recorder()
    state = watch(lambda: [item("a", adapters[0])], tmp_path / "serve", interval=0.01, report=rec.report,
                  warn=rec.warn, max_ticks=4)
    assert state.ticks == 4 and rec.lines == [("a", "exported", None)]
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()  # what the CLI's SIGTERM handler does, during the 60 s wait
    state = watch(list, tmp_path / "serve", interval=60, report=rec.report, warn=rec.warn, stop=stop)
    assert state.ticks == 1  # the wait ended when the event was set
