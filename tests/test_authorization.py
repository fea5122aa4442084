"""The actor rule: executives act on their own chats only; supervisors on
everything; customers rate with the signed token of the resolution message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from smartchat_core import (
    Actor,
    AlreadyRatedError,
    AsyncSmartChat,
    PermissionDeniedError,
    Settings,
)
from smartchat_core.testing import ManualClock, RecordingSender

pytestmark = pytest.mark.anyio

E1, E2, BOSS = Actor.executive("e1"), Actor.executive("e2"), Actor.supervisor("boss")


@pytest.fixture
async def desk() -> AsyncIterator[AsyncSmartChat]:
    settings = Settings(
        rating_secret="s3cret",
        resolution_message="Rate us: https://x/rate/{chat_id}?t={rating_token}",
    )
    async with AsyncSmartChat.in_memory(
        settings=settings, clock=ManualClock(), sender=RecordingSender()
    ) as desk:
        for executive in ("e1", "e2"):
            await desk.register_executive(executive, name=executive, customer_types={"retail"})
            await desk.set_executive_status(executive, "online")
        yield desk


async def _chat(desk: AsyncSmartChat, customer: str) -> str:
    chat = await desk.receive_customer_message(
        customer_id=customer, customer_name=customer, customer_type="retail", text="hi"
    )
    return chat.id


async def test_executive_acts_only_on_own_chats(desk: AsyncSmartChat) -> None:
    mine = await _chat(desk, "+1")  # e1
    theirs = await _chat(desk, "+2")  # e2
    assert (await desk.get_chat(mine)).assigned_executive_id == "e1"
    await desk.send_executive_message(mine, executive_id="e1", text="hello", actor=E1)
    await desk.apply_tag(mine, "vip", actor=E1)
    for call in (
        desk.send_executive_message(theirs, executive_id="e1", text="x", actor=E1),
        desk.apply_tag(theirs, "vip", actor=E1),
        desk.remove_tag(theirs, "vip", actor=E1),
        desk.resolve_chat(theirs, actor=E1),
        desk.get_chat(theirs, actor=E1),
        desk.set_executive_status("e2", "offline", actor=E1),
        desk.heartbeat("e2", actor=E1),
        desk.register_executive("e3", name="x", customer_types={"retail"}, actor=E1),
        desk.assign_chat_round_robin(theirs, actor=E1),
        desk.release_and_reassign_chats("e2", actor=E1),
        desk.assign_waiting_chats(actor=E1),
        desk.run_sla_check(actor=E1),
        desk.recount(actor=E1),
        desk.fetch_all_chats(assigned_executive_id="e2", actor=E1),
        desk.fetch_all_chats(assigned_executive_id="unassigned", actor=E1),
    ):
        with pytest.raises(PermissionDeniedError):
            await call
    theirs_chat = await desk.get_chat(theirs)
    assert theirs_chat.tags == ()
    assert not theirs_chat.is_resolved
    assert (await desk.get_executive("e2")).status.value == "online"
    page = await desk.fetch_all_chats(actor=E1)  # "My chats"
    assert [c.id for c in page.items] == [mine]
    resolved = await desk.resolve_chat(mine, actor=E1)
    assert resolved.is_resolved
    with pytest.raises(PermissionDeniedError):
        desk.subscribe(rooms={"dashboard"}, actor=E1)
    async with desk.subscribe(rooms={"executive:e1"}, actor=E1):
        pass


async def test_supervisor_does_everything(desk: AsyncSmartChat) -> None:
    theirs = await _chat(desk, "+1")
    await desk.apply_tag(theirs, "vip", actor=BOSS)
    await desk.set_executive_status("e1", "away", actor=BOSS)
    assert (await desk.fetch_all_chats(actor=BOSS)).total == 1
    await desk.resolve_chat(theirs, actor=BOSS)


async def test_rating_needs_the_signed_token(desk: AsyncSmartChat) -> None:
    chat_id = await _chat(desk, "+1")
    await desk.resolve_chat(chat_id)
    sender = desk.ports.sender
    assert isinstance(sender, RecordingSender)
    token = await desk.rating_token(chat_id)
    assert sender.to("+1")[-1] == f"Rate us: https://x/rate/{chat_id}?t={token}"
    with pytest.raises(PermissionDeniedError):
        await desk.rate_chat(chat_id, score=5, token="forged")
    with pytest.raises(PermissionDeniedError):
        await desk.rate_chat(chat_id, score=5, token=token, actor=E1)
    with pytest.raises(PermissionDeniedError):  # a customer needs the token
        await desk.rate_chat(chat_id, score=5, actor=Actor.customer())
    with pytest.raises(PermissionDeniedError):
        await desk.get_chat(chat_id, actor=Actor.customer())
    assert await desk.get_ratings(chat_id) == []
    rating = await desk.rate_chat(chat_id, score=4, token=token, actor=Actor.customer("+1"))
    assert rating.score == 4
    with pytest.raises(AlreadyRatedError):
        await desk.rate_chat(chat_id, score=5, token=token)
    # a new resolution needs a new token: the old one no longer matches
    clock = desk.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(minutes=5))
    await _chat(desk, "+1")
    await desk.resolve_chat(chat_id)
    with pytest.raises(PermissionDeniedError):
        await desk.rate_chat(chat_id, score=5, token=token)
