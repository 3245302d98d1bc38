"""Publish the production adapter to the Hugging Face Hub: one new revision, tagged with what put it in production.

What is uploaded (one commit on ``revision``, default ``main``)::

    adapter_config.json, adapter_model.safetensors   the production files, exactly the bytes the registry recorded
                                                      (checked against its content sha256 first)
    spectral_surgery.json                             the evidence: adapter, policy, decision id, the gate's sentence,
                                                      base model, sha256 (registry content hash and per file), tag
    README.md                                         a model card saying the same (``card=False``: not uploaded)

The commit is made with ``parent_commit`` = the head of ``revision`` read just before, so a push by someone else in
between makes the Hub refuse it (412) and nothing is published; then the new commit is tagged
``ss-decision-<id>`` (``ss-candidate-<id>`` for a manual override, ``ss-version-<id>`` for the unedited version).
Publishing is idempotent: if the tag exists and its commit holds the same adapter files, nothing is done; if it
holds other files, that is an error. The token is huggingface_hub's own (``HF_TOKEN`` or ``hf auth login``): never
stored, never printed (every message is redacted with it).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spectral_surgery.tasks.adapter_io import package_versions
from spectral_surgery.tasks.delivery.export import ExportError, ExportItem, verified_files
from spectral_surgery.tasks.secrets import redact_text

EVIDENCE_NAME = "spectral_surgery.json"
CARD_NAME = "README.md"
TAG_PREFIX = "ss-"

__all__ = ["CARD_NAME", "EVIDENCE_NAME", "Plan", "PublishError", "hub_message", "model_card", "plan_publish",
           "push", "remote_differences", "tag_for"]


class PublishError(Exception):
    """A publish that did not happen (or did not finish), with a message that says why and what to do."""


@dataclass(frozen=True)
class Plan:
    """One publish, prepared and verified, before any request: what goes where, in which commit, under which tag.

    Attributes:
        adapter: The adapter's name.
        repo_id: The Hub model repo (``org/name``).
        revision: The branch committed to.
        tag: The tag the new commit gets (:func:`tag_for`).
        files: ``((path in repo, bytes), ...)``: the adapter files first, then the evidence and the card.
        adapter_files: The names of the adapter's own files (what an existing tag is checked against).
        evidence: The content of ``spectral_surgery.json``.
        commit_message: Its first line; ``commit_description`` the rest (the gate's sentence).
    """

    adapter: str
    repo_id: str
    revision: str
    tag: str
    files: tuple[tuple[str, bytes], ...]
    adapter_files: tuple[str, ...]
    evidence: dict[str, Any]
    commit_message: str
    commit_description: str


def tag_for(info: dict[str, Any]) -> str:
    """The tag of what is in production: its gate decision, else its candidate (a manual override), else its
    version (the unedited files)."""
    if info.get("decision_id") is not None:
        return f"{TAG_PREFIX}decision-{info['decision_id']}"
    if info.get("candidate_id") is not None:
        return f"{TAG_PREFIX}candidate-{info['candidate_id']}"
    return f"{TAG_PREFIX}version-{info.get('adapter_version_id')}"


def _hub_id(model: str | None) -> str | None:
    """``model`` if it reads as a Hub repo id (not a local path), for the card's ``base_model``; else None."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not model or Path(model).expanduser().exists() or model.startswith(("/", ".", "~")):
        return None
    try:
        validate_repo_id(model)
    except HFValidationError:
        return None
    return model


def model_card(evidence: dict[str, Any]) -> str:
    """A README.md for the Hub: YAML metadata (``library_name: peft``, ``base_model`` when it is a Hub id) and the
    evidence of why this adapter is in production, with the line that loads it at its tag."""
    base = _hub_id(evidence["base_model"])
    meta = ["---", "library_name: peft", *([f"base_model: {base}"] if base else []),
            "tags:", "- lora", "- spectral-surgery", "---", ""]
    rows = [("adapter", evidence["adapter"]), ("serves", evidence["policy"]),
            ("decision", evidence["decision_id"]), ("tag", evidence["tag"]),
            ("promoted at", evidence["promoted_at"]), ("base model", evidence["base_model"]),
            ("base model revision", evidence["base_model_revision"]), ("content sha256", evidence["sha256"])]
    table = ["| field | value |", "|---|---|", *(f"| {k} | `{v}` |" for k, v in rows if v is not None)]
    why = evidence.get("sentence") or ("Never promoted: the unedited adapter." if evidence["policy"] == "unedited"
                                       else "Put in production by hand (no gate decision).")
    load = ["```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM", "",
            f'base = AutoModelForCausalLM.from_pretrained("{evidence["base_model"]}")',
            f'model = PeftModel.from_pretrained(base, "{evidence["repo_id"]}", revision="{evidence["tag"]}")', "```"]
    return "\n".join([*meta, f"# {evidence['adapter']}", "",
                      (f"The production adapter `{evidence['adapter']}` as spectral-surgery serves it "
                       f"(`{evidence['policy']}`)."), "", f"> {why}", "", *table, "",
                      f"`{EVIDENCE_NAME}` holds the same evidence as JSON.", "", *load, ""])


def plan_publish(item: ExportItem, repo_id: str, *, revision: str = "main", sentence: str | None = None,
                 card: bool = True) -> Plan:  # fmt: skip
    """Read and verify the production files of ``item`` and prepare their publish to ``repo_id`` (no request).

    Args:
        item: The production entry (:func:`flows.cli.export_cmd.items_of`): its source folder, recorded sha256 and info.
        repo_id: ``org/name`` of a Hub model repo.
        revision: The branch to commit to.
        sentence: The gate decision's sentence (the evidence), if a decision put it in production.
        card: Also upload a generated ``README.md``.

    Raises:
        PublishError: nothing is in production, or the files differ from the registry's record (naming both hashes).
    """
    try:
        files, sha = verified_files(item)
    except ExportError as e:
        raise PublishError(f"{e}: nothing published") from e
    info = item.info
    tag = tag_for(info)
    evidence = {
        "adapter": item.name, "repo_id": repo_id, "revision": revision, "tag": tag, "policy": info.get("policy"),
        "decision_id": info.get("decision_id"), "sentence": sentence, "candidate_id": info.get("candidate_id"),
        "adapter_version_id": info.get("adapter_version_id"), "promoted_at": info.get("promoted_at"),
        "implicit": info.get("implicit"), "base_model": info.get("base_model"),
        "base_model_revision": info.get("base_model_revision"), "sha256": sha,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files},
        "spectral_surgery": package_versions()["spectral-surgery"],
    }
    extra = [(EVIDENCE_NAME, (json.dumps(evidence, indent=2, sort_keys=True) + "\n").encode())]
    if card:
        extra.append((CARD_NAME, model_card(evidence).encode()))
    what = f"decision {info['decision_id']}" if info.get("decision_id") is not None else tag
    return Plan(item.name, repo_id, revision, tag, (*files, *extra), tuple(n for n, _ in files), evidence,
                f"spectral-surgery: {item.name} serves {info.get('policy')} ({what})", sentence or "")


def write_folder(plan: Plan, folder: str | Path) -> Path:
    """Write the plan's files into ``folder`` (what ``upload_folder`` uploads); returns the folder."""
    folder = Path(folder)
    for name, data in plan.files:
        (folder / name).write_bytes(data)
    return folder


def remote_differences(plan: Plan, siblings: list[Any]) -> list[str]:
    """How the files at a Hub commit differ from the plan's adapter files (empty: the same bytes).

    ``siblings`` are huggingface_hub's ``RepoSibling`` (``repo_info(..., files_metadata=True)``): an LFS file is
    compared by its sha256, a regular file by its git blob id.
    """
    from huggingface_hub.utils.sha import git_hash

    remote = {s.rfilename: s for s in siblings}
    problems = []
    for name, data in plan.files:
        if name not in plan.adapter_files:
            continue
        s = remote.get(name)
        if s is None:
            problems.append(f"{name} is missing")
        elif not ((s.lfs is not None and s.lfs.sha256 == hashlib.sha256(data).hexdigest())
                  or s.blob_id == git_hash(data)):
            problems.append(f"{name} has other content")
    return problems


def hub_message(e: BaseException, *, plan: Plan, step: str, parent: str | None = None, token: str | None = None,
                endpoint: str | None = None) -> str:  # fmt: skip
    """A one-line message for a Hub error raised while ``step`` (what failed, why, what to do), with the token
    redacted."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{plan.repo_id}@{plan.revision}"
    outer = None
    if isinstance(e, RuntimeError) and e.__cause__ is not None:  # "Error while uploading '<file>' to the Hub."
        outer, e = str(e), e.__cause__
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, OfflineModeIsEnabled):
        msg = "HF_HUB_OFFLINE is set: publishing needs the Hub (unset it for this command)"
    elif isinstance(e, RevisionNotFoundError):
        msg = f"branch {plan.revision!r} does not exist in {plan.repo_id}: create it first or omit --revision"
    elif isinstance(e, RepositoryNotFoundError):
        msg = (f"{plan.repo_id}: no such model repo, or the token cannot see it (while {step}); check the name and "
               "the token, or pass --create to create it")
    elif isinstance(e, HfHubHTTPError) and (status == 412 or (status == 409 and step == "committing")):
        msg = (f"the repo moved since {(parent or '?')[:12]} was read ({where} has a newer commit, pushed meanwhile): "
               "nothing was published; re-run publish")
    elif isinstance(e, HfHubHTTPError) and status == 409 and step == "tagging":
        msg = (f"tag {plan.tag!r} was created in {plan.repo_id} meanwhile (by another publish?): re-run publish to "
               "check what it points at")
    elif isinstance(e, HfHubHTTPError) and status in (401, 403):
        msg = (f"the Hub refused the token ({status}) while {step}: it needs write access to {plan.repo_id} "
               "(set HF_TOKEN or run `hf auth login`)")
    elif isinstance(e, HfHubHTTPError):
        detail = e.server_message or str(e).splitlines()[0]
        msg = f"the Hub answered {status} while {step} ({where}): {detail}"
    elif type(e).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore"):
        msg = f"cannot reach the Hub at {endpoint or 'the default endpoint'} while {step}: {type(e).__name__}: {e}"
    else:
        msg = f"{type(e).__name__} while {step} ({where}): {e}"
    if outer:
        msg = f"{outer.rstrip('.')}: {msg}"
    if step == "tagging" and status != 409:
        msg += "; the commit was pushed untagged: re-run publish to tag it"
    return redact_text(" ".join(msg.split()), [token or ""])


def push(plan: Plan, api, *, create: bool = False, private: bool | None = None) -> dict[str, Any]:
    """Publish ``plan`` with ``api`` (a ``huggingface_hub.HfApi``): optionally create the repo, return early if its
    tag already holds these files, else commit on the head just read (``parent_commit``) and tag the commit.

    Returns:
        ``{"status": "published" | "unchanged", "repo_id", "revision", "tag", "commit", "parent_commit",
        "commit_url", "files"}``.

    Raises:
        PublishError: any refusal or failure of the Hub, in one line (:func:`hub_message`).
    """
    token = api.token if isinstance(getattr(api, "token", None), str) else None
    from huggingface_hub import get_token

    token = token or get_token()
    out: dict[str, Any] = {"repo_id": plan.repo_id, "revision": plan.revision, "tag": plan.tag,
                           "files": [n for n, _ in plan.files], "parent_commit": None, "commit_url": None}
    step, parent = "reading the repo", None
    try:
        if create:
            step = "creating the repo"
            api.create_repo(plan.repo_id, private=private, exist_ok=True)
        step = "reading the repo's tags"
        tags = {t.name: t.target_commit for t in api.list_repo_refs(plan.repo_id).tags}
        if plan.tag in tags:
            step = f"reading the files of tag {plan.tag}"
            info = api.repo_info(plan.repo_id, revision=tags[plan.tag], files_metadata=True)
            problems = remote_differences(plan, info.siblings or [])
            if problems:
                raise PublishError(f"tag {plan.tag!r} already exists in {plan.repo_id} at {tags[plan.tag][:12]} with "
                                   f"other files ({'; '.join(problems)}): nothing published; delete the tag or "
                                   "publish to another repo")
            return {**out, "status": "unchanged", "commit": tags[plan.tag]}
        step = f"reading the head of {plan.revision}"
        parent = api.repo_info(plan.repo_id, revision=plan.revision).sha
        step = "committing"
        with tempfile.TemporaryDirectory(prefix="ss-publish-") as tmp:
            commit = api.upload_folder(repo_id=plan.repo_id, folder_path=write_folder(plan, tmp),
                                       revision=plan.revision, parent_commit=parent,
                                       commit_message=plan.commit_message,
                                       commit_description=plan.commit_description)
        step = "tagging"
        api.create_tag(plan.repo_id, tag=plan.tag, revision=commit.oid, tag_message=plan.commit_message)
    except PublishError:
        raise
    except Exception as e:  # huggingface_hub's errors (and the HTTP client's), said once
        raise PublishError(hub_message(e, plan=plan, step=step, parent=parent, token=token,
                                       endpoint=getattr(api, "endpoint", None))) from e
    return {**out, "status": "published", "commit": commit.oid, "parent_commit": parent,
            "commit_url": str(commit.commit_url)}
