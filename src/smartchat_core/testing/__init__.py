"""Test kit: a manual clock, recording fakes, and the contract suite.

These are first-class fakes: use them in your own tests and simulations.
The contract suite (:mod:`smartchat_core.testing.contract`) checks any
backend against the ports' contracts; see the adapters page of the docs.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone

import anyio
import anyio.from_thread
import anyio.lowlevel
import attrs

from .._errors import DeliveryError
from .._events import Event
from ..abc import Clock, EventPublisher, MessageSender
from ..adapters.memory import MemoryEventPublisher

__all__ = ["ManualClock", "RecordingPublisher", "RecordingSender", "SentMessage"]


@attrs.define(eq=False)
class _Sleeper:
    deadline: datetime
    event: anyio.Event
    token: anyio.lowlevel.EventLoopToken
    thread: int


class ManualClock(Clock):
    """Virtual time that moves only when told to.

    :meth:`advance` and :meth:`set` wake every task sleeping until a moment
    now reached; they may be called from the event loop or from any other
    thread (e.g. a test driving a blocking :class:`~smartchat_core.SmartChat`).
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start.astimezone(timezone.utc)
        self._sleepers: list[_Sleeper] = []
        self._mutex = threading.Lock()

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move time forward by ``delta`` (not backwards); return the new now."""
        if delta < timedelta(0):
            raise ValueError("time does not go backwards")
        return self.set(self._now + delta)

    def set(self, moment: datetime) -> datetime:
        """Move time forward to ``moment``."""
        if moment.tzinfo is None:
            raise ValueError("moment must be timezone-aware")
        with self._mutex:
            if moment < self._now:
                raise ValueError("time does not go backwards")
            self._now = moment
            due = [s for s in self._sleepers if s.deadline <= moment]
            self._sleepers = [s for s in self._sleepers if s.deadline > moment]
        for sleeper in due:
            if sleeper.thread == threading.get_ident():
                sleeper.event.set()
            else:
                anyio.from_thread.run_sync(sleeper.event.set, token=sleeper.token)
        return moment

    async def sleep_until(self, deadline: datetime) -> None:
        with self._mutex:
            if deadline <= self._now:
                sleeper = None
            else:
                sleeper = _Sleeper(
                    deadline, anyio.Event(), anyio.lowlevel.current_token(), threading.get_ident()
                )
                self._sleepers.append(sleeper)
        if sleeper is None:
            await anyio.lowlevel.checkpoint()
            return
        try:
            await sleeper.event.wait()
        finally:
            with self._mutex:
                if sleeper in self._sleepers:
                    self._sleepers.remove(sleeper)

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock."""
        return len(self._sleepers)

    @property
    def next_deadline(self) -> datetime | None:
        """The earliest moment a sleeping task waits for."""
        with self._mutex:
            return min((s.deadline for s in self._sleepers), default=None)


@attrs.frozen
class SentMessage:
    """One outbound WhatsApp message."""

    recipient: str
    text: str


class RecordingSender(MessageSender):
    """Keeps what would have been sent in :attr:`sent`.

    Set :attr:`fail` to make every send raise
    :class:`~smartchat_core.DeliveryError` (to test failure paths).
    """

    def __init__(self) -> None:
        self.sent: list[SentMessage] = []
        self.fail = False

    async def send_text(self, to: str, text: str) -> None:
        if self.fail:
            raise DeliveryError(f"sending to {to} failed (RecordingSender.fail is set)")
        self.sent.append(SentMessage(to, text))

    def to(self, recipient: str) -> list[str]:
        """Texts sent to ``recipient``, in order."""
        return [m.text for m in self.sent if m.recipient == recipient]


class RecordingPublisher(EventPublisher):
    """An in-process publisher that also keeps every event in :attr:`events`."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._fanout = MemoryEventPublisher()

    async def publish(self, event: Event) -> None:
        self.events.append(event)
        await self._fanout.publish(event)

    def subscribe(self, rooms: Iterable[str]) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        return self._fanout.subscribe(rooms)

    def named(self, name: str) -> list[Event]:
        """Events with this name, in order."""
        return [e for e in self.events if e.name == name]

    def clear(self) -> None:
        self.events.clear()
