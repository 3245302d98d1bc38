"""The registry API of adapters and their versions: register, enable, record fetch errors, record versions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from spectral_surgery.registry import validation as check
from spectral_surgery.registry.declaration import check_declaration
from spectral_surgery.registry.models import (
    Adapter,
    AdapterVersion,
    utcnow,
)
from spectral_surgery.registry.store import Store
from spectral_surgery.registry.validation import RegistryError


@dataclass(frozen=True)
class Registration:
    """One adapter's declaration, as :meth:`AdapterStore.register_adapter` takes it (for :meth:`register_adapters`)."""

    name: str
    source_uri: str
    base_model_id: str
    task_family: str
    base_model_revision: str | None = None
    benchmark_override: str | None = None
    enabled: bool | None = None
    config: dict[str, Any] | None = None
    priority: int | None = None


@dataclass(frozen=True)
class Change:
    """One field a re-registration changes.

    Attributes:
        field: The column, or ``config.<key>`` for a per-adapter override.
        old: The value registered now (``None``: none).
        new: The value it would become (``None``: dropped).
        guarded: Needs ``force``: it drops an override (the calibration, say) or changes what the adapter is
            (its source, other than a new revision of the same Hub repository, or its task family), so that every
            later night would silently do something else.
    """

    field: str
    old: Any
    new: Any
    guarded: bool

    def __str__(self) -> str:
        show = lambda v: "(none)" if v is None else repr(v)  # noqa: E731
        return f"{self.field}: {show(self.old)} → {show(self.new)}"


GUARDED_FIELDS = ("source_uri", "task_family")


def declaration_changes(adapter: Adapter, values: dict[str, Any]) -> list[Change]:
    """What registering ``values`` over ``adapter`` changes, field by field (config overrides key by key)."""
    out = []
    for name, new in values.items():
        old = getattr(adapter, name)
        if name == "config_json":
            old, new = old or {}, new or {}
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    out.append(Change(f"config.{key}", old.get(key), new.get(key), key not in new))
        elif old != new:
            guarded = name in GUARDED_FIELDS and not (name == "source_uri" and _repo(old) == _repo(new))
            out.append(Change(name, old, new, guarded))
    return out


def _repo(source_uri: str) -> str:
    """A source without its revision: ``hf://org/name@v2`` and ``hf://org/name@v3`` are one adapter's releases."""
    return source_uri.rsplit("@", 1)[0] if source_uri.startswith("hf://") else source_uri


PRIORITY_RANGE = (-1000, 1000)


def check_priority(priority: int | None) -> None:
    """Raise :class:`RegistryError` unless ``priority`` is None or a whole number in :data:`PRIORITY_RANGE`."""
    lo, hi = PRIORITY_RANGE
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not lo <= priority <= hi):
        raise RegistryError(f"priority must be a whole number from {lo} to {hi} (higher runs first when the night "
                            f"is short), got {priority!r}")


class AdapterStore(Store):
    """Adapters (declarations) and their content-addressed versions."""

    # -------------------------------------------------------------------------------------------- adapters
    def register_adapter(
        self,
        name: str,
        source_uri: str,
        base_model_id: str,
        task_family: str,
        base_model_revision: str | None = None,
        benchmark_override: str | None = None,
        enabled: bool | None = None,
        config: dict[str, Any] | None = None,
        *,
        force: bool = False,
        priority: int | None = None,
    ) -> Adapter:
        """Register an adapter, or update its declaration if ``name`` exists (declarative: the arguments win).

        A re-registration that drops a per-adapter override (its calibration, say) or changes its source or task
        family is refused unless ``force``: :meth:`registration_changes` says what it would change.

        Args:
            name: Unique name (letters, digits, ``. _ / -``).
            source_uri: ``hf://org/name[@revision]`` or a local directory path.
            base_model_id: Hub id or local path of the base model.
            task_family: ``math``, ``code``, ``instruction`` or ``commonsense`` (picks the benchmark).
            base_model_revision: Pinned base model revision.
            benchmark_override: Benchmark to use instead of the task family's default.
            enabled: ``None`` = enabled when new, unchanged when it exists (so a re-registration does not undo
                :meth:`set_enabled`).
            config: Per-adapter overrides of the run config (JSON): ``surgery`` (sections of ``SurgeryConfig``,
                merged over the run's) and ``calib`` (calibration file or loader).
            force: Allow the guarded changes (see :class:`Change`).
            priority: Declared priority when a night's window cannot fit every adapter (higher runs first; it
                decides what runs tonight, never a result). ``None`` = 0 when new, unchanged when it exists.

        Returns:
            The adapter row.

        Raises:
            RegistryError: a bad value; a guarded change without ``force`` (the message lists them and the fix);
                ``DeclarationError`` (a subclass) for an unknown task family, benchmark, override key or policy,
                or a calibration file that does not exist (see :mod:`registry.declaration`).
        """
        values = self._declaration(name, source_uri, base_model_id, task_family, base_model_revision,
                                   benchmark_override, config)
        check_priority(priority)
        with self._write() as s:
            return self._register_in(s, name, values, enabled, force, priority)

    def register_adapters(self, registrations: Sequence[Registration], *, force: bool = False) -> list[Adapter]:
        """Register (or re-declare) many adapters at once, all or nothing: every declaration is validated first,
        then all are written in ONE transaction, so a bad one (or a guarded change without ``force``) writes none.

        Raises:
            RegistryError: a name given twice; any error of :meth:`register_adapter`, prefixed with the adapter's
                name (nothing is written).
        """
        seen: set[str] = set()
        values = []
        for r in registrations:
            try:
                check_priority(r.priority)
            except RegistryError as e:
                raise RegistryError(f"{r.name}: {e}") from None
            if r.name in seen:
                raise RegistryError(f"{r.name}: given twice; each adapter is declared once")
            seen.add(r.name)
            try:
                values.append(self._declaration(r.name, r.source_uri, r.base_model_id, r.task_family,
                                                r.base_model_revision, r.benchmark_override, r.config))
            except RegistryError as e:
                raise type(e)(f"{r.name}: {e}") from None
        with self._write() as s:
            return [self._register_in(s, r.name, v, r.enabled, force, r.priority)
                    for r, v in zip(registrations, values)]

    def _register_in(self, s, name: str, values: dict[str, Any], enabled: bool | None, force: bool,
                     priority: int | None = None) -> Adapter:
        adapter, created = self._get_or_create(
            s, Adapter, {"name": name}, {**values, "enabled": True if enabled is None else enabled,
                                         "priority": priority or 0}
        )
        if not created:
            guarded = [c for c in declaration_changes(adapter, values) if c.guarded]
            if guarded and not force:
                raise RegistryError(
                    f"adapter {name!r} is registered already; re-registering it would change "
                    + "; ".join(map(str, guarded)) + ". Repeat the current value (e.g. --calib FILE, --source, "
                    "--family), or pass --force to change it")
            for field, value in values.items():
                if getattr(adapter, field) != value:
                    setattr(adapter, field, value)
            if enabled is not None and adapter.enabled != enabled:
                adapter.enabled = enabled
            if priority is not None and adapter.priority != priority:
                adapter.priority = priority
        return adapter

    def registration_changes(self, name: str, source_uri: str, base_model_id: str, task_family: str,
                             base_model_revision: str | None = None, benchmark_override: str | None = None,
                             config: dict[str, Any] | None = None) -> list[Change] | None:
        """What :meth:`register_adapter` with these arguments would change (``None``: ``name`` is new)."""
        values = self._declaration(name, source_uri, base_model_id, task_family, base_model_revision,
                                   benchmark_override, config)
        with self._read() as s:
            adapter = s.scalars(select(Adapter).where(Adapter.name == name)).first()
            return None if adapter is None else declaration_changes(adapter, values)

    @staticmethod
    def _declaration(name: str, source_uri: str, base_model_id: str, task_family: str,
                     base_model_revision: str | None, benchmark_override: str | None,
                     config: dict[str, Any] | None) -> dict[str, Any]:
        """The validated column values of a registration (raises as :meth:`register_adapter` documents)."""
        check.text(name, "name", max_len=200)
        if not check.NAME.fullmatch(name):
            raise RegistryError(f"name {name!r}: use letters, digits and . _ / - (starting with a letter or digit)")
        check.text(source_uri, "source_uri")
        if source_uri.startswith("hf://") and not check.HF_URI.fullmatch(source_uri):
            raise RegistryError(f"source_uri {source_uri!r}: expected hf://<org>/<name>[@<revision>] or a local path")
        scheme = source_uri.split("://", 1)[0] if "://" in source_uri else None
        if scheme not in (None, "hf", "file"):  # it would be read as a local path and fail every night
            raise RegistryError(f"source_uri {source_uri!r}: {scheme}:// sources are not supported; give "
                                "hf://<org>/<name>[@<revision>], file:///<dir> or a local adapter directory")
        values = {
            "source_uri": source_uri,
            "base_model_id": check.text(base_model_id, "base_model_id", max_len=500),
            "task_family": check.text(task_family, "task_family", max_len=64),
            "base_model_revision": check.optional_text(base_model_revision, "base_model_revision", max_len=200),
            "benchmark_override": check.optional_text(benchmark_override, "benchmark_override", max_len=200),
            "config_json": check.jsonable(config, "config"),
        }
        # before anything is written: a declaration the nightly run could not carry out is refused here
        check_declaration(values["task_family"], values["benchmark_override"], values["config_json"])
        return values

    def list_adapters(self, *, enabled_only: bool = False) -> list[Adapter]:
        """All adapters by name (only the enabled ones with ``enabled_only``)."""
        stmt = select(Adapter).order_by(Adapter.name)
        if enabled_only:
            stmt = stmt.where(Adapter.enabled.is_(True))
        with self._read() as s:
            return list(s.scalars(stmt))

    def get_adapter(self, name: str) -> Adapter:
        """The adapter called ``name``; ``NotFoundError`` (with close names) if there is none."""
        with self._read() as s:
            return self._adapter(s, name)

    def set_enabled(self, name: str, enabled: bool) -> Adapter:
        """Enable or disable an adapter (disabled adapters get no nightly work)."""
        with self._write() as s:
            adapter = self._adapter(s, name)
            adapter.enabled = bool(enabled)
            return adapter

    def record_fetch_error(self, adapter: Adapter | str, error: BaseException | str) -> Adapter:
        """Record that ``adapter``'s source could not be fetched (cleared by the next :meth:`record_version`).

        This is where a failure goes when there is no version to refine yet (a mistyped path, an unknown repo,
        offline with an empty cache); a failure of a known version is also recorded on its adapter run.
        """
        _, message = check.error_text(error)  # the traceback, ending in "Type: message"
        with self._write() as s:
            row = self._adapter(s, adapter)
            row.fetch_error = message
            row.fetch_error_at = utcnow()
            return row

    # -------------------------------------------------------------------------------------------- versions
    def record_version(
        self, adapter: Adapter | str, sha256: str, resolved_revision: str | None, local_path: str | Path | None
    ) -> tuple[AdapterVersion, bool]:
        """Record that ``adapter`` currently has the content ``sha256``.

        A known sha256 is the same version (its ``last_seen_at``, revision and path are refreshed, so it is the
        latest again if the source went back to it); a new one is a new version.

        Returns:
            ``(version, created)``.
        """
        check.sha256(sha256, "sha256")
        check.optional_text(resolved_revision, "resolved_revision", max_len=200)
        path = str(local_path) if local_path is not None else None
        with self._write() as s:
            row = self._adapter(s, adapter)
            version, created = self._get_or_create(
                s, AdapterVersion, {"adapter_id": row.id, "content_sha256": sha256},
                {"resolved_revision": resolved_revision, "local_path": path, "adapter": row},
            )
            row.fetch_error = row.fetch_error_at = None  # fetched: any earlier fetch error is over
            if not created:
                version.last_seen_at = utcnow()
                version.resolved_revision = resolved_revision or version.resolved_revision
                version.local_path = path or version.local_path
            return version, created

    def get_version(self, version_id: int) -> AdapterVersion:
        """The adapter version ``version_id`` (its ``adapter`` is loaded)."""
        with self._read() as s:
            return self._row(s, AdapterVersion, version_id, "adapter version")

    def list_versions(self, adapter: str) -> list[AdapterVersion]:
        """The adapter's versions, latest first."""
        with self._read() as s:
            row = self._adapter(s, adapter)
            return list(s.scalars(select(AdapterVersion).where(AdapterVersion.adapter_id == row.id)
                                  .order_by(AdapterVersion.last_seen_at.desc(), AdapterVersion.id.desc())))
