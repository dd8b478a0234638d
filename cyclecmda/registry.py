"""Small name -> constructor registries for networks (timm style)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, TypeVar

from cyclecmda.errors import unknown

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """Maps names to constructors; an unknown name raises ConfigError listing the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        def decorator(fn: F) -> F:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} '{key}' is already registered")
            self._entries[key] = fn
            return fn

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            raise unknown(self.kind, name, self.names())
        return self._entries[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
