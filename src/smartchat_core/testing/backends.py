"""The table of backends the contract suite and the state machine run over.

A :class:`Backend` builds a fresh, isolated set of :class:`~smartchat_core.Ports`
(new database, new key prefix) for one test.  Third-party adapters prove
themselves by adding their own :class:`Backend` to the table they test with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import attrs

from .._settings import Settings
from ..abc import Clock, EventPublisher, MessageSender
from ..adapters.memory import memory_ports
from ..services import Ports

__all__ = ["MEMORY", "Backend", "BackendFactory"]

BackendFactory = Callable[
    [Settings, Clock, MessageSender, EventPublisher | None],
    AbstractAsyncContextManager[Ports],
]
"""``factory(settings, clock, sender, publisher)`` -> async context manager of
fresh :class:`Ports`.  ``publisher=None`` means "the backend's own"."""


@attrs.frozen
class Backend:
    """One entry of the backend table."""

    name: str
    factory: BackendFactory
    multi_process: bool = False
    """Whether two Ports built from one instance share state (real servers)."""
    asyncio_only: bool = False
    """Whether the adapters run under asyncio only (e.g. a driver without trio
    support); the contract suite skips them under other event loops."""

    def ports(
        self,
        settings: Settings,
        clock: Clock,
        sender: MessageSender,
        publisher: EventPublisher | None = None,
    ) -> AbstractAsyncContextManager[Ports]:
        return self.factory(settings, clock, sender, publisher)


@asynccontextmanager
async def _memory(
    settings: Settings, clock: Clock, sender: MessageSender, publisher: EventPublisher | None
) -> AsyncIterator[Ports]:
    yield memory_ports(settings, clock, sender, publisher)


MEMORY = Backend("memory", _memory)
