"""Races around the write-then-check assignment, replayed deterministically on
the in-memory desk (found in review): a failing check must not leave an
unchecked pick behind, and room freed while a pick stood must not be lost."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import anyio
import attrs
import pytest

from smartchat_core import (
    AsyncSmartChat,
    BackendError,
    Chat,
    ExecutiveCounters,
    ExecutiveStatus,
    Settings,
)
from smartchat_core.adapters.memory import MemoryChatStore, memory_ports
from smartchat_core.services._base import in_process
from smartchat_core.testing import ManualClock, RecordingSender

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, 9, tzinfo=timezone.utc)


async def _message(desk: AsyncSmartChat, number: int) -> Chat:
    return await desk.receive_customer_message(
        customer_id=f"+{number}", customer_name="c", customer_type="retail", text="hi"
    )


async def test_a_failing_check_takes_the_pick_back(monkeypatch: pytest.MonkeyPatch) -> None:
    async with AsyncSmartChat.in_memory(clock=ManualClock(T0)) as desk:
        await desk.register_executive("e1", name="A", customer_types={"retail"}, max_open_chats=1)
        await desk.set_executive_status("e1", "online")
        assert (await _message(desk, 1)).assigned_executive_id == "e1"
        desk._executives._capacity_hints.clear()  # as another process would

        async def down(executive_id: str) -> None:
            raise BackendError("injected: the executive store is down")

        monkeypatch.setattr(desk.ports.executives, "get", down)
        with pytest.raises(BackendError):
            await _message(desk, 2)
        monkeypatch.undo()
        assert (await desk.get_executive("e1")).open_chats == 1  # not over its limit
        counters = await desk.get_counters()
        assert (counters.open, counters.unassigned) == (2, 1)


async def test_room_freed_while_a_pick_stood_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    async with AsyncSmartChat.in_memory(clock=ManualClock(T0)) as desk:
        for executive_id in ("e1", "e2"):
            await desk.register_executive(
                executive_id, name=executive_id, customer_types={"retail"}, max_open_chats=1
            )
            await desk.set_executive_status(executive_id, "online")
        first = await _message(desk, 1)
        second = await _message(desk, 2)
        held_by_e1 = first if first.assigned_executive_id == "e1" else second
        # As another process would: no memory of who is full, so the pick is
        # written and checked.
        desk._executives._capacity_hints.clear()
        chats = desk.ports.chats
        real = chats.executive_counters
        armed = True

        async def counters(executive_ids: Iterable[str]) -> dict[str, ExecutiveCounters]:
            nonlocal armed
            ids = list(executive_ids)
            found = await real(ids)
            if armed and ids == ["e2"] and found["e2"].open_chats == 2:
                # The new chat stands with e2 (over its limit) and has left
                # the queue: e1 resolves its chat now, and the drain that
                # follows finds the queue empty.
                armed = False
                await desk.resolve_chat(held_by_e1.id, executive_id="e1")
            return found

        monkeypatch.setattr(chats, "executive_counters", counters)
        third = await _message(desk, 3)
        monkeypatch.undo()
        assert not armed, "the race was not replayed"
        assert third.assigned_executive_id == "e1"
        assert (await desk.get_chat(third.id)).assigned_executive_id == "e1"
        assert (await desk.get_counters()).unassigned == 0


class _ReplyInFlight:
    """A chat store whose ``assign`` writes at once but answers when told
    (a remote store's reply in flight): a cancellation can land in between."""

    def __init__(self, inner: MemoryChatStore) -> None:
        self.inner = inner
        self.written = anyio.Event()
        self.reply = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def assign(self, *args: Any, **kwargs: Any) -> Any:
        result = await self.inner.assign(*args, **kwargs)
        self.written.set()
        await self.reply.wait()
        return result


async def test_a_cancelled_assignment_still_checks_its_pick() -> None:
    """The caller is cancelled while the write's reply is in flight, and the
    executive left meanwhile: the check still runs (shielded) and takes the
    pick back, instead of leaving the chat with an offline executive."""
    clock = ManualClock(T0)
    ports = memory_ports(Settings(), clock, RecordingSender())
    store = ports.chats
    assert isinstance(store, MemoryChatStore)
    slow = _ReplyInFlight(store)
    async with AsyncSmartChat(attrs.evolve(ports, chats=slow)) as desk:  # type: ignore[arg-type]
        await desk.register_executive("e1", name="A", customer_types={"retail"})
        chat = await _message(desk, 1)  # nobody online: it waits
        # e1 comes online in the stores only (no drain), so the assignment
        # below is the one to pick it.
        await ports.executives.set_status("e1", ExecutiveStatus.ONLINE, now=clock.now())
        await ports.rotation.add("retail", "e1")
        async with anyio.create_task_group() as group:
            group.start_soon(desk.assign_chat_round_robin, chat.id)
            await slow.written.wait()  # the chat stands with e1, unchecked
            # e1 leaves (its release ran before our write landed) ...
            await ports.executives.set_status("e1", ExecutiveStatus.OFFLINE, now=clock.now())
            group.cancel_scope.cancel()  # ... and the caller gives up
            slow.reply.set()
        after = await store.get(chat.id)
        assert after is not None and after.is_waiting, after
        assert (await desk.get_counters()).unassigned == 1


def test_only_the_exact_in_memory_stores_go_unshielded() -> None:
    class Subclass(MemoryChatStore):
        pass

    store = MemoryChatStore()
    assert in_process(
        store, memory_ports(Settings(), ManualClock(T0), RecordingSender()).executives
    )
    assert not in_process(Subclass())
    assert not in_process(_ReplyInFlight(store))
