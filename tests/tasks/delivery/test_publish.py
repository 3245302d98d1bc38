"""Tests for tasks/delivery/publish.py's pure parts: the tag, the evidence and card, the check of an existing tag's
files, and the one-line messages for huggingface_hub's errors (made by huggingface_hub's own
``hf_raise_for_status``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from spectral_surgery.tasks.adapter_io import CONFIG_NAME, SAFETENSORS_NAME, adapter_content_sha256
from spectral_surgery.tasks.delivery.export import ExportItem
from spectral_surgery.tasks.delivery.publish import (
    CARD_NAME,
    EVIDENCE_NAME,
    PublishError,
    hub_message,
    plan_publish,
    remote_differences,
    tag_for,
)
from tests.registry.artifacts import artifact

INFO = {"policy": "smooth_abs", "decision_id": 7, "candidate_id": 3, "adapter_version_id": 2,
        "promoted_at": "2025-01-01T00:00:00+00:00", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "base_model_revision": None, "implicit": False}


@pytest.fixture
def item():
    path, sha = artifact("publish-unit")
    return ExportItem("acme/gsm-lora", path, sha, dict(INFO))


def test_tag_follows_what_put_it_in_production():
    assert tag_for(INFO) == "ss-decision-7"
    assert tag_for({**INFO, "decision_id": None}) == "ss-candidate-3"  # a manual override
    assert tag_for({**INFO, "decision_id": None, "candidate_id": None}) == "ss-version-2"  # unedited


def test_plan_carries_the_recorded_bytes_the_evidence_and_a_valid_card(item, tmp_path):
    plan = plan_publish(item, "acme/gsm", sentence="promote smooth_abs: +3 pts")
    files = dict(plan.files)
    assert list(files) == [CONFIG_NAME, SAFETENSORS_NAME, EVIDENCE_NAME, CARD_NAME]
    assert plan.adapter_files == (CONFIG_NAME, SAFETENSORS_NAME)
    assert files[SAFETENSORS_NAME] == (Path(item.source) / SAFETENSORS_NAME).read_bytes()
    ev = json.loads(files[EVIDENCE_NAME])
    assert (ev["decision_id"], ev["tag"], ev["sentence"]) == (7, "ss-decision-7", "promote smooth_abs: +3 pts")
    assert ev["sha256"] == item.sha256 == adapter_content_sha256(item.source)
    assert ev["files"][CONFIG_NAME] == hashlib.sha256(files[CONFIG_NAME]).hexdigest()
    card = files[CARD_NAME].decode()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta == {"library_name": "peft", "base_model": INFO["base_model"], "tags": ["lora", "spectral-surgery"]}
    assert "> promote smooth_abs: +3 pts" in card and 'revision="ss-decision-7"' in card
    assert plan.commit_message == "spectral-surgery: acme/gsm-lora serves smooth_abs (decision 7)"

    local = plan_publish(ExportItem(item.name, item.source, item.sha256, {**INFO, "base_model": str(tmp_path)}),
                         "acme/gsm", card=True)
    assert "base_model" not in yaml.safe_load(dict(local.files)[CARD_NAME].decode().split("---\n")[1])
    assert CARD_NAME not in dict(plan_publish(item, "acme/gsm", card=False).files)
    with pytest.raises(PublishError, match="differs from the registry's.*nothing published"):
        plan_publish(ExportItem(item.name, item.source, "0" * 64, INFO), "acme/gsm")


def test_remote_differences(item):
    from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling
    from huggingface_hub.utils.sha import git_hash

    plan = plan_publish(item, "acme/gsm")
    files = dict(plan.files)
    same = [RepoSibling(CONFIG_NAME, blob_id=git_hash(files[CONFIG_NAME])),
            RepoSibling(SAFETENSORS_NAME, lfs=BlobLfsInfo(size=1, sha256=hashlib.sha256(files[SAFETENSORS_NAME])
                                                          .hexdigest(), pointer_size=1)),
            RepoSibling(EVIDENCE_NAME, blob_id="0" * 40)]  # the evidence may differ (versions): not compared
    assert remote_differences(plan, same) == []
    assert remote_differences(plan, [RepoSibling(CONFIG_NAME, blob_id="0" * 40)]) == [
        f"{CONFIG_NAME} has other content", f"{SAFETENSORS_NAME} is missing"]


def _hub_error(status: int, headers: dict | None = None):
    """The exception huggingface_hub itself raises for this response."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import hf_raise_for_status

    url = "https://huggingface.co/api/models/acme/gsm/commit/main"
    response = httpx2.Response(status, headers=headers or {}, json={"error": "nope"},
                               request=httpx2.Request("POST", url))
    try:
        hf_raise_for_status(response)
    except HfHubHTTPError as e:
        return e
    raise AssertionError("no error raised")


@pytest.mark.parametrize(("status", "headers", "step", "fragments"), [
    (412, None, "committing", ["the repo moved since abcdef012345", "re-run"]),
    (404, {"X-Error-Code": "RepoNotFound"}, "reading the repo's tags", ["no such model repo", "--create"]),
    (404, {"X-Error-Code": "RevisionNotFound"}, "reading the head of main", ["branch 'main' does not exist"]),
    (403, None, "committing", ["refused the token (403)", "write access to acme/gsm"]),
    (409, None, "tagging", ["was created in acme/gsm meanwhile"]),
    (500, None, "tagging", ["answered 500 while tagging", "pushed untagged", "re-run"]),
])
def test_hub_messages(item, status, headers, step, fragments):
    plan = plan_publish(item, "acme/gsm")
    msg = hub_message(_hub_error(status, headers), plan=plan, step=step, parent="abcdef0123456789", token="hf_x")
    for f in fragments:
        assert f in msg, (f, msg)
    assert "\n" not in msg


def test_hub_message_unwraps_upload_errors_and_redacts_the_token(item):
    plan = plan_publish(item, "acme/gsm")
    try:
        try:
            raise _hub_error(400)
        except Exception as inner:
            raise RuntimeError("Error while uploading 'adapter_model.safetensors' to the Hub.") from inner
    except RuntimeError as e:
        msg = hub_message(e, plan=plan, step="committing")
    assert msg.startswith("Error while uploading 'adapter_model.safetensors' to the Hub: the Hub answered 400")
    leak = hub_message(ValueError("bad header Bearer hf_secret123"), plan=plan, step="committing", token="hf_secret123")
    assert "hf_secret123" not in leak and "***" in leak
