"""Several independent desks (separate connections, as separate app
processes would have) working on the same chats at once, on the real
servers: SecantusDB (MongoDB wire protocol) and redis-server.

Invariants 1, 2, 4 and 6 of SPEC §6 must hold afterwards.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from smartchat_core import AsyncSmartChat, ExecutiveStatus, Settings
from smartchat_core.testing import ManualClock, RecordingPublisher, RecordingSender

pytestmark = pytest.mark.anyio

TYPES = ("retail", "wholesale")
EXECUTIVES = {
    "e1": {"retail"},
    "e2": {"retail", "wholesale"},
    "e3": {"wholesale"},
    "e4": {"retail"},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client


@pytest.fixture
async def desks(
    redis_server: Any, mongo_url: str, mongo_database: str
) -> AsyncIterator[list[tuple[AsyncSmartChat, RecordingPublisher]]]:
    settings = Settings(redis_prefix=f"t{uuid.uuid4().hex[:8]}")
    clock = ManualClock()
    async with AsyncExitStack() as stack:
        result = []
        for _ in range(3):
            publisher = RecordingPublisher()
            desk = AsyncSmartChat.from_urls(
                mongodb_url=mongo_url,
                redis_url=redis_server.url,
                database=mongo_database,
                settings=settings,
                clock=clock,
                sender=RecordingSender(),
                publisher=publisher,
            )
            result.append((await stack.enter_async_context(desk), publisher))
        yield result


async def _check_invariants(desk: AsyncSmartChat) -> None:
    executives = {e.id: e for e in await desk.list_executives()}
    page = await desk.fetch_all_chats(status="open", limit=200)
    assert page.total == len(page.items)
    open_by_executive: Counter[str] = Counter()
    by_type: dict[str, list[int]] = {t: [0, 0, 0] for t in TYPES}
    for chat in page.items:
        counters = by_type[chat.customer_type]
        counters[0] += 1
        counters[2] += "awaiting" in chat.tags
        assert len(set(chat.tags)) == len(chat.tags)  # set semantics (6)
        if chat.assigned_executive_id is None:
            counters[1] += 1
            # (4) a waiting chat only when nobody of its type is online
            online = [
                e for e in executives.values()
                if e.status is ExecutiveStatus.ONLINE and chat.customer_type in e.customer_types
            ]  # fmt: skip
            assert not online, f"chat {chat.id} waits while {online} are online"
            continue
        holder = executives[chat.assigned_executive_id]
        # (1) one assignee, serving the type; (4) never an offline executive
        assert chat.customer_type in holder.customer_types
        assert holder.status is not ExecutiveStatus.OFFLINE
        open_by_executive[holder.id] += 1
    # (2) counters equal a recount from the chats
    for executive in executives.values():
        assert executive.open_chats == open_by_executive[executive.id], executive
    counters = await desk.get_counters()
    for customer_type, (opened, unassigned, awaiting) in by_type.items():
        got = counters.by_type.get(customer_type)
        assert got is not None
        assert (got.open, got.unassigned, got.awaiting) == (opened, unassigned, awaiting)
    assert await desk.recount() == counters


async def test_desks_on_real_servers_share_the_same_chats(
    desks: list[tuple[AsyncSmartChat, RecordingPublisher]],
) -> None:
    a, b, c = (desk for desk, _ in desks)
    for executive_id, types in EXECUTIVES.items():
        await a.register_executive(executive_id, name=executive_id, customer_types=types)
        await b.set_executive_status(executive_id, "online")
    customers = [f"+91980000{n:04d}" for n in range(24)]

    async def write(desk: AsyncSmartChat, n: int) -> None:
        await desk.receive_customer_message(
            customer_id=customers[n], customer_name=f"C{n}", customer_type=TYPES[n % 2],
            text=f"hello {n}",
        )  # fmt: skip

    # Round 1: the same customers write through three desks at once.
    async with anyio.create_task_group() as group:
        for n in range(len(customers)):
            for desk in (a, b, c):
                group.start_soon(write, desk, n)
    page = await a.fetch_all_chats(status="open", limit=200)
    assert page.total == len(customers)  # one chat per customer, none lost
    assert all(chat.assigned_executive_id for chat in page.items)
    await _check_invariants(a)
    chat_ids = [chat.id for chat in page.items]
    # (1) written through three desks at once, each chat was assigned once
    assigned = Counter(
        event.payload["chat_id"]
        for _, publisher in desks
        for event in publisher.named("chat_assigned")
    )
    assert assigned == dict.fromkeys(chat_ids, 1)

    # Round 2: assign, release, tag, untag and resolve the same chats at once.
    async with anyio.create_task_group() as group:
        group.start_soon(b.set_executive_status, "e1", "offline")
        group.start_soon(c.release_and_reassign_chats, "e3")
        for chat_id in chat_ids[:16]:
            for desk in (a, b, c):
                group.start_soon(desk.assign_chat_round_robin, chat_id)
                group.start_soon(desk.apply_tag, chat_id, "vip")
                group.start_soon(desk.apply_tag, chat_id, "awaiting")
        for chat_id in chat_ids[16:]:
            for desk in (a, b, c):
                group.start_soon(desk.resolve_chat, chat_id)
    await _check_invariants(c)

    # Every chat resolved exactly once although three desks resolved it (6).
    resolved = Counter(
        event.payload["chat_id"]
        for _, publisher in desks
        for event in publisher.named("chat_resolved")
    )
    assert resolved == dict.fromkeys(chat_ids[16:], 1)
    # A tag added by three desks at once was added once (6).
    added = Counter(
        (event.payload["chat_id"], event.payload["tag"])
        for _, publisher in desks
        for event in publisher.named("tag_updated")
        if event.payload["action"] == "added"
    )
    assert set(added.values()) == {1}
    assert len(added) == 2 * 16

    # Round 3: everyone but e4 leaves; then e2 comes back and takes wholesale.
    async with anyio.create_task_group() as group:
        for executive_id, desk in (("e2", a), ("e3", b), ("e1", c)):
            group.start_soon(desk.set_executive_status, executive_id, "offline")
    await _check_invariants(b)
    waiting = await a.fetch_all_chats(status="open", assigned_executive_id="unassigned")
    assert {chat.customer_type for chat in waiting.items} == {"wholesale"}
    await c.set_executive_status("e2", "online")
    await _check_invariants(a)
    assert (await a.fetch_all_chats(status="open", assigned_executive_id="unassigned")).total == 0
