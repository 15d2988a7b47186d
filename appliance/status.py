"""A live board of component states (decoder backends, tunnel, clients) for /healthz, systemd STATUS= and
mDNS TXT records. Components write their part; readers take a snapshot or subscribe to changes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Listener = Callable[[dict[str, Any]], None]


@dataclass
class StatusBoard:
    _parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    _listeners: list[Listener] = field(default_factory=list)

    def update(self, component: str, **values: Any) -> None:
        """Merge values into a component's part and tell the listeners if anything changed."""
        part = self._parts.setdefault(component, {})
        if all(part.get(k) == v for k, v in values.items()):
            return
        part.update(values)
        snapshot = self.snapshot()
        for listener in list(self._listeners):
            listener(snapshot)

    def get(self, component: str) -> dict[str, Any]:
        return copy.deepcopy(self._parts.get(component, {}))

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self._parts)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with a snapshot after every change; returns the function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)
