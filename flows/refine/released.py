"""How the Prefect runs of a release end: in a named state, never ``Crashed``.

An adapter in flight is released at its next checkpoint when the night's window ends
(:class:`flows.interrupt.WindowEnded`) or a stop is requested (:class:`flows.interrupt.Interrupted`, a
``KeyboardInterrupt``; or :class:`registry.validation.RunStoppedError` in a Dask worker that never saw the signal).
Had that exception escaped the Prefect task or flow, Prefect would end its run ``Crashed`` and log "Crash detected!"
(with a traceback under ``-v``) in the run's log file, which an operator reads as a crash. The nightly flow returns
these states instead; Prefect logs each as one line ("Finished in state Released('ad0 released by the window: ...')").
"""

from __future__ import annotations

from prefect.states import Cancelled, Completed, State

from spectral_surgery.flows import interrupt


def released_state(result: dict) -> State | None:
    """The Prefect state that ends the task run of a released adapter, or None for any other result (its task run
    completes as usual, or a failure's: returned as data).

    Released by the window's hard stop: ``Completed`` named ``Released``, its message saying so (the work stopped
    between stages as planned; the result is the deferral). Released by a stop request: ``Cancelled``, its message
    naming the signal. Either is one readable line in the run's log ("Finished in state Released('ad0 released by the
    window ...')"), where a ``KeyboardInterrupt`` escaping the task would log "Crash detected!" with a traceback.
    """
    if result.get("released"):
        return Completed(name="Released", data=result, message=f"{result['adapter']} released by the window: "
                                                                f"{result['reason']}; deferred, nothing promoted")
    if result.get("interrupted"):
        by = f"the interrupt ({interrupt.signal_name()})" if interrupt.requested() else "its run's stop"
        return Cancelled(data=result, message=f"{result['adapter']} released by {by}: nothing promoted after it; the "
                                              "next run refines it again")
    return None


def stopped_state(run_id: int | None) -> State:
    """The state that ends the nightly flow run after a stop request: ``Cancelled``, its message naming the signal;
    :func:`flows.refine_fleet.run_nightly` turns it back into :class:`flows.interrupt.Interrupted` for its caller. A
    ``KeyboardInterrupt`` escaping the flow would end it ``Crashed`` ("Crash detected!" in the run's log)."""
    what = f"run {run_id}" if run_id is not None else "the run"
    return Cancelled(message=f"{what} stopped by {interrupt.signal_name()}: adapters in flight released, nothing "
                             "promoted after the signal")
