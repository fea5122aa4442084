"""Domain models: executives, chats, ratings, resolution log entries, counters.

All models are frozen attrs classes; services change state only through the
ports, which return new instances.  Field names follow the seed's MongoDB
documents (``v2_chats``) so an existing Smart Chat V2 database maps one to one.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

__all__ = [
    "UNASSIGNED",
    "Chat",
    "ChatPage",
    "ChatQuery",
    "ChatStatusFilter",
    "Executive",
    "ExecutiveCounters",
    "ExecutiveStatus",
    "Interlocutor",
    "Rating",
    "ResolutionEntry",
    "TypeCounters",
]

UNASSIGNED = "unassigned"
"""Value of ``assigned_executive_id`` in :meth:`fetch_all_chats` that selects
chats nobody holds (the waiting queue and resolved chats nobody held)."""


class ExecutiveStatus(str, enum.Enum):
    """Presence of a support executive."""

    ONLINE = "online"
    """Receives new chats."""
    AWAY = "away"
    """Keeps its chats, receives no new ones."""
    OFFLINE = "offline"
    """Its open chats are released and reassigned."""


class Interlocutor(str, enum.Enum):
    """Who spoke last in a chat (``last_interaction_by``)."""

    CUSTOMER = "Customer"
    EXECUTIVE = "Executive"


class ChatStatusFilter(str, enum.Enum):
    """The ``status`` filter of chat listing."""

    OPEN = "open"
    RESOLVED = "resolved"
    ALL = "all"


@attrs.frozen(kw_only=True)
class Executive:
    """A support executive.

    ``open_chats`` and ``awaiting_chats`` are counters kept by the chat store in
    the same operation as the chats that move them.
    """

    id: str
    name: str
    customer_types: frozenset[str]
    status: ExecutiveStatus = ExecutiveStatus.OFFLINE
    last_active_at: datetime | None = None
    max_open_chats: int | None = None
    """Capacity; ``None`` is unlimited."""
    open_chats: int = 0
    awaiting_chats: int = 0

    @property
    def has_capacity(self) -> bool:
        """Whether one more open chat fits under ``max_open_chats``."""
        return self.max_open_chats is None or self.open_chats < self.max_open_chats


@attrs.frozen(kw_only=True)
class Chat:
    """One customer's conversation (a ``v2_chats`` document).

    There is one chat per customer number; a message on a resolved chat
    reopens it.
    """

    id: str
    customer_id: str
    """The customer's WhatsApp number."""
    customer_name: str
    customer_type: str
    created_at: datetime
    opened_at: datetime
    """When the current episode opened (creation or the last reopening)."""
    last_incoming_message: datetime | None = None
    last_outgoing_message: datetime | None = None
    last_interaction_by: Interlocutor | None = None
    last_message: str = ""
    """Preview of the latest message, either direction."""
    last_activity_at: datetime
    """Latest message in either direction; listing sorts on it."""
    is_resolved: bool = False
    resolved_at: datetime | None = None
    tags: tuple[str, ...] = ()
    """Set semantics, kept in the order applied."""
    assigned_executive_id: str | None = None
    assigned_at: datetime | None = None
    queued_at: datetime | None = None
    """When the chat joined the waiting queue of its customer type; ``None``
    while assigned or resolved.  The queue is drained oldest first."""

    @property
    def is_open(self) -> bool:
        return not self.is_resolved

    @property
    def is_waiting(self) -> bool:
        """Open and unassigned: in the waiting queue."""
        return not self.is_resolved and self.assigned_executive_id is None


@attrs.frozen(kw_only=True)
class Rating:
    """A customer's rating of one resolution of a chat."""

    chat_id: str
    score: int
    comment: str | None
    executive_id: str | None
    """The executive who resolved the chat."""
    customer_id: str
    resolved_at: datetime
    """Identifies the resolution rated (one rating per resolution)."""
    rated_at: datetime


@attrs.frozen(kw_only=True)
class ResolutionEntry:
    """One line of the resolve log."""

    chat_id: str
    executive_id: str | None
    customer_id: str
    customer_type: str
    opened_at: datetime
    resolved_at: datetime
    tags: tuple[str, ...]


@attrs.frozen
class ExecutiveCounters:
    """Counters of one executive: its open chats, and those tagged awaiting."""

    open_chats: int = 0
    awaiting_chats: int = 0


@attrs.frozen
class TypeCounters:
    """Dashboard counters of one customer type."""

    open: int = 0
    unassigned: int = 0
    awaiting: int = 0


@attrs.frozen(kw_only=True)
class ChatQuery:
    """Validated filters of :meth:`fetch_all_chats` (``None`` = no filter)."""

    status: ChatStatusFilter = ChatStatusFilter.ALL
    customer_type: str | None = None
    search: str | None = None
    """Literal text, matched case-insensitively in name, number and preview."""
    tag: str | None = None
    sender: Interlocutor | None = None
    assigned_executive_id: str | None = None
    """An executive id, or :data:`UNASSIGNED`."""
    limit: int = 20
    offset: int = 0


@attrs.frozen(kw_only=True)
class ChatPage:
    """One page of chats, newest activity first, with the total of matches."""

    items: tuple[Chat, ...]
    total: int
    limit: int
    offset: int

    @property
    def has_more(self) -> bool:
        return self.offset + len(self.items) < self.total
