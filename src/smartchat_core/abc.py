"""The ports: abstract classes every backend implements.

Services depend only on these.  Each method's docstring is its contract; the
contract suite in :mod:`smartchat_core.testing` checks it for any adapter.

General rules for every adapter:

* Every method is a coroutine and must be safe to call concurrently, from
  several tasks and several processes sharing the same backend.
* A mutating method is **one atomic operation** against its preconditions:
  either all of its effects happen (the chat and every counter it moves) or
  none does.  When a precondition does not hold the method changes nothing
  and says so in its return value; it does not raise.
* Driver failures (connection lost, timeout) are raised as
  :class:`~smartchat_core.BackendError`.
* Datetimes going in and out are timezone-aware (UTC).
* ``start`` is called once before use with an exit stack where the adapter
  registers its clean-up; no adapter connects at import time.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import datetime, timedelta

import attrs

from ._events import Event
from ._models import (
    Chat,
    ChatPage,
    ChatQuery,
    Executive,
    ExecutiveCounters,
    ExecutiveStatus,
    Rating,
    ResolutionEntry,
    TypeCounters,
)

__all__ = [
    "AlertDedup",
    "AssignOutcome",
    "AssignResult",
    "ChatChange",
    "ChatStore",
    "Clock",
    "EventPublisher",
    "ExecutiveStore",
    "IncomingResult",
    "Lock",
    "MessageSender",
    "Port",
    "RatingStore",
    "ResolutionLog",
    "Rotation",
    "StatusChange",
]


class Port:
    """Lifecycle shared by every port."""

    async def start(self, exit_stack: AsyncExitStack) -> None:
        """Connect or prepare; register clean-up callbacks on ``exit_stack``.

        The default does nothing.
        """


class Clock(ABC):
    """Where every time-based rule reads the time."""

    @abstractmethod
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""

    @abstractmethod
    async def sleep_until(self, deadline: datetime) -> None:
        """Return once :meth:`now` is at or past ``deadline``.

        Must be cancellable.  Returns at once if the deadline has passed.
        """


# --------------------------------------------------------------------------- chats


class AssignOutcome(str, enum.Enum):
    ASSIGNED = "assigned"
    """The chat now belongs to the executive; counters moved."""
    CHAT_CHANGED = "chat_changed"
    """The chat is resolved, missing, or its assignee is not the expected one."""


@attrs.frozen
class AssignResult:
    outcome: AssignOutcome
    chat: Chat | None
    """The chat after the call (``None`` only if it does not exist)."""
    previous: Chat | None = None
    """With ``ASSIGNED``: the chat exactly as this call found it (what
    :meth:`ChatStore.undo_assign` puts back)."""


@attrs.frozen
class ChatChange:
    """Result of a conditional chat update."""

    chat: Chat | None
    """The chat after the call; ``None`` if it does not exist."""
    changed: bool
    """Whether this call changed it."""


@attrs.frozen
class IncomingResult:
    chat: Chat
    created: bool
    reopened: bool
    removed_awaiting: bool
    """The awaiting tag was on the chat and this message removed it."""


class ChatStore(Port, ABC):
    """Chats, and every counter derived from them.

    Counters (per executive: open and awaiting chats; per customer type: open,
    unassigned and awaiting chats) are owned by this store and always agree
    with the chats: either stored and moved in the same atomic operation as
    the chat that moves them (the in-memory store), or computed from the
    chats when read (the MongoDB store, from indexes over open chats).  A chat counts as
    *awaiting* while it is open and carries the store's ``awaiting_tag``
    (given to the adapter by the composition root from
    :attr:`Settings.awaiting_tag`).  An executive's counters count the open
    chats assigned to it.

    There is at most one chat per ``customer_id``.  A new chat, a reopened
    chat and an unassigned chat join the waiting queue of their customer
    type with ``queued_at`` set; an assigned or resolved chat has
    ``queued_at`` ``None``.
    """

    @abstractmethod
    async def get(self, chat_id: str) -> Chat | None:
        """The chat with this id, or ``None``.  O(1) / one indexed lookup."""

    @abstractmethod
    async def record_incoming(
        self,
        *,
        new_id: str,
        customer_id: str,
        customer_name: str,
        customer_type: str,
        preview: str,
        now: datetime,
    ) -> IncomingResult:
        """A customer message, atomically.

        If the customer has no chat, create one with id ``new_id``, open,
        unassigned, queued at ``now``.  If the chat is resolved, reopen it:
        open, unassigned, no tags, ``opened_at`` and ``queued_at`` = ``now``,
        ``customer_type`` = the given one.  In all cases set
        ``last_incoming_message`` = ``last_activity_at`` = ``now``,
        ``last_interaction_by`` = Customer, ``last_message`` = ``preview``,
        ``customer_name``, and remove the awaiting tag (counters follow).
        """

    @abstractmethod
    async def record_outgoing(
        self, chat_id: str, *, executive_id: str, preview: str, now: datetime
    ) -> ChatChange:
        """An executive message, if the chat is open and assigned to
        ``executive_id``: set ``last_outgoing_message`` =
        ``last_activity_at`` = ``now``, ``last_interaction_by`` = Executive,
        ``last_message`` = ``preview``.  Otherwise change nothing."""

    @abstractmethod
    async def assign(
        self,
        chat_id: str,
        executive_id: str,
        *,
        expected_from: str | None,
        now: datetime,
    ) -> AssignResult:
        """Assign the chat to ``executive_id`` if it is open and its assignee
        is ``expected_from`` (``None``: unassigned).

        Sets ``assigned_executive_id``, ``assigned_at`` = ``now`` and
        ``queued_at`` = ``None``; the counters of both executives and of the
        customer type follow.  Two concurrent calls with the same
        ``expected_from`` succeed at most once.  Whether the executive may
        take the chat (online, serves the type, capacity) is the service's
        to check, after this write (see :meth:`undo_assign`).

        A store that keeps what it read may write against that (compare and
        set) instead of reading again: the assignment of a chat the process
        has just read is then one write.
        """

    @abstractmethod
    async def undo_assign(self, assigned: Chat, previous: Chat) -> ChatChange:
        """Take back an assignment made by :meth:`assign`: if the chat is
        open and still has ``assigned``'s assignee and ``assigned_at``, put
        back ``previous``'s ``assigned_executive_id``, ``assigned_at`` and
        ``queued_at`` (so a chat from the queue keeps its place); counters
        follow.  ``changed`` is false when the chat moved on meanwhile."""

    @abstractmethod
    async def unassign(self, chat_id: str, *, expected_from: str, now: datetime) -> ChatChange:
        """Put the chat back in the waiting queue (``queued_at`` = ``now``) if it
        is open and assigned to ``expected_from``; counters follow."""

    @abstractmethod
    async def add_tag(self, chat_id: str, tag: str) -> ChatChange:
        """Add ``tag`` to an open chat (set semantics).  ``changed`` is false
        when it was there already or the chat is resolved."""

    @abstractmethod
    async def remove_tag(self, chat_id: str, tag: str) -> ChatChange:
        """Remove ``tag`` from an open chat.  ``changed`` is false when it was
        not there or the chat is resolved."""

    @abstractmethod
    async def resolve(self, chat_id: str, *, now: datetime) -> ChatChange:
        """Resolve an open chat: ``is_resolved``, ``resolved_at`` = ``now``,
        tags cleared, ``queued_at`` = ``None``; ``assigned_executive_id`` is
        kept (who handled it) but the chat leaves every open counter.
        ``changed`` is false when it was resolved already."""

    @abstractmethod
    async def sla_due(self, cutoff: datetime, *, limit: int) -> Sequence[Chat]:
        """Open chats whose customer spoke last, with ``last_incoming_message``
        at or before ``cutoff``; oldest first, at most ``limit``.

        Must cost O(result) (an index on the incoming time), not O(chats).
        """

    @abstractmethod
    async def awaiting_due(self, cutoff: datetime, *, limit: int) -> Sequence[Chat]:
        """Open chats whose executive spoke last, with
        ``last_outgoing_message`` at or before ``cutoff``, not yet tagged
        awaiting; oldest first, at most ``limit``.  O(result)."""

    @abstractmethod
    async def waiting(self, customer_type: str, *, limit: int) -> Sequence[Chat]:
        """The waiting queue of a customer type: open unassigned chats by
        ``queued_at``, oldest first, at most ``limit``.  O(result)."""

    @abstractmethod
    async def open_chats_of(self, executive_id: str) -> Sequence[Chat]:
        """Open chats assigned to the executive, oldest ``assigned_at`` first."""

    @abstractmethod
    async def query(self, query: ChatQuery) -> ChatPage:
        """Chats matching every filter of ``query``, newest
        ``last_activity_at`` first (ties: id), paged, with the total.

        ``search`` is literal text matched case-insensitively as a substring
        of ``customer_name``, ``customer_id`` or ``last_message``: never a
        pattern.  ``assigned_executive_id`` = ``"unassigned"`` selects chats
        with no assignee.
        """

    @abstractmethod
    async def executive_counters(
        self, executive_ids: Iterable[str]
    ) -> dict[str, ExecutiveCounters]:
        """Counters of each given executive (zeros for one with no chats)."""

    @abstractmethod
    async def type_counters(self) -> dict[str, TypeCounters]:
        """Counters of every customer type with open chats, by name (a type
        that is missing has none)."""

    @abstractmethod
    async def recount(self) -> None:
        """Rebuild every stored counter from the chats (nothing to do for a
        store that computes them when read)."""

    async def repair(self) -> int:
        """Complete or clear changes a crashed process left half-done (for a
        store whose writes span documents); return how many it handled.
        Must be cheap when there is nothing to do: the inactivity monitor
        calls it every tick.  The default does nothing."""
        return 0


# ----------------------------------------------------------------------- executives


@attrs.frozen
class StatusChange:
    before: Executive
    after: Executive


class ExecutiveStore(Port, ABC):
    """Executives' profiles and presence.

    The ``open_chats`` / ``awaiting_chats`` fields of the executives it
    returns are not its business (the chat store keeps them) and may be 0.
    """

    @abstractmethod
    async def upsert(
        self,
        executive_id: str,
        *,
        name: str,
        customer_types: frozenset[str],
        max_open_chats: int | None,
    ) -> tuple[Executive | None, Executive]:
        """Create the executive (offline, never active) or update its profile,
        keeping status and activity.  Returns ``(before, after)``."""

    @abstractmethod
    async def get(self, executive_id: str) -> Executive | None:
        """One executive, or ``None``."""

    @abstractmethod
    async def list(
        self, *, customer_type: str | None = None, status: ExecutiveStatus | None = None
    ) -> Sequence[Executive]:
        """Executives with the given type and status, by id."""

    @abstractmethod
    async def set_status(
        self, executive_id: str, status: ExecutiveStatus, *, now: datetime
    ) -> StatusChange | None:
        """Set the status and mark activity (``last_active_at`` = ``now``).
        ``None`` if the executive does not exist."""

    @abstractmethod
    async def touch(self, executive_id: str, *, now: datetime) -> Executive | None:
        """Mark activity: ``last_active_at`` = max(current, ``now``)."""

    @abstractmethod
    async def inactive(self, cutoff: datetime, *, limit: int) -> Sequence[Executive]:
        """Online or away executives whose ``last_active_at`` is at or before
        ``cutoff``, oldest first.  O(result)."""


# ------------------------------------------------------------------------ rotation


class Rotation(Port, ABC):
    """The round-robin rotation of each customer type: an ordered ring of
    executive ids (the online executives serving that type)."""

    @abstractmethod
    async def add(self, customer_type: str, executive_id: str) -> None:
        """Append at the tail unless already a member (then keep its place)."""

    @abstractmethod
    async def remove(self, customer_type: str, executive_id: str) -> None:
        """Remove if a member."""

    @abstractmethod
    async def next(self, customer_type: str) -> str | None:
        """Take the head, move it to the tail and return it, in **one atomic
        operation**; ``None`` if the ring is empty."""

    @abstractmethod
    async def give_back(self, customer_type: str, executive_id: str) -> None:
        """Move a member to the head (a pick of :meth:`next` that assigned
        nothing, because another process took the chat first, is returned so
        that executive is next again and the rotation stays fair).  No-op if
        not a member.  Atomic."""

    @abstractmethod
    async def members(self, customer_type: str) -> Sequence[str]:
        """The ring, head first."""

    @abstractmethod
    async def replace(self, customer_type: str, executive_ids: Sequence[str]) -> None:
        """Replace the ring (rebuild after the backend lost it)."""


# --------------------------------------------------------------------- dedup, lock


class AlertDedup(Port, ABC):
    """Keys with a time to live, set only if absent (SLA alert dedup)."""

    @abstractmethod
    async def claim(self, key: str, ttl: timedelta) -> bool:
        """Set ``key`` for ``ttl`` if it is absent or expired; return whether
        this call set it.  Atomic: of concurrent callers one wins."""

    @abstractmethod
    async def release(self, key: str) -> None:
        """Delete ``key`` (an alert that could not be delivered)."""


class Lock(Port, ABC):
    """Named leases across processes."""

    @abstractmethod
    async def acquire(self, name: str, token: str, ttl: timedelta) -> bool:
        """Take the lease ``name`` for ``ttl`` if nobody holds it (or it
        expired); return whether this call took it.  Atomic: of concurrent
        callers one wins.  A holder asking again gets ``False`` (a lease is
        taken once; monitors rely on it to run an interval's tick once)."""

    @abstractmethod
    async def release(self, name: str, token: str) -> bool:
        """Give the lease back if ``token`` holds it (never someone else's)."""


# ------------------------------------------------------------------------- events


class EventPublisher(Port, ABC):
    """Delivers events to subscribers of their rooms."""

    @abstractmethod
    async def publish(self, event: Event) -> None:
        """Deliver ``event`` to every current subscriber of any of its rooms.
        Must not block on a slow subscriber."""

    @abstractmethod
    def subscribe(self, rooms: Iterable[str]) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """A subscription to events for any of ``rooms``, in publish order,
        from the moment the context is entered until it exits."""


class MessageSender(Port, ABC):
    """Outbound WhatsApp messages."""

    @abstractmethod
    async def send_text(self, to: str, text: str) -> None:
        """Send ``text`` to the WhatsApp number ``to``; raise
        :class:`~smartchat_core.DeliveryError` if it cannot be sent."""


# ---------------------------------------------------------------- ratings and log


class RatingStore(Port, ABC):
    @abstractmethod
    async def add(self, rating: Rating) -> bool:
        """Store the rating unless one exists for the same chat and
        ``resolved_at``; return whether it was stored.  Atomic."""

    @abstractmethod
    async def for_chat(self, chat_id: str) -> Sequence[Rating]:
        """Ratings of a chat, oldest first."""


class ResolutionLog(Port, ABC):
    @abstractmethod
    async def append(self, entry: ResolutionEntry) -> None:
        """Write one resolve log entry."""

    @abstractmethod
    async def entries(
        self, *, chat_id: str | None = None, executive_id: str | None = None, limit: int = 100
    ) -> Sequence[ResolutionEntry]:
        """Entries for a chat and/or executive, newest first."""
