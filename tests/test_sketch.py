"""The public API sketch of SPEC §12, as written there, under asyncio and
trio, and through the blocking SmartChat from plain threads."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from smartchat_core import AsyncSmartChat, Settings, SlaTier, SmartChat
from smartchat_core.testing import ManualClock, RecordingSender

pytestmark = pytest.mark.anyio

SEED_TIERS = (
    SlaTier("alert", after=timedelta(minutes=3), recipient="+910000000001",
            dedup_ttl=timedelta(seconds=300)),
    SlaTier("escalation", after=timedelta(minutes=10),
            recipient="+910000000002", dedup_ttl=timedelta(seconds=700)),
)  # fmt: skip


async def test_sketch() -> None:
    clock = ManualClock(datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc))
    sender = RecordingSender()
    settings = Settings(sla_tiers=SEED_TIERS)
    async with AsyncSmartChat.in_memory(settings=settings, clock=clock, sender=sender) as desk:
        await desk.register_executive(
            "e1", name="Asha", customer_types={"retail"}, max_open_chats=None
        )
        await desk.set_executive_status("e1", "online")
        chat = await desk.receive_customer_message(
            customer_id="+919800000001", customer_name="Ravi", customer_type="retail", text="hi"
        )
        assert chat.assigned_executive_id == "e1"
        clock.advance(timedelta(minutes=4))
        alerts = await desk.run_sla_check()  # the customer waited 4 min: alert
        assert [(a.tier, a.recipient) for a in alerts] == [("alert", "+910000000001")]
        assert len(sender.to("+910000000001")) == 1
        assert await desk.run_sla_check() == []  # dedup window
        await desk.send_executive_message(chat.id, executive_id="e1", text="hello")
        assert sender.to("+919800000001") == ["hello"]
        await desk.apply_tag(chat.id, "vip")
        clock.advance(timedelta(minutes=2))
        tagged = await desk.run_awaiting_check()  # e1 spoke last 2 min ago: awaiting
        assert [c.id for c in tagged] == [chat.id]
        assert await desk.run_inactivity_check() == []  # e1 was active 2 min ago: stays
        executive = await desk.get_executive("e1")
        assert (executive.open_chats, executive.awaiting_chats) == (1, 1)
        assert executive.status.value == "online"
        resolved = await desk.resolve_chat(chat.id, executive_id="e1")
        assert resolved.is_resolved and resolved.tags == ()
        assert (await desk.get_executive("e1")).open_chats == 0
        rating = await desk.rate_chat(chat.id, score=5, comment="quick")
        assert rating.executive_id == "e1"
        page = await desk.fetch_all_chats(assigned_executive_id="e1", limit=20)
        assert [c.id for c in page.items] == [chat.id] and page.total == 1
        async with desk.subscribe(rooms={"dashboard"}) as events:
            again = await desk.receive_customer_message(
                customer_id="+919800000001",
                customer_name="Ravi",
                customer_type="retail",
                text="one more thing",
            )
            assert again.id == chat.id and again.assigned_executive_id == "e1"
            names = [(await events.__anext__()).name for _ in range(2)]
            assert names == ["chat_message", "chat_assigned"]


def test_sketch_blocking_from_threads() -> None:
    clock = ManualClock(datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc))
    sender = RecordingSender()
    with SmartChat.in_memory(
        settings=Settings(sla_tiers=SEED_TIERS), clock=clock, sender=sender
    ) as desk:
        desk.register_executive("e1", name="Asha", customer_types={"retail"})
        desk.set_executive_status("e1", "online")
        chats: list[str] = []
        errors: list[BaseException] = []

        def customer(n: int) -> None:
            try:
                chat = desk.receive_customer_message(
                    customer_id=f"+9198000000{n:02d}",
                    customer_name=f"C{n}",
                    customer_type="retail",
                    text="hi",
                )
                chats.append(chat.id)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=customer, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors and len(chats) == 8
        assert desk.get_executive("e1").open_chats == 8
        clock.advance(timedelta(minutes=4))
        assert len(desk.run_sla_check()) == 8
        first = chats[0]
        desk.send_executive_message(first, executive_id="e1", text="hello")
        desk.apply_tag(first, "vip")
        clock.advance(timedelta(minutes=2))
        assert [c.id for c in desk.run_awaiting_check()] == [first]
        assert desk.run_inactivity_check() == []
        assert desk.get_executive("e1").awaiting_chats == 1
        desk.resolve_chat(first, executive_id="e1")
        desk.rate_chat(first, score=5, comment="quick")
        page = desk.fetch_all_chats(assigned_executive_id="e1", status="open", limit=20)
        assert page.total == 7
        with desk.subscribe(rooms={"dashboard"}) as events:
            desk.apply_tag(chats[1], "vip")
            event = events.get(timeout=5)
            assert event is not None and event.name == "tag_updated"
