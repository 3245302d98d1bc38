"""Serve the nightly flow from this process: the simplest deployment, no work pool and no worker.

    python -m spectral_surgery.deployments.serve                                   # nightly-cpu.yaml, 02:00 UTC
    python -m spectral_surgery.deployments.serve --config deployments/configs/nightly-gpu.yaml --cron "30 1 * * *"

The process registers the deployment with the Prefect API (``PREFECT_API_URL``; a local ``prefect server start``
or Prefect Cloud), then polls for its scheduled runs and executes them in subprocesses until stopped. The
deployment's concurrency limit is 1 with ``CANCEL_NEW``: a run scheduled while one is still going is cancelled,
so two nightly runs never overlap (the same settings as ``deployments/prefect.yaml``; a test keeps them equal).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "configs" / "nightly-cpu.yaml"
NAME = "nightly-refinement-served"  # not prefect.yaml's "nightly-refinement": both may exist on one server
CRON = "0 2 * * *"
TIMEZONE = "UTC"
TAGS = ["spectral-surgery", "nightly"]
DESCRIPTION = "Refine, evaluate, gate and promote every adapter version that needs it."


def load_config(path: Path) -> dict[str, Any]:
    """The RunConfig mapping in ``path``, validated (so a bad file fails here, naming itself, not at 02:00)."""
    from pydantic import ValidationError

    from spectral_surgery.tasks.run_config import RunConfig, read_config_file

    data = read_config_file(path)
    try:
        RunConfig.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"{path}: invalid run config:\n{e}") from None
    # The raw mapping, not the validated model's dump: defaults such as data_dir are resolved on the machine
    # that runs the flow, at run time.
    return data


def concurrency_limit():
    """At most one nightly run at a time; a run that would collide is cancelled (not queued)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    return ConcurrencyLimitConfig(limit=1, collision_strategy="CANCEL_NEW")


def deployment_kwargs(config_path: Path = DEFAULT_CONFIG, *, name: str = NAME, cron: str = CRON,
                      timezone: str = TIMEZONE) -> dict[str, Any]:
    """Keyword arguments shared by ``Flow.serve`` and ``Flow.to_deployment`` (everything but the limit)."""
    from prefect.schedules import Cron

    return {"name": name, "schedules": [Cron(cron, timezone=timezone)], "tags": list(TAGS),
            "description": DESCRIPTION, "parameters": {"config": load_config(config_path)}}


def build_deployment(config_path: Path = DEFAULT_CONFIG, **kwargs):
    """The deployment ``serve`` registers, built in-process (no API call): for inspection and tests."""
    from spectral_surgery.flows.refine_fleet import nightly_refinement

    return nightly_refinement.to_deployment(**deployment_kwargs(config_path, **kwargs),
                                            concurrency_limit=concurrency_limit())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spectral_surgery.deployments.serve",
                                description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="RunConfig YAML (the flow's parameter).")
    p.add_argument("--name", default=NAME, help="Deployment name.")
    p.add_argument("--cron", default=CRON, help="Schedule (cron, in --timezone).")
    p.add_argument("--timezone", default=TIMEZONE)
    args = p.parse_args(argv)
    from spectral_surgery.flows.refine_fleet import nightly_refinement

    try:
        kwargs = deployment_kwargs(args.config, name=args.name, cron=args.cron, timezone=args.timezone)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # global_limit is the deployment's concurrency limit (shared by every process serving it); limit=1 also
    # keeps this one runner from starting a second run while one is in flight.
    nightly_refinement.serve(**kwargs, global_limit=concurrency_limit(), limit=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
