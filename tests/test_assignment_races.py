"""Races around the write-then-check assignment, replayed deterministically on
the in-memory desk (found in review): a failing check must not leave an
unchecked pick behind, and room freed while a pick stood must not be lost."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

import pytest

from smartchat_core import AsyncSmartChat, BackendError, Chat, ExecutiveCounters
from smartchat_core.testing import ManualClock

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
