"""The hand-written fast paths of the assignment path against the generic
code they stand for: the chat payload against cattrs' unstructuring,
``rules.with_holder`` against ``attrs.evolve``, and the isoformat memo
against ``datetime.isoformat``.  A field added to :class:`Chat` and
forgotten in either fast path fails here."""

from __future__ import annotations

import enum
from collections.abc import Set
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import cattrs
from hypothesis import given
from hypothesis import strategies as st

from smartchat_core import Chat, to_json
from smartchat_core._convert import _ISO_MEMO_SIZE, isoformat
from smartchat_core._models import Interlocutor
from smartchat_core.adapters import _rules as rules


def _generic_converter() -> cattrs.Converter:
    """The library's JSON converter without its Chat hook."""
    converter = cattrs.Converter(unstruct_collection_overrides={Set: sorted})
    converter.register_unstructure_hook(datetime, lambda value: value.isoformat())
    converter.register_unstructure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum), lambda value: value.value
    )
    return converter


GENERIC = _generic_converter()

zones = st.sampled_from(
    [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-3))]
)
moments = st.builds(
    lambda naive, zone: naive.replace(tzinfo=zone),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    zones,
)
texts = st.text(max_size=12)


@st.composite
def chats(draw: st.DrawFn) -> Chat:
    shared = draw(moments)  # one moment in several fields, as a new chat has
    moment = st.one_of(st.just(shared), moments)
    maybe = st.one_of(st.none(), moment)
    return Chat(
        id=draw(texts),
        customer_id=draw(texts),
        customer_name=draw(texts),
        customer_type=draw(texts),
        created_at=draw(moment),
        opened_at=draw(moment),
        last_incoming_message=draw(maybe),
        last_outgoing_message=draw(maybe),
        last_interaction_by=draw(st.one_of(st.none(), st.sampled_from(Interlocutor))),
        last_message=draw(texts),
        last_activity_at=draw(moment),
        is_resolved=draw(st.booleans()),
        resolved_at=draw(maybe),
        tags=tuple(draw(st.lists(texts, max_size=3, unique=True))),
        assigned_executive_id=draw(st.one_of(st.none(), texts)),
        assigned_at=draw(maybe),
        queued_at=draw(maybe),
    )


@given(chats())
def test_the_chat_payload_is_the_generic_unstructuring(chat: Chat) -> None:
    fast: dict[str, Any] = to_json(chat)
    generic: dict[str, Any] = GENERIC.unstructure(chat)
    assert list(fast) == list(generic) == [a.name for a in attrs.fields(Chat)]
    assert fast == generic


@given(
    chats(),
    st.one_of(st.none(), texts),
    st.one_of(st.none(), moments),
    st.one_of(st.none(), moments),
)
def test_with_holder_is_evolve(
    chat: Chat, executive_id: str | None, assigned_at: datetime | None, queued_at: datetime | None
) -> None:
    assert rules.with_holder(chat, executive_id, assigned_at, queued_at) == attrs.evolve(
        chat, assigned_executive_id=executive_id, assigned_at=assigned_at, queued_at=queued_at
    )


def test_isoformat_memo_is_exact() -> None:
    utc = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
    india = utc.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert utc == india  # one instant, two texts: the memo goes by object, not by value
    assert (isoformat(utc), isoformat(india)) == (utc.isoformat(), india.isoformat())
    assert isoformat(utc) == "2026-01-01T09:00:00+00:00"
    many = [utc + timedelta(microseconds=n) for n in range(3 * _ISO_MEMO_SIZE)]
    assert [isoformat(m) for m in many] == [m.isoformat() for m in many]
    assert [isoformat(m) for m in reversed(many)] == [m.isoformat() for m in reversed(many)]
