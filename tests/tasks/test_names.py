"""tasks/names.py: the one generic registry of names (aliases, collisions, did-you-mean, lazy entries, freeze)."""

from __future__ import annotations

import pytest

from spectral_surgery.tasks.names import Registry, UnknownNameError, unknown_name


def test_add_get_and_aliases():
    reg: Registry[int] = Registry("colour")
    assert reg.add("red", 1, aliases=("rouge",)) == 1
    assert reg.get("red") == 1 and reg.get("rouge") == 1 and reg.canonical("rouge") == "red"
    assert reg.names() == ["red"] and "rouge" in reg and "blue" not in reg and len(reg) == 1
    assert reg.aliases() == {"rouge": "red"}


@pytest.mark.parametrize("name, aliases", [("red", ()), ("rouge", ()), ("blue", ("red",)), ("blue", ("rouge",)),
                                           ("blue", ("b", "b")), ("", ())])
def test_a_taken_or_empty_name_is_refused_and_nothing_is_bound(name, aliases):
    reg: Registry[int] = Registry("colour")
    reg.add("red", 1, aliases=("rouge",))
    with pytest.raises(ValueError):
        reg.add(name, 2, aliases=aliases)
    assert reg.names() == ["red"] and reg.aliases() == {"rouge": "red"}


def test_unknown_name_is_one_error_type_with_close_matches():
    reg: Registry[int] = Registry("colour", unknown_hint="(or give a hex code)")
    reg.add("green", 1)
    reg.add("grey", 2)
    with pytest.raises(UnknownNameError) as e:
        reg.get("gren")
    err = e.value
    assert isinstance(err, KeyError) and isinstance(err, ValueError)
    assert err.kind == "colour" and err.name == "gren" and err.close[0] == "green"
    assert str(err) == "unknown colour 'gren'. Did you mean 'green' or 'grey'? Known: green, grey. (or give a hex code)"
    assert str(unknown_name("profile", "zzz", ["paper", "offline"])) == "unknown profile 'zzz'. Known: offline, paper."


def test_lazy_entries_import_on_first_use_and_are_checked():
    seen = []
    reg: Registry[object] = Registry("thing", check=lambda name, value: seen.append((name, value)))
    reg.add_lazy("join", "os.path:join", aliases=("j",))
    assert seen == []  # nothing imported yet
    import os.path

    assert reg.get("j") is os.path.join and seen == [("join", os.path.join)]
    reg.get("join")
    assert len(seen) == 1  # loaded once
    with pytest.raises(ValueError, match="module:attr"):
        reg.add_lazy("bad", "no_colon")


def test_a_check_refuses_a_value():
    def only_ints(name: str, value: object) -> None:
        if not isinstance(value, int):
            raise TypeError(f"{name}: not an int")

    reg: Registry[int] = Registry("number", check=only_ints)
    with pytest.raises(TypeError, match="x: not an int"):
        reg.add("x", "1")  # type: ignore[arg-type]
    assert "x" not in reg


def test_decorator_copy_and_freeze():
    reg: Registry[object] = Registry("fn")

    @reg.register("f", aliases=("g",))
    def f():
        return 1

    assert reg.get("g") is f
    other = reg.copy()
    other.add("h", 3)
    assert "h" in other and "h" not in reg
    reg.freeze()
    with pytest.raises(RuntimeError, match="frozen"):
        reg.add("z", 0)
    assert reg.get("f") is f


def test_every_kind_of_name_uses_it():
    """Policies, benchmarks, calibration loaders and evaluators: one registry type, one error type."""
    from spectral_surgery.tasks.evaluation.benchmarks import BENCHMARKS, get_benchmark
    from spectral_surgery.tasks.evaluation.evaluate import EVALUATORS, get_evaluator
    from spectral_surgery.tasks.surgery.calib_data import LOADERS, get_calib_loader
    from spectral_surgery.tasks.surgery.policies import get_policy
    from spectral_surgery.tasks.surgery.policy_registry import POLICIES

    for reg, get, typo in [(POLICIES, get_policy, "smoth_abs"), (BENCHMARKS, get_benchmark, "ss_mcc"),
                           (LOADERS, get_calib_loader, "gsm8"), (EVALUATORS, get_evaluator, "fak")]:
        assert isinstance(reg, Registry)
        with pytest.raises(UnknownNameError) as e:
            get(typo)
        assert e.value.close, f"{reg.kind}: no suggestion for {typo!r}"
