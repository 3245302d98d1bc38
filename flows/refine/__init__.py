"""The bodies of the per-adapter flow's steps (:mod:`flows.refine_adapter` holds the flow and its thin ``@task``
wrappers): registry and model I/O around the pure steps of ``tasks/``.

- :mod:`flows.refine.source`: the adapter version's files (recorded copy or a fresh fetch, hash checked);
- :mod:`flows.refine.candidates`: the edit budget's cut and the candidates of a visit (model pass only when needed);
- :mod:`flows.refine.evaluation`: scoring the subjects not scored yet, fixed or in sequential looks;
- :mod:`flows.refine.decision`: the gate on the stored outcomes, the stored decision, the production move or review;
- :mod:`flows.refine.artifacts`: the Prefect artifacts of a decision or a failure, posted by the night's publisher;
- :mod:`flows.refine.released`: the named Prefect states that end a released adapter's run and a stopped night's.
"""

import logging

from prefect import get_run_logger


def logger():
    """The flow run's logger; a plain one outside a flow run (unit tests of the helpers)."""
    try:
        return get_run_logger()
    except Exception:  # called outside a flow run
        return logging.getLogger("spectral_surgery.flows.refine_adapter")
