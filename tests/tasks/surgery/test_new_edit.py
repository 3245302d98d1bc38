"""Adding a post-hoc edit is one function and one registration line: registered here (in a private copy of the
registry, so no other test sees it), it runs through the engine, is keyed by the settings it declares and is
listed with them."""

from __future__ import annotations

import json

import pytest
import torch

import spectral_surgery.tasks.surgery.policy_registry as policy_registry
from spectral_surgery.tasks.adapter_io import load_adapter
from spectral_surgery.tasks.config import EditConfig, SurgeryConfig
from spectral_surgery.tasks.keys import candidate_key
from spectral_surgery.tasks.surgery.edit import edit_sigmas, prepare_data_free, write_candidate
from spectral_surgery.tasks.surgery.policy_docs import policy_rows
from spectral_surgery.tasks.surgery.policy_registry import PolicyInputs, preserve_energy, register_policy


def toy_tail_cut(inp: PolicyInputs, cfg: EditConfig) -> torch.Tensor:
    """Toy post-hoc edit: the last component set to 0, the norm ``cfg.preserve_energy`` names restored."""
    t = inp.sigma0.clone()
    t[-1] = 0.0
    return preserve_energy(inp.sigma0, t, cfg.preserve_energy)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(policy_registry, "POLICIES", policy_registry.POLICIES.copy())
    # the one line that adds an edit:
    register_policy("toy_tail_cut", role="posthoc", uses_sensitivity=False, needs_data=False, postprocess=False,
                    reads=("preserve_energy",))(toy_tail_cut)  # fmt: skip
    return "toy_tail_cut"


def test_a_registered_edit_runs_through_the_engine(registered, tiny_adapter, tmp_path):
    surgery = SurgeryConfig()
    prepared = prepare_data_free(tiny_adapter, surgery)
    path, manifest = write_candidate(prepared, registered, surgery, tmp_path / "toy", seed=42)
    assert manifest["policy"] == registered and manifest["role"] == "posthoc" and not manifest["needs_data"]
    assert manifest["parameters"] == {"preserve_energy": "l1"}  # what it read: its candidate's key
    written = load_adapter(path)
    assert set(written.modules) == set(load_adapter(tiny_adapter).modules)
    for name, m in json.loads((path / "edit_manifest.json").read_text())["modules"].items():
        before, after = torch.tensor(m["sigma_before"]), torch.tensor(m["sigma_after"])
        assert after[-1] == 0 and after.sum().item() == pytest.approx(before.sum().item(), rel=1e-5), name
    l2 = edit_sigmas(prepared, registered, EditConfig(preserve_energy="l2"))
    assert all(torch.linalg.vector_norm(s).item() == pytest.approx(
        torch.linalg.vector_norm(prepared.spectra[n].S).item(), rel=1e-5) for n, s in l2.items())


def test_a_registered_edit_is_keyed_and_listed_by_what_it_declares(registered):
    key = candidate_key("p" * 64, SurgeryConfig(), registered, 42)
    assert candidate_key("p" * 64, SurgeryConfig(edit=EditConfig(z_tau=0.5)), registered, 42) == key
    assert candidate_key("p" * 64, SurgeryConfig(edit=EditConfig(preserve_energy="l2")), registered, 42) != key
    row = next(r for r in policy_rows() if r.name == registered)
    assert row.settings == {"preserve_energy": "l1"} and row.role == "posthoc" and not row.needs_data


def test_the_registration_is_private_to_the_test(registered):
    from spectral_surgery.tasks.surgery.policies import list_policies

    assert registered in list_policies(None)


def test_other_tests_do_not_see_it():
    from spectral_surgery.tasks.surgery.policies import list_policies

    assert "toy_tail_cut" not in list_policies(None)
