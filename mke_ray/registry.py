"""A name -> object registry, filled by a decorator or, for objects whose modules are slow to import, by a
``"module:attribute"`` path that is imported the first time the name is looked up."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class _Lazy:
    module: str
    attribute: str


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T | _Lazy] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            self._add(name, obj)
            return obj

        return add

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``name`` as the object at ``target`` ("package.module:attribute"), imported by ``get``, so
        that listing the names imports nothing."""
        module, colon, attribute = target.partition(":")
        if not (module and colon and attribute):
            raise ValueError(f"{self.kind} {name!r}: {target!r} is not 'module:attribute'")
        self._add(name, _Lazy(module, attribute))

    def _add(self, name: str, obj: T | _Lazy) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            obj = self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None
        if isinstance(obj, _Lazy):
            obj = self._items[name] = getattr(import_module(obj.module), obj.attribute)
        return obj

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
