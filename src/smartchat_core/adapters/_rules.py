"""The chat transitions every chat store applies, as pure functions.

Each takes the chat as stored (``None`` when missing) and returns the chat
after the change, or ``None`` when a precondition of the port's contract
(:class:`~smartchat_core.abc.ChatStore`) does not hold.  Stores that read,
compute and compare-and-set (the in-memory store, the MongoDB store) share
them, so the same call gives the same chat on every backend; an adapter of
your own may use them too.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from .._models import Chat, Interlocutor

__all__ = [
    "assigned",
    "incoming",
    "unassigned_back",
    "outgoing",
    "resolved",
    "retagged",
    "unassigned",
]


def incoming(
    old: Chat | None,
    *,
    new_id: str,
    customer_id: str,
    customer_name: str,
    customer_type: str,
    preview: str,
    now: datetime,
    awaiting_tag: str,
) -> tuple[Chat, bool, bool]:
    """A customer message: ``(chat, reopened, removed_awaiting)``; a new chat
    when ``old`` is ``None`` (``reopened`` and ``removed_awaiting`` false)."""
    if old is None:
        chat = Chat(
            id=new_id,
            customer_id=customer_id,
            customer_type=customer_type,
            created_at=now,
            opened_at=now,
            queued_at=now,
            customer_name=customer_name,
            last_activity_at=now,
        )
        reopened = removed = False
    elif old.is_resolved:
        chat = attrs.evolve(
            old,
            customer_type=customer_type,
            opened_at=now,
            is_resolved=False,
            resolved_at=None,
            tags=(),
            assigned_executive_id=None,
            assigned_at=None,
            queued_at=now,
        )
        reopened, removed = True, False
    else:
        chat = attrs.evolve(old, tags=tuple(t for t in old.tags if t != awaiting_tag))
        reopened, removed = False, awaiting_tag in old.tags
    chat = attrs.evolve(
        chat,
        customer_name=customer_name,
        last_incoming_message=now,
        last_activity_at=now,
        last_interaction_by=Interlocutor.CUSTOMER,
        last_message=preview,
    )
    return chat, reopened, removed


def outgoing(old: Chat | None, *, executive_id: str, preview: str, now: datetime) -> Chat | None:
    """An executive message on an open chat assigned to it."""
    if old is None or old.is_resolved or old.assigned_executive_id != executive_id:
        return None
    return attrs.evolve(
        old,
        last_outgoing_message=now,
        last_activity_at=max(now, old.last_activity_at),
        last_interaction_by=Interlocutor.EXECUTIVE,
        last_message=preview,
    )


def with_holder(
    old: Chat, executive_id: str | None, assigned_at: datetime | None, queued_at: datetime | None
) -> Chat:
    """``attrs.evolve(old, assigned_executive_id=..., assigned_at=...,
    queued_at=...)`` written out: the assignment path makes one per pick and
    ``evolve`` costs twice this.  ``tests/test_convert.py`` checks it keeps
    every other field (a new field of :class:`Chat` fails that test)."""
    return Chat(
        id=old.id,
        customer_id=old.customer_id,
        customer_name=old.customer_name,
        customer_type=old.customer_type,
        created_at=old.created_at,
        opened_at=old.opened_at,
        last_incoming_message=old.last_incoming_message,
        last_outgoing_message=old.last_outgoing_message,
        last_interaction_by=old.last_interaction_by,
        last_message=old.last_message,
        last_activity_at=old.last_activity_at,
        is_resolved=old.is_resolved,
        resolved_at=old.resolved_at,
        tags=old.tags,
        assigned_executive_id=executive_id,
        assigned_at=assigned_at,
        queued_at=queued_at,
    )


def assigned(
    old: Chat | None, executive_id: str, *, expected_from: str | None, now: datetime
) -> Chat | None:
    """Assignment of an open chat held by ``expected_from``."""
    if old is None or old.is_resolved or old.assigned_executive_id != expected_from:
        return None
    return with_holder(old, executive_id, now, None)


def unassigned_back(old: Chat | None, assigned: Chat, previous: Chat) -> Chat | None:
    """An assignment taken back: ``previous``'s assignment fields return if
    the chat is open and still holds ``assigned``'s assignment."""
    if (
        old is None
        or old.is_resolved
        or old.assigned_executive_id != assigned.assigned_executive_id
        or old.assigned_at != assigned.assigned_at
    ):
        return None
    return with_holder(
        old, previous.assigned_executive_id, previous.assigned_at, previous.queued_at
    )


def unassigned(old: Chat | None, *, expected_from: str, now: datetime) -> Chat | None:
    """Back to the waiting queue from ``expected_from``."""
    if old is None or old.is_resolved or old.assigned_executive_id != expected_from:
        return None
    return with_holder(old, None, None, now)


def retagged(old: Chat | None, tag: str, *, add: bool) -> Chat | None:
    """A tag added to / removed from an open chat, if that changes its tags."""
    if old is None or old.is_resolved or (tag in old.tags) == add:
        return None
    tags = (*old.tags, tag) if add else tuple(t for t in old.tags if t != tag)
    return attrs.evolve(old, tags=tags)


def resolved(old: Chat | None, *, now: datetime) -> Chat | None:
    """Resolution of an open chat: tags cleared, out of the queue."""
    if old is None or old.is_resolved:
        return None
    return attrs.evolve(old, is_resolved=True, resolved_at=now, tags=(), queued_at=None)
