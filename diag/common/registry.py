"""Provides Registry: name -> entry, filled from an explicit list of modules, failures reported.

The one registry type of every extension point (sources, importers, rules, preflight checks,
commands), after node_exporter's `registerCollector`: each registry lists its built-in modules
once (one line per plug-in), and each module registers its entries as it is imported
(`@REGISTRY.register(name)` or `REGISTRY.add(name, entry)`). The list is also the order:
entries come in the order of the modules that define them (a module imported early by another
one does not jump ahead), then in the order each module registers them. `load()` imports the
list once; a module that fails to import, with any exception, is kept in `failures` with the
error, so the caller reports it (`vfiowatch check` shows a failed line, the agent logs it) and
the plug-in never vanishes silently.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """A module of a registry's list that could not be imported."""

    registry: str
    """What the registry holds (`source`, `rule`, ...)."""
    module: str
    """The module's dotted path."""
    error: str
    """The exception, as `Type: message`."""

    def text(self) -> str:
        return f"{self.registry} module {self.module} cannot be imported: {self.error}"


class Registry(Generic[T]):
    """Entries by name in registration order, from the modules listed in `modules`."""

    def __init__(self, what: str, modules: Sequence[str]) -> None:
        self.what = what
        """What an entry is (`source`, `importer`, `rule`, `check`, `command`), for messages."""
        self.modules = list(modules)
        """The built-in modules that register entries, in order (one line per plug-in)."""
        self.failures: list[LoadFailure] = []
        self._entries: dict[str, T] = {}
        self._modules: dict[str, str] = {}
        """Entry name -> the module that defines it (orders the entries)."""
        self._ordered: dict[str, T] | None = None
        self._loaded = False

    def add(self, name: str, entry: T, *, module: str | None = None) -> T:
        """Register `entry` under `name`; a name registered twice is a programming error.

        `module` is the module that defines the entry, for ordering; by default the entry's own
        `__module__` (a class's, a function's, or an instance's class's)."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self._entries[name] = entry
        self._modules[name] = module or str(getattr(entry, "__module__", ""))
        self._ordered = None
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""
        return lambda entry: self.add(name, entry)

    def load(self) -> Registry[T]:
        """Import every listed module once (registering its entries); keep each failure."""
        if not self._loaded:
            self._loaded = True
            for module in self.modules:
                try:
                    importlib.import_module(module)
                except Exception as exc:  # any error: reported, never a silent skip
                    self.failures.append(
                        LoadFailure(self.what, module, f"{type(exc).__name__}: {exc}"))
        return self

    def _in_order(self) -> dict[str, T]:
        """Entries sorted by the list position of the module defining them (stable)."""
        if self._ordered is None:
            rank = {m: i for i, m in enumerate(self.modules)}
            last = len(rank)

            def key(item: tuple[str, T]) -> int:
                return rank.get(self._modules[item[0]], last)

            self._ordered = dict(sorted(self._entries.items(), key=key))
        return self._ordered

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def get(self, name: str) -> T | None:
        return self._entries.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._in_order()))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._in_order())

    def items(self) -> list[tuple[str, T]]:
        return list(self._in_order().items())

    def values(self) -> list[T]:
        return list(self._in_order().values())
