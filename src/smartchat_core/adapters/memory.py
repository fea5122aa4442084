"""In-memory adapters: the embedded default and the reference model.

Every port has one here.  They need no server, keep everything in this
process and are efficient: lookups by id are O(1), the monitors' due queries
and the waiting queues are range scans over sorted indexes (a tick costs the
due chats, not the stored ones), and listing walks the smallest matching
index instead of copying the world.

Each method runs without awaiting anything, so it is atomic with respect to
every other task of the process.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta, timezone

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream
from sortedcontainers import SortedList

from .._events import Event, rooms_match
from .._models import (
    UNASSIGNED,
    Chat,
    ChatPage,
    ChatQuery,
    ChatStatusFilter,
    Executive,
    ExecutiveCounters,
    ExecutiveStatus,
    Interlocutor,
    Rating,
    ResolutionEntry,
    TypeCounters,
)
from .._settings import Settings
from ..abc import (
    AlertDedup,
    AssignOutcome,
    AssignResult,
    ChatChange,
    ChatStore,
    Clock,
    EventPublisher,
    ExecutiveStore,
    IncomingResult,
    Lock,
    MessageSender,
    RatingStore,
    ResolutionLog,
    Rotation,
    StatusChange,
)
from ..services._base import Ports, in_process_port
from . import _rules as rules

__all__ = [
    "LoggingSender",
    "memory_ports",
    "MemoryAlertDedup",
    "MemoryChatStore",
    "MemoryEventPublisher",
    "MemoryExecutiveStore",
    "MemoryLock",
    "MemoryRatingStore",
    "MemoryResolutionLog",
    "MemoryRotation",
    "SystemClock",
]

logger = logging.getLogger("smartchat_core")


def _ts(value: datetime | None) -> float:
    # Every time the desk stores is timezone-aware (the clock port and the
    # validation guarantee it), so this is the seconds since the epoch.
    return value.timestamp() if value is not None else float("-inf")


class SystemClock(Clock):
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep_until(self, deadline: datetime) -> None:
        await anyio.sleep(max(0.0, (deadline - self.now()).total_seconds()))


# --------------------------------------------------------------------------- chats

_IndexKey = tuple[str, str]


def _listing_keys(chat: Chat) -> list[_IndexKey]:
    keys: list[_IndexKey] = [
        ("status", ChatStatusFilter.RESOLVED.value if chat.is_resolved else "open"),
        ("type", chat.customer_type),
        ("assignee", chat.assigned_executive_id or UNASSIGNED),
    ]
    if chat.last_interaction_by is not None:
        keys.append(("sender", chat.last_interaction_by.value))
    keys.extend(("tag", tag) for tag in chat.tags)
    return keys


@in_process_port
class MemoryChatStore(ChatStore):
    """Chats in a dict, with sorted indexes for every hot query."""

    def __init__(self, *, awaiting_tag: str = "awaiting") -> None:
        self.awaiting_tag = awaiting_tag
        self._chats: dict[str, Chat] = {}
        self._by_customer: dict[str, str] = {}
        self._reset_indexes()

    def _reset_indexes(self) -> None:
        # listing: (-last_activity, id) per index key, and over all chats
        self._all: SortedList = SortedList()
        self._listing: dict[_IndexKey, SortedList] = {}
        # monitors and the queue: (time, id)
        self._sla: SortedList = SortedList()
        self._awaiting_due: SortedList = SortedList()
        self._waiting: dict[str, SortedList] = {}
        self._open_by_executive: dict[str, SortedList] = {}
        self._executive_counters: dict[str, list[int]] = {}
        self._type_counters: dict[str, list[int]] = {}

    # ---------------------------------------------------------------- indexing
    def _awaiting(self, chat: Chat) -> bool:
        return chat.is_open and self.awaiting_tag in chat.tags

    def _apply(self, chat: Chat, sign: int) -> None:
        """Add (sign=1) or remove (sign=-1) a chat's index entries and counters."""
        self._apply_listing(chat, _listing_keys(chat), sign)
        self._apply_open(chat, sign)

    def _apply_listing(
        self, chat: Chat, keys: Iterable[_IndexKey], sign: int, *, all_: bool = True
    ) -> None:
        activity = (-_ts(chat.last_activity_at), chat.id)
        for key in keys:
            index = self._listing.get(key)
            if index is None:
                index = self._listing[key] = SortedList()
            if sign > 0:
                index.add(activity)
            else:
                index.remove(activity)
                if not index:
                    del self._listing[key]
        if all_:
            _update(self._all, activity, sign)

    def _open_entries(self, chat: Chat) -> list[tuple[SortedList, tuple[float, str]]]:
        """The entries an open chat has in the monitors' indexes, the waiting
        queue of its type and the open chats of its executive."""
        if not chat.is_open:
            return []
        entries: list[tuple[SortedList, tuple[float, str]]] = []
        if chat.last_interaction_by is Interlocutor.CUSTOMER:
            entries.append((self._sla, (_ts(chat.last_incoming_message), chat.id)))
        elif chat.last_interaction_by is Interlocutor.EXECUTIVE and not self._awaiting(chat):
            entries.append((self._awaiting_due, (_ts(chat.last_outgoing_message), chat.id)))
        entries.append(self._holder_entry(chat))
        return entries

    def _holder_entry(self, chat: Chat) -> tuple[SortedList, tuple[float, str]]:
        """An open chat's entry in the waiting queue of its type, or in the
        open chats of its executive."""
        executive_id = chat.assigned_executive_id
        if executive_id is None:
            queue = self._waiting.get(chat.customer_type)
            if queue is None:
                queue = self._waiting[chat.customer_type] = SortedList()
            return queue, (_ts(chat.queued_at), chat.id)
        mine = self._open_by_executive.get(executive_id)
        if mine is None:
            mine = self._open_by_executive[executive_id] = SortedList()
        return mine, (_ts(chat.assigned_at), chat.id)

    def _count(self, chat: Chat, sign: int) -> None:
        """Move the counters of an open chat by ``sign``."""
        type_counters = self._type_counters.setdefault(chat.customer_type, [0, 0, 0])
        if not chat.is_open:
            return
        awaiting = self._awaiting(chat)
        type_counters[0] += sign
        type_counters[2] += sign * awaiting
        executive_id = chat.assigned_executive_id
        if executive_id is None:
            type_counters[1] += sign
        else:
            counters = self._executive_counters.setdefault(executive_id, [0, 0])
            counters[0] += sign
            counters[1] += sign * awaiting

    def _apply_open(self, chat: Chat, sign: int) -> None:
        """The monitors' indexes, the waiting queues and the counters."""
        for index, entry in self._open_entries(chat):
            _update(index, entry, sign)
        self._count(chat, sign)

    def _put(self, old: Chat | None, new: Chat) -> Chat:
        if old is None:
            self._apply(new, 1)
        else:
            old_keys, new_keys = _listing_keys(old), _listing_keys(new)
            if old.last_activity_at == new.last_activity_at:
                # Same place in every listing: touch only the indexes that
                # gained or lost the chat (e.g. one tag), not the big ones.
                if old_keys != new_keys:
                    self._apply_listing(old, set(old_keys) - set(new_keys), -1, all_=False)
                    self._apply_listing(new, set(new_keys) - set(old_keys), 1, all_=False)
            else:
                self._apply_listing(old, old_keys, -1)
                self._apply_listing(new, new_keys, 1)
            # Only the entries that moved (an assignment leaves the SLA
            # index alone, a tag leaves the queues alone).
            before = {(id(index), entry): index for index, entry in self._open_entries(old)}
            after = {(id(index), entry): index for index, entry in self._open_entries(new)}
            for key, index in before.items():
                if key not in after:
                    _update(index, key[1], -1)
            for key, index in after.items():
                if key not in before:
                    _update(index, key[1], 1)
            self._count(old, -1)
            self._count(new, 1)
        self._chats[new.id] = new
        self._by_customer[new.customer_id] = new.id
        return new

    def _put_holder(self, old: Chat, new: Chat) -> Chat:
        """:meth:`_put` for a change of an open chat's assignment fields only
        (``assigned_executive_id``, ``assigned_at``, ``queued_at``), as
        assign, unassign and undo make: the chat changes its assignee
        listing and its queue / executive entry, nothing else moves."""
        self._apply_listing(old, (("assignee", old.assigned_executive_id or UNASSIGNED),), -1,
                            all_=False)  # fmt: skip
        self._apply_listing(new, (("assignee", new.assigned_executive_id or UNASSIGNED),), 1,
                            all_=False)  # fmt: skip
        index, entry = self._holder_entry(old)
        index.remove(entry)
        index, entry = self._holder_entry(new)
        index.add(entry)
        self._count(old, -1)
        self._count(new, 1)
        self._chats[new.id] = new
        return new

    # ------------------------------------------------------------------- reads
    async def get(self, chat_id: str) -> Chat | None:
        return self._chats.get(chat_id)

    def _many(self, entries: Iterable[tuple[float, str]]) -> list[Chat]:
        return [self._chats[chat_id] for _, chat_id in entries]

    async def sla_due(self, cutoff: datetime, *, limit: int) -> Sequence[Chat]:
        entries = self._sla.irange(maximum=(_ts(cutoff), "\U0010ffff"))
        return self._many(itertools.islice(entries, limit))

    async def awaiting_due(self, cutoff: datetime, *, limit: int) -> Sequence[Chat]:
        entries = self._awaiting_due.irange(maximum=(_ts(cutoff), "\U0010ffff"))
        return self._many(itertools.islice(entries, limit))

    async def waiting(self, customer_type: str, *, limit: int) -> Sequence[Chat]:
        queue = self._waiting.get(customer_type)
        return self._many(itertools.islice(queue, limit)) if queue else []

    async def open_chats_of(self, executive_id: str) -> Sequence[Chat]:
        return self._many(self._open_by_executive.get(executive_id, ()))

    async def query(self, query: ChatQuery) -> ChatPage:
        candidates: list[SortedList] = []
        if query.status is not ChatStatusFilter.ALL:
            candidates.append(self._listing.get(("status", query.status.value), SortedList()))
        for name, value in (
            ("type", query.customer_type),
            ("assignee", query.assigned_executive_id),
            ("tag", query.tag),
            ("sender", query.sender.value if query.sender else None),
        ):
            if value is not None:
                candidates.append(self._listing.get((name, value), SortedList()))
        if not candidates:
            candidates.append(self._all)
        candidates.sort(key=len)
        index, others = candidates[0], candidates[1:]
        needle = query.search.casefold() if query.search else None
        start, stop = query.offset, query.offset + query.limit
        if not others and needle is None:
            items = [self._chats[chat_id] for _, chat_id in index[start:stop]]
            return ChatPage(items=tuple(items), total=len(index), limit=query.limit, offset=start)

        def matches(entry: tuple[float, str]) -> bool:
            if any(entry not in other for other in others):
                return False
            if needle is None:
                return True
            chat = self._chats[entry[1]]
            return (
                needle in chat.customer_name.casefold()
                or needle in chat.customer_id.casefold()
                or needle in chat.last_message.casefold()
            )

        total = 0
        page: list[Chat] = []
        for entry in index:
            if matches(entry):
                if start <= total < stop:
                    page.append(self._chats[entry[1]])
                total += 1
        return ChatPage(items=tuple(page), total=total, limit=query.limit, offset=start)

    async def executive_counters(
        self, executive_ids: Iterable[str]
    ) -> dict[str, ExecutiveCounters]:
        result = {}
        for executive_id in executive_ids:
            counters = self._executive_counters.get(executive_id, (0, 0))
            result[executive_id] = ExecutiveCounters(counters[0], counters[1])
        return result

    async def type_counters(self) -> dict[str, TypeCounters]:
        return {
            name: TypeCounters(*values)
            for name, values in sorted(self._type_counters.items())
            if values[0]
        }

    # ------------------------------------------------------------------ writes
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
        old = self._chats.get(self._by_customer.get(customer_id, ""))
        if old is None and new_id in self._chats:
            raise ValueError(f"chat id {new_id!r} exists already")
        new, reopened, removed = rules.incoming(
            old,
            new_id=new_id,
            customer_id=customer_id,
            customer_name=customer_name,
            customer_type=customer_type,
            preview=preview,
            now=now,
            awaiting_tag=self.awaiting_tag,
        )
        return IncomingResult(self._put(old, new), old is None, reopened, removed)

    def _change(self, old: Chat | None, new: Chat | None) -> ChatChange:
        if new is None:
            return ChatChange(old, False)
        return ChatChange(self._put(old, new), True)

    async def record_outgoing(
        self, chat_id: str, *, executive_id: str, preview: str, now: datetime
    ) -> ChatChange:
        old = self._chats.get(chat_id)
        return self._change(
            old, rules.outgoing(old, executive_id=executive_id, preview=preview, now=now)
        )

    async def assign(
        self,
        chat_id: str,
        executive_id: str,
        *,
        expected_from: str | None,
        now: datetime,
    ) -> AssignResult:
        old = self._chats.get(chat_id)
        new = rules.assigned(old, executive_id, expected_from=expected_from, now=now)
        if new is None or old is None:
            return AssignResult(AssignOutcome.CHAT_CHANGED, old)
        return AssignResult(AssignOutcome.ASSIGNED, self._put_holder(old, new), old)

    def _holder_change(self, old: Chat | None, new: Chat | None) -> ChatChange:
        if new is None or old is None:
            return ChatChange(old, False)
        return ChatChange(self._put_holder(old, new), True)

    async def undo_assign(self, assigned: Chat, previous: Chat) -> ChatChange:
        old = self._chats.get(assigned.id)
        return self._holder_change(old, rules.unassigned_back(old, assigned, previous))

    async def unassign(self, chat_id: str, *, expected_from: str, now: datetime) -> ChatChange:
        old = self._chats.get(chat_id)
        return self._holder_change(old, rules.unassigned(old, expected_from=expected_from, now=now))

    async def add_tag(self, chat_id: str, tag: str) -> ChatChange:
        old = self._chats.get(chat_id)
        return self._change(old, rules.retagged(old, tag, add=True))

    async def remove_tag(self, chat_id: str, tag: str) -> ChatChange:
        old = self._chats.get(chat_id)
        return self._change(old, rules.retagged(old, tag, add=False))

    async def resolve(self, chat_id: str, *, now: datetime) -> ChatChange:
        old = self._chats.get(chat_id)
        return self._change(old, rules.resolved(old, now=now))

    async def recount(self) -> None:
        self._reset_indexes()
        for chat in self._chats.values():
            self._apply(chat, 1)

    # ------------------------------------------------------------- for tests
    def all_chats(self) -> Iterator[Chat]:
        """Every stored chat (for tests and the state-machine model)."""
        return iter(self._chats.values())

    def load(self, chats: Iterable[Chat]) -> None:
        """Bulk-insert chats as they are (benchmarks, imports); indexes and
        counters follow.  Existing chats with the same ids are replaced."""
        for chat in chats:
            self._put(self._chats.get(chat.id), chat)


def _update(index: SortedList, entry: tuple[float, str], sign: int) -> None:
    if sign > 0:
        index.add(entry)
    else:
        index.remove(entry)


# ----------------------------------------------------------------------- executives


@in_process_port
class MemoryExecutiveStore(ExecutiveStore):
    """Executives in a dict; online/away executives sorted by last activity."""

    def __init__(self) -> None:
        self._executives: dict[str, Executive] = {}
        self._present: SortedList = SortedList()  # (last_active, id) of online/away

    def _put(self, old: Executive | None, new: Executive) -> Executive:
        if old is not None and old.status is not ExecutiveStatus.OFFLINE:
            self._present.remove((_ts(old.last_active_at), old.id))
        self._executives[new.id] = new
        if new.status is not ExecutiveStatus.OFFLINE:
            self._present.add((_ts(new.last_active_at), new.id))
        return new

    async def upsert(
        self,
        executive_id: str,
        *,
        name: str,
        customer_types: frozenset[str],
        max_open_chats: int | None,
    ) -> tuple[Executive | None, Executive]:
        old = self._executives.get(executive_id)
        if old is None:
            new = Executive(
                id=executive_id,
                name=name,
                customer_types=customer_types,
                max_open_chats=max_open_chats,
            )
        else:
            new = attrs.evolve(
                old, name=name, customer_types=customer_types, max_open_chats=max_open_chats
            )
        return old, self._put(old, new)

    async def get(self, executive_id: str) -> Executive | None:
        return self._executives.get(executive_id)

    async def list(
        self, *, customer_type: str | None = None, status: ExecutiveStatus | None = None
    ) -> Sequence[Executive]:
        return [
            e
            for _, e in sorted(self._executives.items())
            if (customer_type is None or customer_type in e.customer_types)
            and (status is None or e.status is status)
        ]

    async def set_status(
        self, executive_id: str, status: ExecutiveStatus, *, now: datetime
    ) -> StatusChange | None:
        old = self._executives.get(executive_id)
        if old is None:
            return None
        last = max(now, old.last_active_at) if old.last_active_at else now
        new = self._put(old, attrs.evolve(old, status=status, last_active_at=last))
        return StatusChange(old, new)

    async def touch(self, executive_id: str, *, now: datetime) -> Executive | None:
        old = self._executives.get(executive_id)
        if old is None:
            return None
        if old.last_active_at is not None and old.last_active_at >= now:
            return old
        return self._put(old, attrs.evolve(old, last_active_at=now))

    async def inactive(self, cutoff: datetime, *, limit: int) -> Sequence[Executive]:
        entries = self._present.irange(maximum=(_ts(cutoff), "\U0010ffff"))
        return [self._executives[e] for _, e in itertools.islice(entries, limit)]


# ------------------------------------------------------------------------ rotation


class MemoryRotation(Rotation):
    """A deque per customer type; ``next`` is one rotate (O(1))."""

    def __init__(self) -> None:
        self._rings: dict[str, deque[str]] = {}

    async def add(self, customer_type: str, executive_id: str) -> None:
        ring = self._rings.setdefault(customer_type, deque())
        if executive_id not in ring:
            ring.append(executive_id)

    async def remove(self, customer_type: str, executive_id: str) -> None:
        ring = self._rings.get(customer_type)
        if ring is not None and executive_id in ring:
            ring.remove(executive_id)

    async def next(self, customer_type: str) -> str | None:
        ring = self._rings.get(customer_type)
        if not ring:
            return None
        head = ring[0]
        ring.rotate(-1)
        return head

    async def give_back(self, customer_type: str, executive_id: str) -> None:
        ring = self._rings.get(customer_type)
        if ring is not None and executive_id in ring:
            ring.remove(executive_id)
            ring.appendleft(executive_id)

    async def members(self, customer_type: str) -> Sequence[str]:
        return list(self._rings.get(customer_type, ()))

    async def replace(self, customer_type: str, executive_ids: Sequence[str]) -> None:
        self._rings[customer_type] = deque(dict.fromkeys(executive_ids))


# --------------------------------------------------------------------- dedup, lock


class _Expiring:
    """Keys with an expiry on a clock, purged lazily through a heap."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._values: dict[str, tuple[str, datetime]] = {}
        self._heap: list[tuple[datetime, str]] = []

    def _purge(self, now: datetime) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires, key = heapq.heappop(self._heap)
            current = self._values.get(key)
            if current is not None and current[1] == expires:
                del self._values[key]

    def get(self, key: str) -> str | None:
        now = self._clock.now()
        self._purge(now)
        current = self._values.get(key)
        return current[0] if current is not None and current[1] > now else None

    def set_if_absent(self, key: str, value: str, ttl: timedelta) -> bool:
        if self.get(key) is not None:
            return False
        expires = self._clock.now() + ttl
        self._values[key] = (value, expires)
        heapq.heappush(self._heap, (expires, key))
        return True

    def delete(self, key: str, value: str | None = None) -> bool:
        current = self.get(key)
        if current is None or (value is not None and current != value):
            return False
        del self._values[key]
        return True


class MemoryAlertDedup(AlertDedup):
    """Dedup keys expiring on the given clock."""

    def __init__(self, clock: Clock) -> None:
        self._keys = _Expiring(clock)

    async def claim(self, key: str, ttl: timedelta) -> bool:
        return self._keys.set_if_absent(key, "1", ttl)

    async def release(self, key: str) -> None:
        self._keys.delete(key)

    def active(self, key: str) -> bool:
        """Whether ``key`` is set and not expired (for tests)."""
        return self._keys.get(key) is not None


class MemoryLock(Lock):
    """Leases expiring on the given clock (one process only)."""

    def __init__(self, clock: Clock) -> None:
        self._leases = _Expiring(clock)

    async def acquire(self, name: str, token: str, ttl: timedelta) -> bool:
        return self._leases.set_if_absent(name, token, ttl)

    async def release(self, name: str, token: str) -> bool:
        return self._leases.delete(name, token)


# ------------------------------------------------------------------------- events


@attrs.define(eq=False)
class _Subscriber:
    rooms: frozenset[str]
    stream: MemoryObjectSendStream[Event]
    dropped: int = 0


class MemoryEventPublisher(EventPublisher):
    """In-process fan-out.

    Each subscriber has a buffer of ``buffer_size`` events; when a subscriber
    does not keep up, further events for it are dropped (counted in
    :attr:`dropped`) instead of blocking the publisher.
    """

    def __init__(self, *, buffer_size: int = 1000) -> None:
        self.buffer_size = buffer_size
        self._subscribers: list[_Subscriber] = []
        self.dropped = 0

    async def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            if not rooms_match(event.rooms, subscriber.rooms):
                continue
            try:
                subscriber.stream.send_nowait(event)
            except anyio.WouldBlock:
                subscriber.dropped += 1
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._discard(subscriber)

    def _discard(self, subscriber: _Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def subscribe(self, rooms: Iterable[str]) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        return self._subscribe(frozenset(rooms))

    @asynccontextmanager
    async def _subscribe(self, rooms: frozenset[str]) -> AsyncIterator[AsyncIterator[Event]]:
        send, receive = anyio.create_memory_object_stream[Event](self.buffer_size)
        subscriber = _Subscriber(rooms, send)
        self._subscribers.append(subscriber)
        try:
            async with receive:
                yield receive
        finally:
            self._discard(subscriber)
            send.close()


class LoggingSender(MessageSender):
    """Writes outbound messages to the ``smartchat_core`` logger (demos)."""

    async def send_text(self, to: str, text: str) -> None:
        logger.info("WhatsApp to %s: %s", to, text)


# ---------------------------------------------------------------- ratings and log


class MemoryRatingStore(RatingStore):
    def __init__(self) -> None:
        self._ratings: dict[str, dict[datetime, Rating]] = {}

    async def add(self, rating: Rating) -> bool:
        per_chat = self._ratings.setdefault(rating.chat_id, {})
        if rating.resolved_at in per_chat:
            return False
        per_chat[rating.resolved_at] = rating
        return True

    async def for_chat(self, chat_id: str) -> Sequence[Rating]:
        return sorted(self._ratings.get(chat_id, {}).values(), key=lambda r: r.rated_at)


class MemoryResolutionLog(ResolutionLog):
    def __init__(self) -> None:
        self._entries: list[ResolutionEntry] = []
        self._by_chat: dict[str, list[ResolutionEntry]] = {}
        self._by_executive: dict[str, list[ResolutionEntry]] = {}

    async def append(self, entry: ResolutionEntry) -> None:
        self._entries.append(entry)
        self._by_chat.setdefault(entry.chat_id, []).append(entry)
        if entry.executive_id is not None:
            self._by_executive.setdefault(entry.executive_id, []).append(entry)

    async def entries(
        self, *, chat_id: str | None = None, executive_id: str | None = None, limit: int = 100
    ) -> Sequence[ResolutionEntry]:
        if chat_id is not None:
            source = self._by_chat.get(chat_id, [])
        elif executive_id is not None:
            source = self._by_executive.get(executive_id, [])
        else:
            source = self._entries
        selected = [
            e
            for e in reversed(source)
            if (chat_id is None or e.chat_id == chat_id)
            and (executive_id is None or e.executive_id == executive_id)
        ]
        return selected[:limit]


def memory_ports(
    settings: Settings,
    clock: Clock,
    sender: MessageSender,
    publisher: EventPublisher | None = None,
) -> Ports:
    """Ports on the in-memory adapters."""
    return Ports(
        settings=settings,
        clock=clock,
        chats=MemoryChatStore(awaiting_tag=settings.awaiting_tag),
        executives=MemoryExecutiveStore(),
        rotation=MemoryRotation(),
        dedup=MemoryAlertDedup(clock),
        lock=MemoryLock(clock),
        publisher=publisher or MemoryEventPublisher(),
        sender=sender,
        ratings=MemoryRatingStore(),
        resolutions=MemoryResolutionLog(),
    )
