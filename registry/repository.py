"""The registry's read/write API, used by the flows and the CLI: the only code that writes the database.

Each method is one transaction. Writes are idempotent: rows are looked up by their natural key (a unique
constraint) and created only when missing, and an insert that loses a race to another process is answered with
the row that process wrote. Returned ORM objects are detached with their columns loaded (``expire_on_commit=False``),
so they can be read after the call; they are snapshots, not live views.

Example::

    reg = Registry.open()  # <data_dir>/registry.db, migrated to the latest schema
    reg.register_adapter("gsm-lora", "hf://acme/gsm-lora@v1", "HuggingFaceTB/SmolLM2-135M-Instruct", "math")
    version, created = reg.record_version("gsm-lora", adapter_content_sha256(path), "v1", str(path))
    for version in reg.pending_work(config_hash):
        ...  # refine, add_candidate / add_evaluation / record_decision, then promote(decision)
"""

from __future__ import annotations

from pathlib import Path

from spectral_surgery.registry.db import make_engine
from spectral_surgery.registry.evidence import EvidenceStore
from spectral_surgery.registry.fleet import AdapterStore
from spectral_surgery.registry.migrations import init_db
from spectral_surgery.registry.production import ProductionStore
from spectral_surgery.registry.promotion import BackwardsError, ProductionState
from spectral_surgery.registry.reviews import ReviewRequest, ReviewStore
from spectral_surgery.registry.runs import RunStore
from spectral_surgery.registry.validation import NotFoundError, RegistryError

__all__ = ["BackwardsError", "NotFoundError", "ProductionState", "Registry", "RegistryError", "ReviewRequest"]

# --------------------------------------------------------------------------------------------- registry

class Registry(AdapterStore, RunStore, EvidenceStore, ProductionStore, ReviewStore):
    """Read/write access to the adapter registry on one engine (SQLite or PostgreSQL).

    One class for callers, one module per thing it manages: :mod:`registry.fleet` (adapters and versions),
    :mod:`registry.runs` (refinement runs), :mod:`registry.evidence` (candidates, evaluations, guard results,
    decisions) and :mod:`registry.production` (promotion, overrides, rollback, history) and :mod:`registry.reviews`
    (review windows:
    decisions waiting for approval), on the shared plumbing of
    :mod:`registry.store`; the dashboard's fleet-wide reads are :mod:`registry.read`.

    Args:
        engine: From :func:`registry.db.make_engine`; the schema must be migrated (:func:`registry.migrations.init_db`,
            or use :meth:`open`).
    """

    @classmethod
    def open(cls, url: str | None = None, data_dir: Path | None = None, *, migrate: bool = True) -> Registry:
        """Connect to ``url`` (default ``<data_dir>/registry.db``); unless ``migrate=False``, upgrade the schema."""
        engine = make_engine(url, data_dir)
        if migrate:
            init_db(engine)
        return cls(engine)
