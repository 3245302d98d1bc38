"""``spectral-surgery publish`` against an emulated Hub (tests/hub_emulator.py): huggingface_hub's own request layer
(HfApi, its NDJSON commit payload, LFS batch/PUT/verify, its httpx client and error mapping) with no network.

What this does not cover: the real Hub's behaviour (its card validation, auth scopes, rate limits), the Xet upload
path that huggingface_hub takes when hf_xet is installed (disabled here: the LFS path is the one emulated), and
S3 multipart LFS uploads (the adapters here are small).
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from spectral_surgery.tasks.adapter_io import (
    CONFIG_NAME,
    SAFETENSORS_NAME,
    adapter_content_sha256,
    content_sha256,
)
from tests.flows.cli_support import assert_error, cli, promote
from tests.hub_emulator import serve

TOKEN = "hf_fake_token_for_the_emulator_0123456789"
REPO = "acme/ad0-lora"


@pytest.fixture
def hub(monkeypatch):
    """An emulated Hub with ``acme/ad0-lora`` created; huggingface_hub pointed at it with a fake token."""
    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    with serve(TOKEN) as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs with HF_HUB_OFFLINE=1
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # hf_xet's storage protocol is not emulated
        close_session()  # a fresh client for this endpoint and environment
        h.create(REPO)
        yield h
    close_session()


def publish(env, *extra, repo=REPO):
    return cli("publish", "ad0", "--repo", repo, "--data-dir", env.data, *extra)


def committed(hub) -> dict:
    """The commit request's NDJSON decoded: ``{"header": ..., "files": {path: bytes}, "lfs": {path: oid}}``."""
    (req,) = hub.calls("POST", r"/commit/")
    lines = req.ndjson()
    assert lines[0]["key"] == "header"
    files = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines[1:] if x["key"] == "file"}
    lfs = {x["value"]["path"]: x["value"]["oid"] for x in lines[1:] if x["key"] == "lfsFile"}
    return {"header": lines[0]["value"], "files": files, "lfs": lfs}


def test_publish_commits_the_verified_files_on_the_head_and_tags_the_decision(reg_env, hub):
    repo = hub.repos[REPO]
    head = repo.branches["main"]
    r = publish(reg_env, "--json")
    out = r.json()
    tag = f"ss-decision-{reg_env.decision.id}"
    assert (out["status"], out["tag"], out["parent_commit"]) == ("published", tag, head)
    assert TOKEN not in r.out + r.err
    assert all(q.status == 200 for q in hub.requests)  # every endpoint huggingface_hub called is emulated
    assert {q.authorization for q in hub.requests if q.method != "PUT"} == {f"Bearer {TOKEN}"}
    assert [q.authorization for q in hub.calls("PUT")] == [None]  # the presigned LFS upload carries no token

    src = reg_env.edited[0]
    sent = committed(hub)
    assert sent["header"]["parentCommit"] == head and "smooth_abs" in sent["header"]["summary"]
    assert sent["header"]["description"] == "smooth_abs wins"
    assert sent["files"][CONFIG_NAME] == (src / CONFIG_NAME).read_bytes()
    weights = (src / SAFETENSORS_NAME).read_bytes()
    assert sent["lfs"] == {SAFETENSORS_NAME: hashlib.sha256(weights).hexdigest()}  # LFS, as the Hub says for it
    (put,) = hub.calls("PUT", r"/_lfs/")
    assert put.body == weights and hub.calls("POST", r"/verify$")
    evidence = json.loads(sent["files"]["spectral_surgery.json"])
    assert (evidence["decision_id"], evidence["policy"], evidence["sentence"]) == (reg_env.decision.id, "smooth_abs",
                                                                                    "smooth_abs wins")
    assert evidence["sha256"] == adapter_content_sha256(src) and evidence["base_model"] == str(reg_env.base)
    assert evidence["files"][SAFETENSORS_NAME] == hashlib.sha256(weights).hexdigest() and evidence["tag"] == tag
    card = sent["files"]["README.md"].decode()
    assert card.startswith("---\nlibrary_name: peft\n") and "smooth_abs wins" in card and f'revision="{tag}"' in card
    assert hub.calls("POST", r"/api/validate-yaml")  # huggingface_hub checks a README's metadata first

    new = repo.branches["main"]
    assert out["commit"] == new != head and repo.commits[new].parent == head
    assert repo.tags[tag][0] == new and hub.calls("POST", rf"/tag/{new}$")
    at_tag = repo.resolve(tag).files
    assert content_sha256([(n, at_tag[n]) for n in (CONFIG_NAME, SAFETENSORS_NAME)]) == adapter_content_sha256(src)

    n = len(hub.requests)
    again = publish(reg_env, "--json").json()
    assert again["status"] == "unchanged" and again["commit"] == new and repo.branches["main"] == new
    assert not [q for q in hub.requests[n:] if q.method != "GET"]  # verified by reading, nothing written

    d = promote(reg_env, reg_env.edited[1], "abs_select", "d1")
    third = publish(reg_env, "--json").json()
    assert third["status"] == "published" and third["parent_commit"] == new and third["tag"] == f"ss-decision-{d.id}"
    assert repo.tags[tag][0] == new and repo.tags[third["tag"]][0] == repo.branches["main"] == third["commit"]


def test_a_push_in_between_is_refused_and_nothing_is_tagged(reg_env, hub):
    repo = hub.repos[REPO]

    def someone_pushes(r):
        hub.before_commit = None
        r.commit("main", {"notes.md": b"theirs"}, set(), "a concurrent push")

    hub.before_commit = someone_pushes
    head = repo.branches["main"]
    line = assert_error(publish(reg_env), "the repo moved since", head[:12], "re-run", code=1)
    assert TOKEN not in line and not repo.tags and hub.calls("POST", r"/commit/")[0].status == 412
    assert repo.commits[repo.branches["main"]].message == "a concurrent push"
    ok = publish(reg_env, "--json").json()  # re-run: on the new head
    assert ok["status"] == "published" and ok["parent_commit"] == repo.commits[ok["commit"]].parent != head
    assert repo.resolve(ok["tag"]).files["notes.md"] == b"theirs"


def test_a_failed_tag_is_said_and_a_rerun_tags_the_pushed_commit(reg_env, hub):
    repo = hub.repos[REPO]
    hub.refuse["tag"] = 500
    assert_error(publish(reg_env), "while tagging", "pushed untagged", "re-run", code=1)
    pushed = repo.branches["main"]
    assert not repo.tags and "spectral_surgery.json" in repo.commits[pushed].files
    n = len(hub.requests)
    ok = publish(reg_env, "--json").json()
    assert ok["status"] == "published" and ok["commit"] == pushed == repo.branches["main"]  # no second commit
    assert repo.tags[ok["tag"]][0] == pushed and not hub.calls("POST", r"/commit/")[1:]
    assert not [q for q in hub.requests[n:] if "/_lfs/" in q.path]  # the weights were not sent again


def test_dry_run_makes_no_request(reg_env, hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    r = publish(reg_env, "--dry-run", "--json").json()
    assert r["dry_run"] and r["tag"] == f"ss-decision-{reg_env.decision.id}" and "status" not in r
    names = [f["path"] for f in r["files"]]
    assert names == [CONFIG_NAME, SAFETENSORS_NAME, "spectral_surgery.json", "README.md"]
    assert r["files"][0]["sha256"] == hashlib.sha256((reg_env.edited[0] / CONFIG_NAME).read_bytes()).hexdigest()
    text = publish(reg_env, "--dry-run", "--no-card")
    assert text.code == 0 and "Would publish ad0" in text.out and "nothing was sent" in text.out
    assert "README.md" not in text.out and hub.requests == []


def test_repo_creation_branches_and_unedited(reg_env, hub):
    assert_error(publish(reg_env, repo="acme/new"), "acme/new", "--create", code=1)
    out = publish(reg_env, "--create", "--private", "--json", repo="acme/new").json()
    assert out["status"] == "published" and hub.repos["acme/new"].private
    assert hub.calls("POST", "/api/repos/create")[0].json()["visibility"] == "private"
    assert_error(publish(reg_env, "--revision", "dev"), "branch 'dev' does not exist", code=1)
    hub.repos[REPO].branches["dev"] = hub.repos[REPO].branches["main"]
    dev = publish(reg_env, "--revision", "dev", "--no-card", "--json").json()
    assert hub.repos[REPO].branches["dev"] == dev["commit"] != hub.repos[REPO].branches["main"]
    assert "README.md" not in hub.repos[REPO].commits[dev["commit"]].files

    r = cli("publish", "ad1", "--repo", "acme/ad1", "--create", "--data-dir", reg_env.data, "--json").json()
    vid = reg_env.versions["ad1"].id
    assert r["tag"] == f"ss-version-{vid}" and r["policy"] == "unedited" and r["decision_id"] is None
    files = hub.repos["acme/ad1"].resolve(r["tag"]).files
    assert json.loads(files["spectral_surgery.json"])["sentence"] is None
    assert "Never promoted" in files["README.md"].decode()


def test_refusals(reg_env, hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    repo = hub.repos[REPO]
    tag = f"ss-decision-{reg_env.decision.id}"
    repo.tags[tag] = (repo.branches["main"], "")  # a tag of that name on other content
    assert_error(publish(reg_env), f"tag '{tag}' already exists", "other files", code=1)
    del repo.tags[tag]
    assert_error(publish(reg_env, repo="no-namespace"), "not a Hub repo id", code=2)
    assert_error(publish(reg_env, "--private"), "--create", code=2)
    assert_error(cli("publish", "nope", "--repo", REPO, "--data-dir", reg_env.data), "no adapter named", code=3)
    assert_error(cli("publish", "ad2", "--repo", REPO, "--data-dir", reg_env.data), "nothing in production", code=1)
    hub.requests.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_error(publish(reg_env), "HF_HUB_OFFLINE", code=1)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    assert_error(publish(reg_env), "no Hugging Face token", "HF_TOKEN", code=1)
    assert hub.requests == []
    wrong = "hf_wrong_token_0123456789abcdef"
    monkeypatch.setenv("HF_TOKEN", wrong)
    line = assert_error(publish(reg_env), code=1)
    assert wrong not in line and hub.requests and not repo.tags
    cfg = reg_env.edited[0] / CONFIG_NAME
    cfg.write_text(cfg.read_text().replace('"lora_alpha": 8', '"lora_alpha": 9'))
    hub.requests.clear()
    assert_error(publish(reg_env), "differs from the registry", "nothing published", code=1)
    assert hub.requests == []
