"""One generic registry of names, for every kind of named thing: policies, benchmarks, calibration loaders, evaluators.

``Registry[T]`` (after lm-eval's ``lm_eval/api/registry.py``) holds ``name -> T`` with aliases, refuses a name or
alias that is already taken (as a name or as an alias), suggests close matches for an unknown name, accepts lazy
``"module:attr"`` entries that are imported on first use, and can be frozen. Every lookup failure raises the one
error type :class:`UnknownNameError`, which is both a ``KeyError`` and a ``ValueError`` so either ``except`` catches
it, and whose message names the kind, the closest matches and every known name.

Example:
    >>> colours = Registry("colour")
    >>> colours.add("red", 1, aliases=("rouge",))
    1
    >>> colours.get("rouge")
    1
    >>> colours.get("reed")
    Traceback (most recent call last):
    ...
    tasks.names.UnknownNameError: unknown colour 'reed'. Did you mean 'red'? Known: red, rouge.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError, KeyError):
    """A name no registry entry has (both a ValueError and a KeyError, so either ``except`` catches it).

    Attributes:
        kind: What was looked up (``"policy"``, ``"benchmark"``, ...).
        name: The unknown name.
        close: The closest known names (may be empty).
    """

    def __init__(self, message: str, *, kind: str = "", name: str = "", close: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.kind, self.name, self.close = kind, name, close

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


def unknown_name(kind: str, name: object, known: list[str], *, hint: str = "") -> UnknownNameError:
    """The one error of an unknown name of ``kind`` among ``known`` (also for fixed tables that are not registries).

    The message: ``unknown <kind> '<name>'. Did you mean '<close>'? Known: <a>, <b>. <hint>``.
    """
    known = sorted(known)
    close = tuple(difflib.get_close_matches(str(name), known, n=3))
    suggestion = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    tail = f" {hint}" if hint else ""
    return UnknownNameError(f"unknown {kind} {name!r}.{suggestion} Known: {', '.join(known)}.{tail}",
                            kind=kind, name=str(name), close=close)


class _Lazy:
    """A ``"module:attr"`` placeholder, imported on first lookup."""

    __slots__ = ("target",)

    def __init__(self, target: str) -> None:
        module, sep, attr = target.partition(":")
        if not module or not sep or not attr:
            raise ValueError(f"a lazy registry entry is 'module:attr', got {target!r}")
        self.target = target

    def load(self) -> object:
        module, _, attr = self.target.partition(":")
        obj: object = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


class Registry(Generic[T]):
    """Names (and aliases) of one kind of thing, each bound once.

    Args:
        kind: What the names name, for messages (``"policy"``).
        unknown_hint: Appended to the message of an unknown name (how to fix it, e.g. "or give a .jsonl path").
        check: Called with ``(name, value)`` when a value is bound (eagerly, or when a lazy entry is loaded);
            raises to refuse it (lm-eval's ``base_cls`` check, generalised).
    """

    def __init__(self, kind: str, *, unknown_hint: str = "", check: Callable[[str, T], None] | None = None) -> None:
        self.kind = kind
        self.unknown_hint = unknown_hint
        self._check = check
        self._entries: dict[str, T | _Lazy] = {}
        self._aliases: dict[str, str] = {}
        self._frozen = False

    # -- binding
    def _claim(self, names: tuple[str, ...]) -> None:
        if self._frozen:
            raise RuntimeError(f"the {self.kind} registry is frozen; register before it is frozen")
        for n in names:
            if not isinstance(n, str) or not n.strip():
                raise ValueError(f"{self.kind} names must be non-empty strings, got {n!r}")
            if n in self._entries or n in self._aliases:
                raise ValueError(f"{self.kind} name {n!r} is already registered; pick another name")
        if len(set(names)) != len(names):
            raise ValueError(f"{self.kind} {names[0]!r}: a name appears twice among its aliases {names[1:]}")

    def add(self, name: str, value: T, *, aliases: tuple[str, ...] = ()) -> T:
        """Bind ``name`` (and ``aliases``) to ``value``; returns ``value``.

        Raises:
            ValueError: an empty name, or one already taken as a name or an alias (nothing is bound then).
        """
        self._claim((name, *aliases))
        if self._check is not None:
            self._check(name, value)
        self._entries[name] = value
        self._aliases.update({a: name for a in aliases})
        return value

    def add_lazy(self, name: str, target: str, *, aliases: tuple[str, ...] = ()) -> None:
        """Bind ``name`` to ``"module:attr"``, imported at its first :meth:`get` (heavy backends load only when
        used)."""
        lazy = _Lazy(target)
        self._claim((name, *aliases))
        self._entries[name] = lazy
        self._aliases.update({a: name for a in aliases})

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@reg.register("name")`` binds the decorated object."""

        def deco(value: T) -> T:
            return self.add(name, value, aliases=aliases)

        return deco

    def copy(self) -> Registry[T]:
        """An independent registry with the same entries (tests register into a copy and drop it)."""
        other: Registry[T] = Registry(self.kind, unknown_hint=self.unknown_hint, check=self._check)
        other._entries, other._aliases = dict(self._entries), dict(self._aliases)
        return other

    def freeze(self) -> None:
        """Refuse further registrations (lookups still work)."""
        self._frozen = True

    # -- lookup
    def aliases(self) -> dict[str, str]:
        """Every alias with the name it resolves to (a copy)."""
        return dict(self._aliases)

    def canonical(self, name: str) -> str:
        """The registered name ``name`` stands for (itself, or what its alias points at).

        Raises:
            UnknownNameError: ``name`` is neither a name nor an alias.
        """
        key = self._aliases.get(name, name)
        if key not in self._entries:
            raise self.unknown(name)
        return key

    def get(self, name: str) -> T:
        """The value bound to ``name`` or one of its aliases, importing a lazy entry on first use.

        Raises:
            UnknownNameError: unknown name; the message lists the closest matches and every known name.
        """
        key = self.canonical(name)
        value = self._entries[key]
        if isinstance(value, _Lazy):
            value = value.load()
            if self._check is not None:
                self._check(key, value)
            self._entries[key] = value
        return value  # type: ignore[return-value]

    def unknown(self, name: object) -> UnknownNameError:
        """The error for an unknown ``name`` (for callers that validate before looking up)."""
        return unknown_name(self.kind, name, [*self._entries, *self._aliases], hint=self.unknown_hint)

    def names(self) -> list[str]:
        """Registered names (aliases excluded), in registration order."""
        return list(self._entries)

    def aliases(self) -> dict[str, str]:
        """Alias -> the name it stands for."""
        return dict(self._aliases)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
