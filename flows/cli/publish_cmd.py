"""``spectral-surgery publish ADAPTER --repo org/name``: the production adapter to the Hugging Face Hub.

Reads what ``ADAPTER`` serves through :func:`registry.read.production_set` (as ``export`` does), verifies and
prepares the upload with :func:`tasks.delivery.publish.plan_publish` and pushes it with
:func:`tasks.delivery.publish.push` (``huggingface_hub.HfApi``: one commit with ``parent_commit``, then a tag).
``--dry-run`` prints what would be uploaded and makes no request. The Hub endpoint and token are huggingface_hub's own:
``HF_ENDPOINT``, ``HF_TOKEN`` or ``hf auth login`` (read when the command runs; the token is never printed). Exit code 0
when published or already published, 1 when the Hub refused or failed (nothing half-done is left untold), 2 for a bad
``--repo``, 3 for an unknown adapter.
"""

from __future__ import annotations

import hashlib
import os

from spectral_surgery.flows.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    console,
    emit,
    fail,
    open_registry,
    table,
)


def cmd_publish(args) -> int:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from spectral_surgery.flows.cli.export_cmd import items_of
    from spectral_surgery.registry.read import production_set
    from spectral_surgery.tasks.delivery.publish import PublishError, plan_publish, push

    try:
        validate_repo_id(args.repo)
        if "/" not in args.repo:
            raise HFValidationError("it needs a namespace")
    except HFValidationError as e:
        return fail(f"--repo {args.repo!r} is not a Hub repo id (org/name): {e}", code=EXIT_USAGE)
    if args.private and not args.create:
        return fail("--private applies to a repo publish creates: pass it with --create", code=EXIT_USAGE)
    reg = open_registry(args)
    try:
        entries = production_set(reg, only=args.adapter)
        if not entries:
            from spectral_surgery.registry.validation import NotFoundError

            raise NotFoundError(f"no adapter named {args.adapter!r}")
        (entry,) = entries
        sentence = reg.get_decision_by_id(entry.decision_id).sentence if entry.decision_id is not None else None
    finally:
        reg.close()
    if entry.source_path is None:
        return fail(f"{args.adapter}: nothing in production (no version recorded yet): nothing to publish",
                    code=EXIT_FAILURE)
    try:
        plan = plan_publish(items_of(entries)[0], args.repo, revision=args.revision, sentence=sentence,
                            card=args.card)
    except PublishError as e:
        return fail(str(e), code=EXIT_FAILURE)
    files = [{"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
             for name, data in plan.files]
    payload = {"adapter": plan.adapter, "repo_id": plan.repo_id, "revision": plan.revision, "tag": plan.tag,
               "dry_run": args.dry_run, "policy": entry.policy, "decision_id": entry.decision_id,
               "sha256": entry.sha256, "commit_message": plan.commit_message, "files": files}
    if not args.dry_run:
        from huggingface_hub import HfApi, constants

        if constants.HF_HUB_OFFLINE:
            return fail("HF_HUB_OFFLINE is set: publishing needs the Hub (unset it for this command)",
                        code=EXIT_FAILURE)
        from huggingface_hub import get_token

        if not get_token():
            return fail("no Hugging Face token: set HF_TOKEN or run `hf auth login` (the token needs write access "
                        f"to {plan.repo_id})", code=EXIT_FAILURE)
        api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
        try:
            result = push(plan, api, create=args.create, private=args.private or None)
        except PublishError as e:
            return fail(str(e), code=EXIT_FAILURE)
        payload.update(status=result["status"], commit=result["commit"], parent_commit=result["parent_commit"],
                       commit_url=result["commit_url"])

    def render() -> None:
        from rich.markup import escape

        out = console()
        title = (f"Would publish {plan.adapter} ({entry.policy}) to {plan.repo_id}@{plan.revision}" if args.dry_run
                 else f"{plan.adapter} ({entry.policy}) → {plan.repo_id}@{plan.revision}")
        out.print(table(title, ["file", "bytes", "sha256"], [[f["path"], f["bytes"], f["sha256"][:12]] for f in files],
                        narrow=("bytes", "sha256")))
        if args.dry_run:
            out.print(f"tag {escape(plan.tag)}; commit: {escape(plan.commit_message)}; nothing was sent")
        elif payload["status"] == "unchanged":
            out.print(f"already published: tag {escape(plan.tag)} is at {payload['commit'][:12]} with these adapter "
                      "files; nothing done")
        else:
            out.print(f"published commit {payload['commit'][:12]} (parent {(payload['parent_commit'] or '?')[:12]}), "
                      f"tagged {escape(plan.tag)}: {escape(payload['commit_url'])}")

    return emit(args, payload, render)
