"""A Hypothesis state machine over the whole library (SPEC §6).

It drives the blocking facade ``SmartChat(AsyncSmartChat(ports))`` with fresh
ports of every entry of the backend table (``tests/backends.py``) per example
(the memory entry runs the whole Hypothesis profile, the server entries
``SMARTCHAT_SM_SERVER_EXAMPLES`` examples, default 2), on virtual time,
through every public operation: executives come and go, customers write,
executives answer, tags come and go, chats are resolved and rated, the
monitors run, and now and then several operations run at once in one task
group.  After every step it takes a snapshot through the public API and
checks invariants 1-6 of SPEC §6 against it and against the events of the
step:

1. an open chat's assignee serves its type and is not offline; every
   assignment went to an executive online at that moment (replayed from the
   ``executive_status`` events), within its capacity; a chat is assigned once;
2. every counter equals a recount from the listed chats, and ``recount``
   changes nothing;
3. among executives continuously online and uncapped for a type, assignment
   counts differ by at most one;
4. no open chat with an offline executive; no chat waits while someone of its
   type has room; the queue is drained oldest first; no chat is ever lost;
5. SLA alerts only for open chats whose customer spoke last and waited the
   tier's threshold, at most once per dedup window, and every due alert goes
   out;
6. resolve, apply_tag and remove_tag are idempotent (every rule repeats them).

For the concurrent steps every port is wrapped so that each call may first
yield to the other tasks (a seeded number of times), which interleaves the
operations at every port call even on the in-memory backend.  At the end,
regression tests replay, with hooks on port calls, the interleavings the
machine found.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from backends import BACKEND_NAMES, backend_maker
from smartchat_core import (
    UNASSIGNED,
    AlreadyRatedError,
    AsyncSmartChat,
    Chat,
    ChatNotResolvedError,
    ChatResolvedError,
    ConflictError,
    Event,
    Executive,
    ExecutiveStatus,
    Interlocutor,
    InvalidInputError,
    NotAssigneeError,
    Settings,
    SlaTier,
    SmartChat,
    TypeCounters,
)
from smartchat_core.abc import Port
from smartchat_core.services import intake
from smartchat_core.testing import ManualClock, RecordingPublisher, RecordingSender, SentMessage
from smartchat_core.testing.backends import Backend

ONLINE, AWAY, OFFLINE = ExecutiveStatus.ONLINE, ExecutiveStatus.AWAY, ExecutiveStatus.OFFLINE
AWAITING = "awaiting"
TIERS = (
    SlaTier("alert", after=timedelta(minutes=3), recipient="+910000000001",
            dedup_ttl=timedelta(seconds=300)),
    SlaTier("escalation", after=timedelta(minutes=10), recipient="+910000000002",
            dedup_ttl=timedelta(seconds=700)),
)  # fmt: skip
TIER = {tier.name: tier for tier in TIERS}
SETTINGS = Settings(sla_tiers=TIERS, awaiting_tag=AWAITING)
RESOLUTION_TEXT = SETTINGS.resolution_message
START = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)

TYPES = ("retail", "b2b", "vip")
EXECUTIVES = ("e1", "e2", "e3", "e4")
CUSTOMERS = tuple(f"+9198000000{n:02d}" for n in range(12))
TAGS = ("vip", "billing", AWAITING)
TEXTS = st.sampled_from(["hi", "need help", "order .* status?", "[urgent] (50% off)", "ok"])
CAPACITIES = st.one_of(st.none(), st.integers(min_value=0, max_value=3))
TYPE_SETS = st.sets(st.sampled_from(TYPES), min_size=1, max_size=2)
SECONDS = st.one_of(
    st.integers(min_value=1, max_value=59),
    st.sampled_from([60, 89, 90, 91, 120, 179, 180, 240, 241, 300, 420, 600, 700]),
)


# ----------------------------------------------------------------- the desk


class _Jitter:
    """Interleaving control over every port call of a desk.

    When ``rng`` is set, each port call first yields to the other tasks a few
    times, often none, sometimes many (seeded, so an example replays exactly).
    A hook in ``hooks`` (by ``"port.method"``) runs once, just before the next
    such call, with its arguments: regression tests use them to force one
    precise interleaving.
    """

    def __init__(self) -> None:
        self.rng: random.Random | None = None
        self.hooks: dict[str, Callable[..., Awaitable[object]]] = {}

    async def before(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hook = self.hooks.pop(name, None)
        if hook is not None:
            await hook(*args, **kwargs)
        if self.rng is not None:
            for _ in range(self.rng.choice((0, 0, 0, 1, 1, 2, 3, 5, 8))):
                await anyio.lowlevel.checkpoint()


class _JitteredPort:
    def __init__(self, name: str, port: object, jitter: _Jitter) -> None:
        self._name = name
        self._port = port
        self._jitter = jitter

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._port, name)
        if not inspect.iscoroutinefunction(value):
            return value
        jitter, qualified = self._jitter, f"{self._name}.{name}"

        async def call(*args: Any, **kwargs: Any) -> Any:
            await jitter.before(qualified, args, kwargs)
            return await value(*args, **kwargs)

        setattr(self, name, call)  # built once per method
        return call


_JITTERED = ("chats", "executives", "rotation", "dedup", "lock", "publisher", "sender",
             "ratings", "resolutions")  # fmt: skip


class _BackendDesk(AsyncSmartChat):
    """``AsyncSmartChat(ports)`` on fresh ports of a backend of the table,
    built when the desk is entered, in the event loop that runs it (the
    SmartChat portal), so that server clients live in that loop."""

    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        clock: ManualClock,
        sender: RecordingSender,
        publisher: RecordingPublisher,
        jitter: _Jitter,
    ) -> None:
        # AsyncSmartChat.__init__ runs in __aenter__, once the ports exist.
        self._factory = lambda: backend.ports(settings, clock, sender, publisher)
        self._jitter = jitter
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> _BackendDesk:
        async with AsyncExitStack() as stack:
            ports = await stack.enter_async_context(self._factory())
            started: set[int] = set()
            for port in ports.all():
                if isinstance(port, Port) and id(port) not in started:
                    started.add(id(port))
                    await port.start(stack)
            wrapped = {
                name: _JitteredPort(name, getattr(ports, name), self._jitter) for name in _JITTERED
            }
            AsyncSmartChat.__init__(self, attrs.evolve(ports, **wrapped))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(*exc_info)


# ------------------------------------------------------------- snapshots


@attrs.frozen
class Snapshot:
    """What the public API says about the whole desk at one moment."""

    now: datetime
    chats: dict[str, Chat]
    listed: tuple[str, ...]
    """Chat ids in listing order."""
    executives: dict[str, Executive]
    type_counters: dict[str, TypeCounters]
    totals: tuple[int, int, int]
    open_listed: dict[str, int]
    """Totals of ``fetch_all_chats(status="open", assigned_executive_id=...)``
    per executive id and for ``"unassigned"``."""
    open_by_type: dict[str, int]
    online_by_type: dict[str, frozenset[str]]
    rings: dict[str, tuple[str, ...]]
    recounted: tuple[dict[str, TypeCounters], dict[str, tuple[int, int]]]

    def state(self) -> tuple[object, ...]:
        """What an idempotent call must leave unchanged."""
        return (self.chats, self.executives, self.type_counters, self.totals)

    def by_customer(self, customer_id: str) -> Chat | None:
        for chat in self.chats.values():
            if chat.customer_id == customer_id:
                return chat
        return None

    def available(self, customer_type: str) -> list[str]:
        """Online executives of the type with room for one more chat."""
        return [
            e.id
            for e in self.executives.values()
            if e.status is ONLINE and customer_type in e.customer_types and e.has_capacity
        ]


def _nonzero(counters: dict[str, TypeCounters]) -> dict[str, TypeCounters]:
    return {name: c for name, c in counters.items() if c != TypeCounters()}


async def _snapshot(desk: AsyncSmartChat) -> Snapshot:
    page = await desk.fetch_all_chats(limit=200)
    assert page.total == len(page.items) <= len(CUSTOMERS)
    executives = await desk.list_executives()
    counters = await desk.get_counters()
    open_listed = {}
    for executive_id in [e.id for e in executives] + [UNASSIGNED]:
        listed = await desk.fetch_all_chats(
            status="open", assigned_executive_id=executive_id, limit=200
        )
        open_listed[executive_id] = listed.total
    open_by_type, online_by_type, rings = {}, {}, {}
    for customer_type in TYPES:
        listed = await desk.fetch_all_chats(status="open", customer_type=customer_type, limit=1)
        open_by_type[customer_type] = listed.total
        online = await desk.get_online_executives(customer_type)
        online_by_type[customer_type] = frozenset(e.id for e in online)
        rings[customer_type] = tuple(await desk.ports.rotation.members(customer_type))
    recounted = await desk.recount()
    after = await desk.list_executives()
    return Snapshot(
        now=desk.clock.now(),
        chats={chat.id: chat for chat in page.items},
        listed=tuple(chat.id for chat in page.items),
        executives={e.id: e for e in executives},
        type_counters=_nonzero(counters.by_type),
        totals=(counters.open, counters.unassigned, counters.awaiting),
        open_listed=open_listed,
        open_by_type=open_by_type,
        online_by_type=online_by_type,
        rings=rings,
        recounted=(
            _nonzero(recounted.by_type),
            {e.id: (e.open_chats, e.awaiting_chats) for e in after},
        ),
    )


@attrs.define
class Step:
    """What the rule of the current step told the checks."""

    concurrent: bool = False
    unchanged: bool = False
    """The step must not change anything (an error, or a no-op)."""
    no_fair_count: set[str] = attrs.Factory(set)
    """Customer types whose fairness tracking restarts after this step,
    without counting its assignments (an executive skipped on purpose)."""
    returned: list[Chat] = attrs.Factory(list)
    """Chats returned by the operation: must equal the snapshot after it."""
    kept: dict[str, str] = attrs.Factory(dict)
    """Chats a release left with their executive (still online): chat id ->
    executive id."""


def _assignment(event: Event) -> tuple[str, str | None, str] | None:
    """(chat id, to executive, customer type) of an assignment event."""
    if event.name == "chat_assigned":
        to = event.payload["executive_id"]
    elif event.name == "chat_reassigned":
        to = event.payload["to_executive_id"]
    else:
        return None
    return event.payload["chat_id"], to, event.payload["chat"]["customer_type"]


# ---------------------------------------------------------------- the machine


class DeskMachine(RuleBasedStateMachine):
    def __init__(self, backend: Backend, loop: str) -> None:
        super().__init__()
        self.clock = ManualClock(START)
        self.sender = RecordingSender()
        self.publisher = RecordingPublisher()
        self.jitter = _Jitter()
        self.desk = SmartChat(
            _BackendDesk(backend, SETTINGS, self.clock, self.sender, self.publisher, self.jitter),
            backend=loop,
        )
        self.desk.__enter__()
        # The model.
        self.status: dict[str, ExecutiveStatus] = {}
        self.chat_of: dict[str, str] = {}  # customer -> chat id, forever
        self.ratings: Counter[str] = Counter()
        self.rated: set[tuple[str, datetime]] = set()
        self.last_alert: dict[tuple[str, str], datetime] = {}
        self.replayed: dict[str, ExecutiveStatus] = {}
        self.fair: dict[str, tuple[frozenset[str], Counter[str]]] = {}
        self.stale_rings_allowed = False
        # Where the current step began.
        self.events_seen = 0
        self.sent_seen = 0
        self.step = Step()
        self.pre = self.snapshot()

    def teardown(self) -> None:
        self.desk.__exit__(None, None, None)

    # ------------------------------------------------------------- helpers
    def snapshot(self) -> Snapshot:
        async def take() -> Snapshot:
            return await _snapshot(self.desk.desk)

        return self.desk.portal.call(take)

    def new_events(self) -> list[Event]:
        return self.publisher.events[self.events_seen :]

    def new_sent(self) -> list[SentMessage]:
        return self.sender.sent[self.sent_seen :]

    def pick_customer(self, data: st.DataObject, chats: Callable[[Chat], bool]) -> Chat:
        customers = sorted(c for c, i in self.chat_of.items() if chats(self.pre.chats[i]))
        return self.pre.chats[self.chat_of[data.draw(st.sampled_from(customers))]]

    def has_chat(self, wanted: Callable[[Chat], bool]) -> bool:
        return any(wanted(chat) for chat in self.pre.chats.values())

    def repeat_changes_nothing(self, call: Callable[[], object], expected: object) -> None:
        """Invariant 6: the second call returns the same and changes nothing."""
        before, events, sent = self.snapshot(), len(self.publisher.events), len(self.sender.sent)
        assert call() == expected
        assert self.snapshot().state() == before.state()
        assert self.publisher.events[events:] == []
        assert self.sender.sent[sent:] == []

    # ------------------------------------------------------------ executives
    @initialize(
        team=st.lists(
            st.tuples(TYPE_SETS, CAPACITIES, st.sampled_from([ONLINE, ONLINE, ONLINE, AWAY])),
            min_size=1,
            max_size=len(EXECUTIVES),
        )
    )
    def hire(self, team: list[tuple[set[str], int | None, ExecutiveStatus]]) -> None:
        """A team at work from the start, so that rotations have members."""
        for executive_id, (customer_types, capacity, status) in zip(EXECUTIVES, team, strict=False):
            self.desk.register_executive(
                executive_id, name=executive_id, customer_types=customer_types,
                max_open_chats=capacity,
            )  # fmt: skip
            got = self.desk.set_executive_status(executive_id, status)
            assert got.status is status
            self.status[executive_id] = status
            self.replayed[executive_id] = OFFLINE

    @rule(
        executive_id=st.sampled_from(EXECUTIVES),
        name=st.sampled_from(["Asha", "Ravi", "Meera"]),
        customer_types=TYPE_SETS,
        capacity=CAPACITIES,
    )
    def register(
        self, executive_id: str, name: str, customer_types: set[str], capacity: int | None
    ) -> None:
        before = self.pre.executives.get(executive_id)
        got = self.desk.register_executive(
            executive_id, name=name, customer_types=customer_types, max_open_chats=capacity
        )
        status = before.status if before is not None else OFFLINE
        assert (got.id, got.name, got.customer_types, got.max_open_chats, got.status) == (
            executive_id,
            name,
            frozenset(customer_types),
            capacity,
            status,
        )
        self.status[executive_id] = status
        self.replayed.setdefault(executive_id, OFFLINE)
        if before is not None:
            for event in self.new_events():
                if event.name == "chat_reassigned":
                    assert event.payload["from_executive_id"] == executive_id
                    assert event.payload["chat"]["customer_type"] not in customer_types

    @precondition(lambda self: self.status)
    @rule(data=st.data(), status=st.sampled_from(list(ExecutiveStatus)), as_text=st.booleans())
    def set_status(self, data: st.DataObject, status: ExecutiveStatus, as_text: bool) -> None:
        executive_id = data.draw(st.sampled_from(sorted(self.status)))
        before = self.pre.executives[executive_id]
        got = self.desk.set_executive_status(executive_id, status.value if as_text else status)
        assert got.status is status
        assert got.last_active_at == self.clock.now()
        self.status[executive_id] = status
        changes = [e for e in self.new_events() if e.name == "executive_status"]
        assert len(changes) == (before.status is not status)
        if status is not ONLINE:
            # Released: nothing of it may go back to it.
            for event in self.new_events():
                if event.name == "chat_reassigned":
                    assert event.payload["from_executive_id"] == executive_id
        if status is OFFLINE:
            assert got.open_chats == 0

    @precondition(lambda self: self.status)
    @rule(data=st.data(), capacity=CAPACITIES)
    def set_capacity(self, data: st.DataObject, capacity: int | None) -> None:
        executive_id = data.draw(st.sampled_from(sorted(self.status)))
        before = self.pre.executives[executive_id]
        got = self.desk.set_executive_capacity(executive_id, capacity)
        assert got.max_open_chats == capacity
        assert (got.status, got.customer_types) == (before.status, before.customer_types)
        if capacity is not None and capacity < before.open_chats:
            assert got.open_chats == before.open_chats  # nobody loses chats to a smaller limit

    @precondition(lambda self: self.status)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        executive_id = data.draw(st.sampled_from(sorted(self.status)))
        before = self.pre.executives[executive_id]
        got = self.desk.heartbeat(executive_id)
        assert got.last_active_at == self.clock.now()
        assert attrs.evolve(got, last_active_at=before.last_active_at) == before
        assert self.new_events() == []

    @precondition(lambda self: self.status)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        executive_id = data.draw(st.sampled_from(sorted(self.status)))
        executive = self.pre.executives[executive_id]
        held = {
            c.id
            for c in self.pre.chats.values()
            if c.is_open and c.assigned_executive_id == executive_id
        }
        moved = self.desk.release_and_reassign_chats(executive_id)
        assert {c.id for c in moved} == held
        for event in self.new_events():
            if event.name == "chat_reassigned":
                assert event.payload["from_executive_id"] == executive_id
                assert event.payload["to_executive_id"] != executive_id
        self.step.returned.extend(moved)
        if executive.status is ONLINE:
            # It was skipped on purpose: the rotation counts restart.
            self.step.no_fair_count |= executive.customer_types
        self.step.kept = {
            c.id: executive_id for c in moved if c.assigned_executive_id == executive_id
        }

    # ------------------------------------------------------------ messages
    @rule(
        customer=st.sampled_from(CUSTOMERS),
        customer_type=st.sampled_from(TYPES),
        text=TEXTS,
    )
    def incoming(self, customer: str, customer_type: str, text: str) -> None:
        before = self.pre.by_customer(customer)
        chat = self.desk.receive_customer_message(
            customer_id=customer, customer_name=f"Customer {customer[-2:]}",
            customer_type=customer_type, text=text,
        )  # fmt: skip
        now = self.clock.now()
        assert self.chat_of.setdefault(customer, chat.id) == chat.id
        assert chat.is_open and chat.customer_id == customer
        assert chat.last_interaction_by is Interlocutor.CUSTOMER
        assert chat.last_incoming_message == chat.last_activity_at == now
        assert chat.last_message == text and AWAITING not in chat.tags
        if before is None or before.is_resolved:
            assert chat.customer_type == customer_type
            assert chat.opened_at == now and chat.tags == ()
            if before is not None:
                assert chat.created_at == before.created_at
        else:
            assert chat.customer_type == before.customer_type
            assert chat.tags == tuple(t for t in before.tags if t != AWAITING)
            if before.assigned_executive_id is not None:
                assert chat.assigned_executive_id == before.assigned_executive_id
        messages = [e for e in self.new_events() if e.name == "chat_message"]
        assert [e.payload["direction"] for e in messages] == ["incoming"]
        self.step.returned.append(chat)

    @rule(
        customers=st.lists(st.sampled_from(CUSTOMERS), min_size=2, max_size=6, unique=True),
        customer_type=st.sampled_from(TYPES),
    )
    def burst(self, customers: list[str], customer_type: str) -> None:
        """Several customers of one type write, one after the other."""
        for customer in customers:
            chat = self.desk.receive_customer_message(
                customer_id=customer, customer_name=f"Customer {customer[-2:]}",
                customer_type=customer_type, text="hello?",
            )  # fmt: skip
            assert self.chat_of.setdefault(customer, chat.id) == chat.id
            assert chat.is_open and chat.last_interaction_by is Interlocutor.CUSTOMER

    @precondition(lambda self: self.has_chat(lambda c: c.is_open and c.assigned_executive_id))
    @rule(data=st.data(), text=TEXTS)
    def outgoing(self, data: st.DataObject, text: str) -> None:
        chat = self.pick_customer(data, lambda c: c.is_open and c.assigned_executive_id is not None)
        executive_id = chat.assigned_executive_id
        assert executive_id is not None
        got = self.desk.send_executive_message(chat.id, executive_id=executive_id, text=text)
        now = self.clock.now()
        assert got.last_interaction_by is Interlocutor.EXECUTIVE
        assert got.last_outgoing_message == got.last_activity_at == now
        assert (got.tags, got.assigned_executive_id, got.last_message) == (
            chat.tags, executive_id, text
        )  # fmt: skip
        assert self.new_sent() == [SentMessage(chat.customer_id, text)]
        assert self.desk.get_executive(executive_id).last_active_at == now
        self.step.returned.append(got)

    @precondition(lambda self: self.has_chat(lambda c: c.is_open))
    @rule(data=st.data())
    def outgoing_by_another(self, data: st.DataObject) -> None:
        chat = self.pick_customer(data, lambda c: c.is_open)
        others = sorted(set(self.status) - {chat.assigned_executive_id})
        if not others:
            return
        with pytest.raises(NotAssigneeError):
            self.desk.send_executive_message(
                chat.id, executive_id=data.draw(st.sampled_from(others)), text="hello"
            )
        self.step.unchanged = True

    # ---------------------------------------------------------------- tags
    @precondition(lambda self: self.chat_of)
    @rule(data=st.data(), tag=st.sampled_from(TAGS), add=st.booleans())
    def tag(self, data: st.DataObject, tag: str, add: bool) -> None:
        chat = self.pick_customer(data, lambda c: True)
        operation = self.desk.apply_tag if add else self.desk.remove_tag
        if chat.is_resolved:
            with pytest.raises(ChatResolvedError):
                operation(chat.id, tag)
            self.step.unchanged = True
            return
        got = operation(chat.id, tag)
        assert (tag in got.tags) is add
        assert set(got.tags) == (set(chat.tags) | {tag} if add else set(chat.tags) - {tag})
        changed = (tag in chat.tags) is not add
        updates = [e for e in self.new_events() if e.name == "tag_updated"]
        assert [(e.payload["tag"], e.payload["action"]) for e in updates] == (
            [(tag, "added" if add else "removed")] if changed else []
        )
        self.repeat_changes_nothing(lambda: operation(chat.id, tag), got)
        self.step.returned.append(got)

    # ---------------------------------------------------------- resolution
    @precondition(lambda self: self.chat_of)
    @rule(data=st.data(), who=st.sampled_from(["assignee", "supervisor", "another"]))
    def resolve(self, data: st.DataObject, who: str) -> None:
        chat = self.pick_customer(data, lambda c: True)
        executive_id = None
        if who == "assignee":
            executive_id = chat.assigned_executive_id
        elif who == "another":
            others = sorted(set(self.status) - {chat.assigned_executive_id})
            executive_id = data.draw(st.sampled_from(others)) if others else None
            if executive_id is not None and chat.is_open:
                with pytest.raises(NotAssigneeError):
                    self.desk.resolve_chat(chat.id, executive_id=executive_id)
                self.step.unchanged = True
                return
        got = self.desk.resolve_chat(chat.id, executive_id=executive_id)
        if chat.is_resolved:
            assert got == chat
            self.step.unchanged = True
            return
        now = self.clock.now()
        assert got.is_resolved and got.resolved_at == now and got.tags == ()
        assert got.assigned_executive_id == chat.assigned_executive_id
        assert got.queued_at is None
        assert [m for m in self.new_sent() if m.recipient == chat.customer_id] == [
            SentMessage(chat.customer_id, RESOLUTION_TEXT)
        ]
        resolved = [e for e in self.new_events() if e.name == "chat_resolved"]
        assert [e.payload["chat_id"] for e in resolved] == [chat.id]
        entry = self.desk.get_resolutions(chat_id=chat.id, limit=1)[0]
        assert (entry.executive_id, entry.opened_at, entry.resolved_at, entry.tags) == (
            chat.assigned_executive_id, chat.opened_at, now, chat.tags
        )  # fmt: skip
        self.repeat_changes_nothing(
            lambda: self.desk.resolve_chat(chat.id, executive_id=executive_id), got
        )
        self.step.returned.append(got)

    @precondition(lambda self: self.chat_of)
    @rule(
        data=st.data(),
        score=st.sampled_from([1, 2, 3, 4, 5, 0, 6, -1, True]),
        comment=st.sampled_from([None, "", "quick", "  fine  "]),
    )
    def rate(self, data: st.DataObject, score: int, comment: str | None) -> None:
        chat = self.pick_customer(data, lambda c: True)
        if isinstance(score, bool) or not 1 <= score <= 5:
            expected: type[Exception] | None = InvalidInputError
        elif chat.is_open:
            expected = ChatNotResolvedError
        elif (chat.id, chat.resolved_at) in self.rated:
            expected = AlreadyRatedError
        else:
            expected = None
        if expected is not None:
            with pytest.raises(expected):
                self.desk.rate_chat(chat.id, score=score, comment=comment)
            self.step.unchanged = True
        else:
            rating = self.desk.rate_chat(chat.id, score=score, comment=comment)
            assert (rating.chat_id, rating.score, rating.executive_id, rating.resolved_at) == (
                chat.id, score, chat.assigned_executive_id, chat.resolved_at
            )  # fmt: skip
            assert rating.comment == ((comment or "").strip() or None)
            assert [e.name for e in self.new_events()] == ["chat_rated"]
            self.rated.add((chat.id, chat.resolved_at))  # type: ignore[arg-type]
            self.ratings[chat.id] += 1
        assert len(self.desk.get_ratings(chat.id)) == self.ratings[chat.id]

    @precondition(lambda self: self.chat_of)
    @rule(data=st.data())
    def assign_round_robin(self, data: st.DataObject) -> None:
        chat = self.pick_customer(data, lambda c: True)
        if chat.is_resolved:
            with pytest.raises(ChatResolvedError):
                self.desk.assign_chat_round_robin(chat.id)
            self.step.unchanged = True
            return
        got = self.desk.assign_chat_round_robin(chat.id)
        if chat.assigned_executive_id is not None or not self.pre.available(chat.customer_type):
            assert got == chat  # assigned already, or nobody available: it keeps waiting
            self.step.unchanged = True
        self.step.returned.append(got)

    # ------------------------------------------------------- time, monitors
    @rule(seconds=SECONDS)
    def advance(self, seconds: int) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    @rule()
    def sla_check(self) -> None:
        now = self.clock.now()
        due = set()
        for tier in TIERS:
            for chat in self.pre.chats.values():
                last = self.last_alert.get((chat.id, tier.name))
                if (
                    chat.is_open
                    and chat.last_interaction_by is Interlocutor.CUSTOMER
                    and chat.last_incoming_message is not None
                    and now - chat.last_incoming_message >= tier.after
                    and (last is None or now >= last + tier.dedup_ttl)
                ):
                    due.add((chat.id, tier.name))
        alerts = self.desk.run_sla_check()
        assert {(a.chat_id, a.tier) for a in alerts} == due
        assert len(alerts) == len(due) and all(a.delivered for a in alerts)
        assert sorted(m.recipient for m in self.new_sent()) == sorted(
            TIER[tier].recipient or "" for _, tier in due
        )
        self.step.unchanged = True  # alerts change no chat

    @rule()
    def awaiting_check(self) -> None:
        cutoff = self.clock.now() - SETTINGS.awaiting_after
        due = {
            chat.id
            for chat in self.pre.chats.values()
            if chat.is_open
            and chat.last_interaction_by is Interlocutor.EXECUTIVE
            and chat.last_outgoing_message is not None
            and chat.last_outgoing_message <= cutoff
            and AWAITING not in chat.tags
        }
        tagged = self.desk.run_awaiting_check()
        assert sorted(c.id for c in tagged) == sorted(due)
        assert all(AWAITING in c.tags for c in tagged)
        updates = [e for e in self.new_events() if e.name == "tag_updated"]
        assert sorted(e.payload["chat_id"] for e in updates) == sorted(due)
        self.step.returned.extend(tagged)

    @rule()
    def inactivity_check(self) -> None:
        cutoff = self.clock.now() - SETTINGS.inactivity_timeout
        due = {
            e.id
            for e in self.pre.executives.values()
            if e.status is not OFFLINE
            and e.last_active_at is not None
            and e.last_active_at <= cutoff
        }
        gone = self.desk.run_inactivity_check()
        assert sorted(e.id for e in gone) == sorted(due)
        assert all(e.status is OFFLINE and e.open_chats == 0 for e in gone)
        for executive_id in due:
            self.status[executive_id] = OFFLINE

    # ------------------------------------------------------------ at once
    @rule(data=st.data(), seed=st.integers(min_value=0, max_value=2**32 - 1))
    def at_once(self, data: st.DataObject, seed: int) -> None:
        """Several operations concurrently in one task group, interleaved at
        every port call."""
        executives = sorted(self.status)
        customers = sorted(self.chat_of)
        kinds = ["incoming", "sla", "awaiting"]
        if executives:
            kinds += ["status", "capacity", "heartbeat", "release", "inactivity"]
        if customers:
            kinds += ["resolve", "reply", "tag", "assign"]
        desk = self.desk.desk
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        status_ops: Counter[str] = Counter()
        final: dict[str, ExecutiveStatus] = {}
        wrote: set[str] = set()
        for _ in range(data.draw(st.integers(min_value=2, max_value=6))):
            kind = data.draw(st.sampled_from(kinds))
            op: Callable[[], Awaitable[object]]
            if kind == "incoming":
                customer = data.draw(st.sampled_from(CUSTOMERS))
                wrote.add(customer)
                op = partial(
                    desk.receive_customer_message,
                    customer_id=customer,
                    customer_name=f"Customer {customer[-2:]}",
                    customer_type=data.draw(st.sampled_from(TYPES)),
                    text="at once",
                )
            elif kind in ("status", "capacity", "heartbeat", "release"):
                executive_id = data.draw(st.sampled_from(executives))
                if kind == "status":
                    status = data.draw(st.sampled_from(list(ExecutiveStatus)))
                    status_ops[executive_id] += 1
                    final[executive_id] = status
                    op = partial(desk.set_executive_status, executive_id, status)
                elif kind == "capacity":
                    op = partial(desk.set_executive_capacity, executive_id, data.draw(CAPACITIES))
                elif kind == "heartbeat":
                    op = partial(desk.heartbeat, executive_id)
                else:
                    op = partial(desk.release_and_reassign_chats, executive_id)
            elif kind in ("resolve", "reply", "tag", "assign"):
                chat = self.pre.chats[self.chat_of[data.draw(st.sampled_from(customers))]]
                if kind == "resolve":
                    op = partial(desk.resolve_chat, chat.id)
                elif kind == "reply":
                    if chat.assigned_executive_id is None:
                        continue
                    op = partial(
                        desk.send_executive_message,
                        chat.id,
                        executive_id=chat.assigned_executive_id,
                        text="at once",
                    )
                elif kind == "tag":
                    tagger = desk.apply_tag if data.draw(st.booleans()) else desk.remove_tag
                    op = partial(tagger, chat.id, data.draw(st.sampled_from(TAGS)))
                else:
                    op = partial(desk.assign_chat_round_robin, chat.id)
            elif kind == "sla":
                op = desk.run_sla_check
            elif kind == "awaiting":
                op = desk.run_awaiting_check
            else:
                op = desk.run_inactivity_check
                final.clear()
                status_ops.update(dict.fromkeys(executives, 2))  # any status may result
            calls.append((kind, op))
        before = self.pre

        async def run_all() -> None:
            async def one(kind: str, op: Callable[[], Awaitable[object]]) -> None:
                try:
                    await op()
                except ConflictError:
                    # The chat moved on meanwhile (resolved, reassigned).
                    assert kind in ("resolve", "reply", "tag", "assign")

            async with anyio.create_task_group() as group:
                for kind, op in calls:
                    group.start_soon(one, kind, op)

        self.jitter.rng = random.Random(seed)
        try:
            self.desk.portal.call(run_all)
        finally:
            self.jitter.rng = None
        self.step.concurrent = True
        after = self.snapshot()
        for customer in wrote:  # no chat lost
            chat = after.by_customer(customer)
            assert chat is not None
            assert self.chat_of.setdefault(customer, chat.id) == chat.id
        for executive_id in executives:
            got = after.executives[executive_id].status
            if status_ops[executive_id] == 0:
                assert got is before.executives[executive_id].status
            elif status_ops[executive_id] == 1 and executive_id in final:
                assert got is final[executive_id]
            self.status[executive_id] = got

    # ---------------------------------------------------------- invariants
    @invariant()
    def check(self) -> None:
        post = self.snapshot()
        pre, step, events = self.pre, self.step, self.new_events()
        # Concurrent profile updates may leave an executive in a rotation it
        # no longer belongs to (dropped lazily by the next walk of the ring).
        self.stale_rings_allowed |= step.concurrent
        try:
            self.check_structure(post)
            self.check_counters(post)
            self.check_assignees(post)
            self.check_events(pre, post, step, events)
            if not step.concurrent:
                self.check_sequential(pre, post, step, events)
            self.check_fairness(post, step, events)
        finally:
            self.pre, self.step = post, Step()
            self.events_seen, self.sent_seen = len(self.publisher.events), len(self.sender.sent)

    def check_structure(self, post: Snapshot) -> None:
        """No chat lost, one chat per customer, listing order, chat shape."""
        assert sorted(c.customer_id for c in post.chats.values()) == sorted(self.chat_of)
        for customer, chat_id in self.chat_of.items():
            assert post.chats[chat_id].customer_id == customer
        order = sorted(post.chats.values(), key=lambda c: (-c.last_activity_at.timestamp(), c.id))
        assert post.listed == tuple(c.id for c in order)
        assert set(post.executives) == set(self.status)
        for chat in post.chats.values():
            assert len(set(chat.tags)) == len(chat.tags)
            if chat.is_resolved:
                assert chat.resolved_at is not None and chat.tags == () and chat.queued_at is None
            else:
                assert chat.resolved_at is None
                assert (chat.queued_at is None) is (chat.assigned_executive_id is not None)
                assert (chat.assigned_at is None) is (chat.assigned_executive_id is None)
            if chat.last_interaction_by is Interlocutor.CUSTOMER:
                assert chat.last_incoming_message == chat.last_activity_at
            elif chat.last_interaction_by is Interlocutor.EXECUTIVE:
                assert chat.last_outgoing_message == chat.last_activity_at

    def check_counters(self, post: Snapshot) -> None:
        """Invariant 2: every counter equals a recount; recount changes nothing."""
        per_executive: dict[str, list[int]] = {e: [0, 0] for e in post.executives}
        per_type: dict[str, list[int]] = {}
        for chat in post.chats.values():
            if chat.is_resolved:
                continue
            awaiting = AWAITING in chat.tags
            counts = per_type.setdefault(chat.customer_type, [0, 0, 0])
            counts[0] += 1
            counts[1] += chat.assigned_executive_id is None
            counts[2] += awaiting
            if chat.assigned_executive_id is not None:
                mine = per_executive.setdefault(chat.assigned_executive_id, [0, 0])
                mine[0] += 1
                mine[1] += awaiting
        expected_types = _nonzero({t: TypeCounters(*c) for t, c in per_type.items()})
        expected_executives = {e: tuple(c) for e, c in per_executive.items()}
        got = {e.id: (e.open_chats, e.awaiting_chats) for e in post.executives.values()}
        assert got == expected_executives
        assert post.type_counters == expected_types
        assert post.totals == tuple(sum(c[i] for c in per_type.values()) for i in range(3))
        assert post.recounted == (expected_types, expected_executives)
        listed = {e: c[0] for e, c in per_executive.items()}
        listed[UNASSIGNED] = sum(c[1] for c in per_type.values())
        assert post.open_listed == listed
        assert post.open_by_type == {t: per_type.get(t, [0])[0] for t in TYPES}

    def check_assignees(self, post: Snapshot) -> None:
        """Invariants 1 and 4: assignees serve the type and are not offline;
        nobody waits while someone of the type has room; rotations hold every
        online executive."""
        for chat in post.chats.values():
            if chat.is_open and chat.assigned_executive_id is not None:
                executive = post.executives[chat.assigned_executive_id]
                assert chat.customer_type in executive.customer_types, chat
                assert executive.status is not OFFLINE, chat
        for customer_type in TYPES:
            waiting = [
                c for c in post.chats.values() if c.is_waiting and c.customer_type == customer_type
            ]
            available = post.available(customer_type)
            assert not (waiting and available), (customer_type, waiting, available)
            online = {
                e.id
                for e in post.executives.values()
                if e.status is ONLINE and customer_type in e.customer_types
            }
            assert post.online_by_type[customer_type] == online
            ring = set(post.rings[customer_type])
            assert online <= ring, (customer_type, online, ring)
            if not self.stale_rings_allowed:
                assert ring == online, (customer_type, online, ring)
        # Chats a release left with their (still online) executive: nobody
        # else of the type had room.
        for chat_id, executive_id in self.step.kept.items():
            chat = post.chats[chat_id]
            assert chat.assigned_executive_id == executive_id
            assert set(post.available(chat.customer_type)) <= {executive_id}

    def check_events(self, pre: Snapshot, post: Snapshot, step: Step, events: list[Event]) -> None:
        """Payloads, SLA dedup (invariant 5), one assignment per chat."""
        assigned: Counter[str] = Counter()
        left: Counter[str] = Counter()  # unassigned or resolved
        for event in events:
            json.dumps(event.to_json())
            if event.name == "sla_alert":
                key = (event.payload["chat_id"], event.payload["alert_type"])
                last = self.last_alert.get(key)
                assert last is None or event.occurred_at >= last + TIER[key[1]].dedup_ttl, key
                self.last_alert[key] = event.occurred_at
            elif event.name == "chat_assigned":
                assigned[event.payload["chat_id"]] += 1
            elif event.name == "chat_reassigned":
                assert event.payload["from_executive_id"] != event.payload["to_executive_id"]
                if event.payload["to_executive_id"] is None:
                    left[event.payload["chat_id"]] += 1
            elif event.name == "chat_resolved":
                left[event.payload["chat_id"]] += 1
            assignment = _assignment(event)
            if assignment is not None and assignment[1] is not None:
                _, to, customer_type = assignment
                assert customer_type in post.executives[to].customer_types or (
                    customer_type in pre.executives[to].customer_types
                )
        # A chat is assigned once: each chat_assigned needs it unassigned
        # before (whatever the order the concurrent publishers kept).
        for chat_id, count in assigned.items():
            before = pre.chats.get(chat_id)
            held = before is not None and before.is_open and before.assigned_executive_id
            assert count <= (0 if held else 1) + left[chat_id], (chat_id, count, events)

    def check_sequential(
        self, pre: Snapshot, post: Snapshot, step: Step, events: list[Event]
    ) -> None:
        # The model's statuses.
        assert {e.id: e.status for e in post.executives.values()} == self.status
        if step.unchanged:
            assert post.state() == pre.state()
            assert events == [] or all(e.name == "sla_alert" for e in events)
            if not any(e.name == "sla_alert" for e in events):
                assert self.new_sent() == []
        for chat in step.returned:
            assert post.chats[chat.id] == chat
        # Invariant 1: each assignment went to an executive online at that
        # moment (replaying the status events in publish order).
        assigned_to: Counter[str] = Counter()
        for event in events:
            if event.name == "executive_status":
                self.replayed[event.payload["executive_id"]] = ExecutiveStatus(
                    event.payload["status"]
                )
            assignment = _assignment(event)
            if assignment is not None and assignment[1] is not None:
                assert self.replayed[assignment[1]] is ONLINE, (event, self.replayed)
                assigned_to[assignment[1]] += 1
        assert self.replayed == self.status
        # ... within its capacity.
        for executive_id in assigned_to:
            executive = post.executives[executive_id]
            if executive.max_open_chats is not None:
                assert executive.open_chats <= executive.max_open_chats
        # Invariant 4: the queue is drained oldest first.
        for customer_type in TYPES:
            queue = sorted(
                (
                    c
                    for c in pre.chats.values()
                    if c.is_waiting and c.customer_type == customer_type
                ),
                key=lambda c: (c.queued_at, c.id),
            )
            states = [
                "waiting" if post.chats[c.id].is_waiting else "assigned"
                for c in queue
                if post.chats[c.id].is_open
            ]
            if "waiting" in states:
                assert "assigned" not in states[states.index("waiting") :], (queue, states)
        # Invariant 5: alerts only for open chats whose customer spoke last
        # and waited the tier's threshold.
        for event in events:
            if event.name == "sla_alert":
                chat = post.chats[event.payload["chat_id"]]
                tier = TIER[event.payload["alert_type"]]
                assert chat.is_open, event
                assert chat.last_interaction_by is Interlocutor.CUSTOMER, event
                assert chat.last_incoming_message is not None
                assert event.occurred_at - chat.last_incoming_message >= tier.after, event

    def check_fairness(self, post: Snapshot, step: Step, events: list[Event]) -> None:
        """Invariant 3: among executives continuously online and uncapped for a
        type, the assignment counts differ by at most one."""
        counted: dict[str, list[str]] = {t: [] for t in TYPES}
        for event in events:
            assignment = _assignment(event)
            if assignment is not None and assignment[1] is not None:
                counted[assignment[2]].append(assignment[1])
        if step.concurrent:
            self.replayed = dict(self.status)
        for customer_type in TYPES:
            members = frozenset(
                e.id
                for e in post.executives.values()
                if e.status is ONLINE
                and customer_type in e.customer_types
                and e.max_open_chats is None
            )
            old_members, counts = self.fair.get(customer_type, (frozenset(), Counter()))
            if step.concurrent or customer_type in step.no_fair_count:
                self.fair[customer_type] = (members, Counter())
                continue
            if members != old_members:
                # Membership changed in this step, before its assignments: the
                # rotation among the members is one contiguous run from here.
                counts = Counter()
            counts.update(e for e in counted[customer_type] if e in members)
            if members:
                values = [counts[e] for e in members]
                assert max(values) - min(values) <= 1, (customer_type, dict(counts), members)
            self.fair[customer_type] = (members, counts)


class _ChatIds:
    """Stands in for the ``uuid`` module of the intake service: chat ids in a
    scrambled but reproducible order, so that ties (broken by id) replay the
    same way when Hypothesis replays or shrinks an example."""

    def __init__(self) -> None:
        self.issued = 0

    def uuid4(self) -> uuid.UUID:
        self.issued += 1
        return uuid.UUID(bytes=hashlib.md5(str(self.issued).encode()).digest())


SERVER_EXAMPLES = int(os.environ.get("SMARTCHAT_SM_SERVER_EXAMPLES", "2"))
"""Examples per run on the server-backed entries of the table (each costs
seconds of round trips); the memory entry runs the full Hypothesis profile."""


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
def test_state_machine(
    backend_name: str, loop: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = backend_maker(backend_name, request)  # a new database / key prefix per example
    if loop != "asyncio" and fresh().asyncio_only:
        pytest.skip(f"the {backend_name} adapters run under asyncio only")

    def machine() -> DeskMachine:
        monkeypatch.setattr(intake, "uuid", _ChatIds())
        return DeskMachine(fresh(), loop)

    # Settings come from the loaded profile (tests/conftest.py: "ci" under CI).
    profile = settings()
    if backend_name != "memory":
        profile = settings(profile, max_examples=min(profile.max_examples, SERVER_EXAMPLES))
    run_state_machine_as_test(machine, settings=profile)


# ------------------------------------------------- regressions the machine found


@pytest.fixture(params=BACKEND_NAMES)
async def hooked(
    request: pytest.FixtureRequest, anyio_backend: str
) -> AsyncIterator[tuple[_BackendDesk, _Jitter]]:
    """A desk on an entry of the backend table whose port calls can be hooked
    (see :class:`_Jitter`)."""
    backend = backend_maker(request.param, request)()
    if anyio_backend != "asyncio" and backend.asyncio_only:
        pytest.skip(f"the {backend.name} adapters run under asyncio only")
    jitter = _Jitter()
    desk = _BackendDesk(
        backend, SETTINGS, ManualClock(START), RecordingSender(), RecordingPublisher(), jitter
    )
    async with desk:
        yield desk, jitter


async def _team(desk: AsyncSmartChat, *team: tuple[str, set[str], int | None]) -> None:
    for executive_id, customer_types, capacity in team:
        await desk.register_executive(
            executive_id, name=executive_id, customer_types=customer_types, max_open_chats=capacity
        )
        await desk.set_executive_status(executive_id, "online")


async def _write(desk: AsyncSmartChat, customer: str, customer_type: str = "retail") -> Chat:
    return await desk.receive_customer_message(
        customer_id=customer, customer_name=customer, customer_type=customer_type, text="hi"
    )


@pytest.mark.anyio
async def test_release_keeps_chats_nobody_else_can_take(
    hooked: tuple[_BackendDesk, _Jitter],
) -> None:
    """Releasing an online executive nobody can relieve left its chats waiting
    while it could answer them (and newer chats then went to it first)."""
    desk, _ = hooked
    await _team(desk, ("e1", {"retail"}, None))
    chat = await _write(desk, "+1")
    assert [c.assigned_executive_id for c in await desk.release_and_reassign_chats("e1")] == ["e1"]
    assert (await desk.get_chat(chat.id)).assigned_executive_id == "e1"
    newer = await _write(desk, "+2")
    assert newer.assigned_executive_id == "e1"


@pytest.mark.anyio
async def test_release_frees_room_for_waiting_chats(hooked: tuple[_BackendDesk, _Jitter]) -> None:
    """A full executive relieved of its chats must pull the waiting ones."""
    desk, _ = hooked
    await _team(desk, ("e1", {"retail", "b2b"}, 1), ("e2", {"retail"}, None))
    held = await _write(desk, "+1", "retail")
    assert held.assigned_executive_id == "e1"
    waiting = await _write(desk, "+2", "b2b")
    assert waiting.assigned_executive_id is None  # e1 is full
    await desk.release_and_reassign_chats("e1")
    assert (await desk.get_chat(held.id)).assigned_executive_id == "e2"
    assert (await desk.get_chat(waiting.id)).assigned_executive_id == "e1"


@pytest.mark.anyio
async def test_message_racing_a_resolve_is_not_an_error(
    hooked: tuple[_BackendDesk, _Jitter],
) -> None:
    """A supervisor resolved the new chat between the message being stored and
    its assignment: the webhook got ChatResolvedError for a stored message."""
    desk, jitter = hooked

    async def resolve_it(event: Event) -> None:
        await desk.resolve_chat(event.payload["chat_id"])

    jitter.hooks["publisher.publish"] = resolve_it  # the chat_message event
    chat = await _write(desk, "+1")
    assert chat.is_resolved
    assert (await desk.get_counters()).open == 0


@pytest.mark.anyio
async def test_release_racing_an_executive_coming_online(
    hooked: tuple[_BackendDesk, _Jitter],
) -> None:
    """e2 came online (and drained an empty queue) after e1's release found
    nobody and before it queued the chat: the chat waited with e2 online."""
    desk, jitter = hooked
    await _team(desk, ("e1", {"retail"}, None))
    await desk.register_executive("e2", name="e2", customer_types={"retail"})
    chat = await _write(desk, "+1")

    async def e2_comes_online(*args: object, **kwargs: object) -> None:
        await desk.set_executive_status("e2", "online")

    jitter.hooks["chats.unassign"] = e2_comes_online
    await desk.set_executive_status("e1", "offline")
    assert "chats.unassign" not in jitter.hooks  # the hook ran
    assert (await desk.get_chat(chat.id)).assigned_executive_id == "e2"
