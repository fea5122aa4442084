"""SPEC §7, bad input: every public operation of AsyncSmartChat, given
unknown ids, wrong types, query operators where an id belongs, empty or
oversized values, out-of-range scores, bad enum strings and bad paging,
raises one typed error of the library's hierarchy, and leaves the desk
exactly as it was (chats, executives, counters, rotations, ratings, the
resolve log, published events and sent messages).  Search text is literal.

Runs under asyncio and trio, on every backend of ``tests/backends.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from backends import BACKEND_NAMES, backend_maker
from smartchat_core import (
    Actor,
    AlreadyRatedError,
    AsyncSmartChat,
    ChatNotFoundError,
    ChatNotResolvedError,
    ChatResolvedError,
    ExecutiveNotFoundError,
    InvalidInputError,
    NotAssigneeError,
    PermissionDeniedError,
    Settings,
    SmartChatError,
)
from smartchat_core.testing import ManualClock, RecordingPublisher, RecordingSender
from smartchat_core.testing.backends import MEMORY, Backend

pytestmark = pytest.mark.anyio

SETTINGS = Settings(rating_secret="s3cret")
TYPES = ("retail", "b2b")

INJECTIONS: list[Any] = [{"$ne": None}, {"$gt": ""}, {"$regex": ".*"}, {"$where": "1"}]
NOT_STRINGS: list[Any] = [1, 1.5, True, None, ["e1"], ("e1",), {"e1"}, b"e1", *INJECTIONS]
BAD_STRINGS: list[Any] = ["", "   ", " e1", "e1\n", "x" * 1000, "a\x00b"]
BAD_IDS = NOT_STRINGS + BAD_STRINGS
"""Never an id: each must raise InvalidInputError."""
BAD_OPTIONAL_IDS = [v for v in BAD_IDS if v is not None]
BAD_TAGS: list[Any] = [*NOT_STRINGS, "", "   ", "t" * 65, "a\x00b"]
BAD_OPTIONAL_TAGS = [v for v in BAD_TAGS if v is not None]
BAD_SCORES: list[Any] = [0, 6, -1, 100, True, False, 3.0, "5", None, [5], {"$gt": 0}]
BAD_CAPACITIES: list[Any] = [-1, "3", 1.5, True, [1], {"$ne": None}]
BAD_STATUSES: list[Any] = ["busy", "ONLINE", " online", "", None, 1, ["online"], {"$ne": None}]
BAD_LIMITS: list[Any] = [0, -1, 201, 10**9, "10", 1.5, True, [10], {"$gt": 0}]
BAD_OFFSETS: list[Any] = [-1, "0", 1.5, True, None, [0], {"$gt": 0}]
BAD_TEXTS: list[Any] = [None, 5, ["hi"], {"$ne": None}, "x" * 5000, "a\x00b"]
BAD_TYPE_SETS: list[Any] = ["retail", [], set(), None, 5, [1], [""], [" retail"], [{"$ne": None}],
                            {"retail": True}, ["x" * 1000]]  # fmt: skip
BAD_ACTORS: list[Any] = [None, "system", {"role": "system"}]
METACHARACTERS = [".*", ".", "*", "(", ")", "[a-z]", "\\d", "\\", "^", "$", "|", "?", "+", "{1}",
                  "%", "_", "(50% off)?", "^$", "a|b"]  # fmt: skip


@attrs.frozen
class World:
    desk: AsyncSmartChat
    clock: ManualClock
    sender: RecordingSender
    publisher: RecordingPublisher
    mine: str
    """Open, assigned to e1."""
    theirs: str
    """Open, assigned to e2."""
    rated: str
    """Resolved and rated."""
    resolved: str
    """Resolved, not rated."""
    waiting: str
    """Open, unassigned (b2b: nobody online)."""


CUSTOMERS = [
    # (customer id, name, type, first message)
    ("+911000000001", "Ravi .* Kumar", "retail", "price (50% off)?"),
    ("+911000000002", "Asha [VIP]", "retail", "hello ^$ world"),
    ("+911000000003", "Meera", "retail", "a|b \\d+ {1} ok"),
    ("+911000000004", "100% Real_Name", "retail", "plain"),
    ("+91(555).*", "Zed", "retail", "back\\slash"),
    ("+911000000005", "Bob", "b2b", "x.*y"),
]


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Module scope here, so that one desk serves every case of a backend."""
    return str(request.param)


@pytest.fixture(scope="module", params=BACKEND_NAMES)
def fresh_backend(request: pytest.FixtureRequest, anyio_backend: str) -> Callable[[], Backend]:
    """A maker of fresh entries of the backend table (new database, new key
    prefix each call)."""
    make = backend_maker(request.param, request)
    if anyio_backend != "asyncio" and make().asyncio_only:
        pytest.skip(f"the {request.param} adapters run under asyncio only")
    return make


@contextlib.asynccontextmanager
async def _world(backend: Backend) -> AsyncIterator[World]:
    """A desk with three executives and six chats in every state."""
    clock = ManualClock(datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc))
    sender, publisher = RecordingSender(), RecordingPublisher()
    async with (
        backend.ports(SETTINGS, clock, sender, publisher) as ports,
        AsyncSmartChat(ports) as desk,
    ):
        await desk.register_executive("e1", name="Asha", customer_types={"retail"})
        await desk.register_executive("e2", name="Ravi", customer_types={"retail"})
        await desk.register_executive("e3", name="Meera", customer_types={"b2b"}, max_open_chats=2)
        await desk.set_executive_status("e1", "online")
        await desk.set_executive_status("e2", "online")
        chats = {}
        for customer_id, name, customer_type, text in CUSTOMERS:
            clock.advance(timedelta(seconds=1))
            chat = await desk.receive_customer_message(
                customer_id=customer_id, customer_name=name, customer_type=customer_type, text=text
            )
            chats[customer_id] = chat
        by_executive: dict[str | None, list[str]] = {}
        for chat in chats.values():
            by_executive.setdefault(chat.assigned_executive_id, []).append(chat.id)
        mine, rated = by_executive["e1"][:2]
        theirs, resolved = by_executive["e2"][:2]
        (waiting,) = by_executive[None]
        await desk.apply_tag(mine, "vip")
        await desk.send_executive_message(mine, executive_id="e1", text="hello")
        await desk.send_executive_message(theirs, executive_id="e2", text="hi there")
        clock.advance(timedelta(minutes=2))
        await desk.run_awaiting_check()  # tags both awaiting
        await desk.resolve_chat(rated, executive_id="e1")
        await desk.rate_chat(rated, score=4, comment="ok")
        await desk.resolve_chat(resolved, executive_id="e2")
        clock.advance(timedelta(seconds=5))
        yield World(desk, clock, sender, publisher, mine, theirs, rated, resolved, waiting)


@pytest.fixture(scope="module")
async def memory_world(anyio_backend: str) -> AsyncIterator[World]:
    """One desk on the in-memory backend for all the cases (bad input changes
    nothing, so they can share it; each case checks that it did not)."""
    async with _world(MEMORY) as world:
        yield world


@pytest.fixture(scope="module")
async def world(fresh_backend: Callable[[], Backend]) -> AsyncIterator[World]:
    """One desk per entry of the backend table, shared by the cases."""
    async with _world(fresh_backend()) as world:
        yield world


@pytest.fixture
async def fresh_world(fresh_backend: Callable[[], Backend]) -> AsyncIterator[World]:
    """A desk of its own, for a test that changes it."""
    async with _world(fresh_backend()) as world:
        yield world


async def _state(w: World) -> dict[str, Any]:
    desk = w.desk
    page = await desk.fetch_all_chats(limit=200)
    return {
        "chats": page.items,
        "executives": await desk.list_executives(),
        "counters": await desk.get_counters(),
        "rings": [await desk.ports.rotation.members(t) for t in TYPES],
        "ratings": [await desk.get_ratings(c.id) for c in page.items],
        "resolutions": await desk.get_resolutions(limit=1000),
        "events": list(w.publisher.events),
        "sent": list(w.sender.sent),
    }


Operation = Callable[[World], Awaitable[object]]


def _cases() -> tuple[list[Any], list[Any]]:
    """(expected error, operation) per case, with readable ids: all of them,
    and those worth running on every backend (whatever reaches the backend:
    unknown ids, conflicts; and one query operator per argument)."""
    cases: list[Any] = []
    server_cases: list[Any] = []

    def add(
        name: str,
        error: type[SmartChatError],
        operation: Operation,
        marks: Any = (),
        *,
        servers: bool | None = None,
    ) -> None:
        if servers is None:  # what reaches the backend
            servers = error is not InvalidInputError
        case = pytest.param(error, operation, id=name, marks=marks)
        cases.append(case)
        if servers:
            server_cases.append(case)

    def each(name: str, values: list[Any], error: type[SmartChatError], make: Any) -> None:
        for index, value in enumerate(values):
            # Validation happens before any I/O, whatever the backend; one
            # query operator per argument proves it on the servers too.
            injection = isinstance(value, dict) and "$ne" in value
            add(f"{name}[{index}:{value!r:.20}]", error, make(value), servers=injection or None)

    bad = InvalidInputError
    # ------------------------------------------------------------ executives
    each(
        "register.id",
        BAD_IDS,
        bad,
        lambda v: lambda w: w.desk.register_executive(v, name="X", customer_types={"retail"}),
    )
    each(
        "register.name",
        [None, 5, "", "  ", "n" * 1000, {"$ne": None}],
        bad,
        lambda v: lambda w: w.desk.register_executive("e9", name=v, customer_types={"retail"}),
    )
    each(
        "register.types",
        BAD_TYPE_SETS,
        bad,
        lambda v: lambda w: w.desk.register_executive("e1", name="Asha", customer_types=v),
    )
    each(
        "register.capacity",
        BAD_CAPACITIES,
        bad,
        lambda v: (
            lambda w: w.desk.register_executive(
                "e1", name="Asha", customer_types={"retail"}, max_open_chats=v
            )
        ),
    )
    each("get_executive.id", BAD_IDS, bad, lambda v: lambda w: w.desk.get_executive(v))
    add("get_executive.unknown", ExecutiveNotFoundError, lambda w: w.desk.get_executive("e9"))
    add("get_executive.pattern", ExecutiveNotFoundError, lambda w: w.desk.get_executive("e.*"))
    each(
        "list_executives.type",
        BAD_OPTIONAL_IDS,
        bad,
        lambda v: lambda w: w.desk.list_executives(customer_type=v),
    )
    each(
        "list_executives.status",
        [s for s in BAD_STATUSES if s is not None],
        bad,
        lambda v: lambda w: w.desk.list_executives(status=v),
    )
    each(
        "set_status.id", BAD_IDS, bad, lambda v: lambda w: w.desk.set_executive_status(v, "online")
    )
    add(
        "set_status.unknown",
        ExecutiveNotFoundError,
        lambda w: w.desk.set_executive_status("e9", "offline"),
    )
    each(
        "set_status.status",
        BAD_STATUSES,
        bad,
        lambda v: lambda w: w.desk.set_executive_status("e1", v),
    )
    add(
        "set_status.unknown_and_bad_status",
        bad,
        lambda w: w.desk.set_executive_status("e9", "busy"),
    )
    each("set_capacity.id", BAD_IDS, bad, lambda v: lambda w: w.desk.set_executive_capacity(v, 3))
    add(
        "set_capacity.unknown",
        ExecutiveNotFoundError,
        lambda w: w.desk.set_executive_capacity("e9", 3),
    )
    each(
        "set_capacity.capacity",
        BAD_CAPACITIES,
        bad,
        lambda v: lambda w: w.desk.set_executive_capacity("e1", v),
    )
    each("heartbeat.id", BAD_IDS, bad, lambda v: lambda w: w.desk.heartbeat(v))
    add("heartbeat.unknown", ExecutiveNotFoundError, lambda w: w.desk.heartbeat("e9"))
    each("get_online.type", BAD_IDS, bad, lambda v: lambda w: w.desk.get_online_executives(v))
    each("release.id", BAD_IDS, bad, lambda v: lambda w: w.desk.release_and_reassign_chats(v))
    add(
        "release.unknown", ExecutiveNotFoundError, lambda w: w.desk.release_and_reassign_chats("e9")
    )
    # ------------------------------------------------------------ assignment
    each("assign.id", BAD_IDS, bad, lambda v: lambda w: w.desk.assign_chat_round_robin(v))
    add("assign.unknown", ChatNotFoundError, lambda w: w.desk.assign_chat_round_robin("nope"))
    add("assign.resolved", ChatResolvedError, lambda w: w.desk.assign_chat_round_robin(w.resolved))
    each(
        "assign_waiting.types",
        [v for v in BAD_TYPE_SETS if v is not None and v != [] and v != set()],
        bad,
        lambda v: lambda w: w.desk.assign_waiting_chats(v),
    )

    # -------------------------------------------------------------- messages
    def incoming(**overrides: Any) -> Operation:
        arguments = {"customer_id": "+919999999999", "customer_name": "New",
                     "customer_type": "retail", "text": "hi", **overrides}  # fmt: skip
        return lambda w: w.desk.receive_customer_message(**arguments)

    each("incoming.customer_id", BAD_IDS, bad, lambda v: incoming(customer_id=v))
    each(
        "incoming.customer_name",
        [None, 5, ["n"], {"$ne": None}, "n" * 1000],
        bad,
        lambda v: incoming(customer_name=v),
    )
    each("incoming.customer_type", BAD_IDS, bad, lambda v: incoming(customer_type=v))
    each("incoming.text", BAD_TEXTS, bad, lambda v: incoming(text=v))
    each(
        "incoming.existing_customer_bad_text",
        BAD_TEXTS,
        bad,
        lambda v: incoming(customer_id=CUSTOMERS[0][0], text=v),
    )

    def reply(chat: Callable[[World], str], executive_id: Any = "e1", text: Any = "hello"):
        return lambda w: w.desk.send_executive_message(
            chat(w), executive_id=executive_id, text=text
        )

    each(
        "reply.chat_id",
        BAD_IDS,
        bad,
        lambda v: lambda w: w.desk.send_executive_message(v, executive_id="e1", text="hello"),
    )
    add("reply.unknown_chat", ChatNotFoundError, reply(lambda w: "nope"))
    add("reply.pattern_chat", ChatNotFoundError, reply(lambda w: ".*"))
    each("reply.executive_id", BAD_IDS, bad, lambda v: reply(lambda w: w.mine, executive_id=v))
    add(
        "reply.unknown_executive",
        ExecutiveNotFoundError,
        reply(lambda w: w.mine, executive_id="e9"),
    )
    each("reply.text", [*BAD_TEXTS, "", "   "], bad, lambda v: reply(lambda w: w.mine, text=v))
    add("reply.not_assignee", NotAssigneeError, reply(lambda w: w.theirs))
    add("reply.waiting_chat", NotAssigneeError, reply(lambda w: w.waiting, executive_id="e3"))
    add("reply.resolved", ChatResolvedError, reply(lambda w: w.rated))
    add("reply.resolved_by_another", ChatResolvedError, reply(lambda w: w.resolved))

    # ------------------------------------------------------------------ tags
    for name in ("apply_tag", "remove_tag"):

        def tagger(w: World, name: str = name) -> Any:
            return getattr(w.desk, name)

        each(f"{name}.chat_id", BAD_IDS, bad, lambda v, t=tagger: lambda w: t(w)(v, "vip"))
        add(f"{name}.unknown", ChatNotFoundError, lambda w, t=tagger: t(w)("nope", "vip"))
        add(
            f"{name}.injection_as_text",
            ChatNotFoundError,
            lambda w, t=tagger: t(w)('{"$ne": null}', "vip"),
        )
        each(f"{name}.tag", BAD_TAGS, bad, lambda v, t=tagger: lambda w: t(w)(w.mine, v))
        add(f"{name}.resolved", ChatResolvedError, lambda w, t=tagger: t(w)(w.rated, "vip"))
        add(f"{name}.unknown_and_bad_tag", bad, lambda w, t=tagger: t(w)("nope", ""))

    # ------------------------------------------------------------ resolution
    each("resolve.chat_id", BAD_IDS, bad, lambda v: lambda w: w.desk.resolve_chat(v))
    add("resolve.unknown", ChatNotFoundError, lambda w: w.desk.resolve_chat("nope"))
    each(
        "resolve.executive_id",
        BAD_OPTIONAL_IDS,
        bad,
        lambda v: lambda w: w.desk.resolve_chat(w.mine, executive_id=v),
    )
    add(
        "resolve.unknown_executive",
        ExecutiveNotFoundError,
        lambda w: w.desk.resolve_chat(w.mine, executive_id="e9"),
    )
    add(
        "resolve.not_assignee",
        NotAssigneeError,
        lambda w: w.desk.resolve_chat(w.mine, executive_id="e2"),
    )
    add(
        "resolve.waiting_by_executive",
        NotAssigneeError,
        lambda w: w.desk.resolve_chat(w.waiting, executive_id="e3"),
    )

    def rate(chat: Callable[[World], str], **overrides: Any) -> Operation:
        arguments = {"score": 5, **overrides}
        return lambda w: w.desk.rate_chat(chat(w), **arguments)

    each("rate.chat_id", BAD_IDS, bad, lambda v: lambda w: w.desk.rate_chat(v, score=5))
    add("rate.unknown", ChatNotFoundError, rate(lambda w: "nope"))
    each("rate.score", BAD_SCORES, bad, lambda v: rate(lambda w: w.resolved, score=v))
    each("rate.score_on_open_chat", BAD_SCORES, bad, lambda v: rate(lambda w: w.mine, score=v))
    each(
        "rate.comment",
        [5, ["ok"], {"$ne": None}, "c" * 2001, "a\x00b"],
        bad,
        lambda v: rate(lambda w: w.resolved, comment=v),
    )
    each(
        "rate.token", [5, ["t"], {"$ne": None}], bad, lambda v: rate(lambda w: w.resolved, token=v)
    )
    add("rate.wrong_token", PermissionDeniedError, rate(lambda w: w.resolved, token="forged"))
    add("rate.open", ChatNotResolvedError, rate(lambda w: w.mine))
    add("rate.waiting", ChatNotResolvedError, rate(lambda w: w.waiting))
    add("rate.twice", AlreadyRatedError, rate(lambda w: w.rated))
    add("rate.twice_other_score", AlreadyRatedError, rate(lambda w: w.rated, score=1))
    each("rating_token.chat_id", BAD_IDS, bad, lambda v: lambda w: w.desk.rating_token(v))
    add("rating_token.unknown", ChatNotFoundError, lambda w: w.desk.rating_token("nope"))
    add("rating_token.open", ChatNotResolvedError, lambda w: w.desk.rating_token(w.mine))

    # --------------------------------------------------------------- listing
    each("get_chat.id", BAD_IDS, bad, lambda v: lambda w: w.desk.get_chat(v))
    add("get_chat.unknown", ChatNotFoundError, lambda w: w.desk.get_chat("nope"))
    add("get_chat.injection_as_text", ChatNotFoundError, lambda w: w.desk.get_chat('{"$ne": null}'))
    each("get_ratings.id", BAD_IDS, bad, lambda v: lambda w: w.desk.get_ratings(v))
    each(
        "get_resolutions.chat_id",
        BAD_OPTIONAL_IDS,
        bad,
        lambda v: lambda w: w.desk.get_resolutions(chat_id=v),
    )
    each(
        "get_resolutions.executive_id",
        BAD_OPTIONAL_IDS,
        bad,
        lambda v: lambda w: w.desk.get_resolutions(executive_id=v),
    )
    each(
        "get_resolutions.limit",
        [0, -1, 10_001, "5", 1.5, True, None],
        bad,
        lambda v: lambda w: w.desk.get_resolutions(limit=v),
    )

    def fetch(**arguments: Any) -> Operation:
        return lambda w: w.desk.fetch_all_chats(**arguments)

    each(
        "fetch.status",
        [*BAD_STATUSES[:4], "closed", "OPEN", "", 1, ["open"], {"$ne": None}],
        bad,
        lambda v: fetch(status=v),
    )
    each("fetch.customer_type", BAD_OPTIONAL_IDS, bad, lambda v: fetch(customer_type=v))
    each(
        "fetch.search",
        [5, ["x"], {"$regex": ".*"}, {"$ne": None}, "s" * 201, "a\x00b"],
        bad,
        lambda v: fetch(search=v),
    )
    each("fetch.tag", BAD_OPTIONAL_TAGS, bad, lambda v: fetch(tag=v))
    each(
        "fetch.sender",
        ["customer", "executive", "Bot", "", 1, ["Customer"], {"$ne": None}],
        bad,
        lambda v: fetch(sender=v),
    )
    each(
        "fetch.assigned_executive_id",
        BAD_OPTIONAL_IDS,
        bad,
        lambda v: fetch(assigned_executive_id=v),
    )
    each("fetch.limit", BAD_LIMITS, bad, lambda v: fetch(limit=v))
    each("fetch.offset", BAD_OFFSETS, bad, lambda v: fetch(offset=v))

    # ------------------------------------------------------------------ misc
    async def subscribe(w: World, rooms: Any) -> None:
        async with w.desk.subscribe(rooms):
            pass

    async def subscribe_as(w: World, actor: Any) -> None:
        async with w.desk.subscribe(["dashboard"], actor=actor):
            pass

    each(
        "subscribe.rooms",
        [[5], [None], [{"$ne": None}], [""], ["r" * 300], ["a\x00b"]],
        bad,
        lambda v: lambda w: subscribe(w, v),
    )
    for index, value in enumerate([5, None, b"dashboard"]):
        add(f"subscribe.rooms_not_a_collection[{index}]", bad, lambda w, v=value: subscribe(w, v))
    for index, actor in enumerate(BAD_ACTORS):
        for name, operation in [
            ("register", lambda w, a: w.desk.register_executive(
                "e9", name="X", customer_types={"retail"}, actor=a)),
            ("set_status", lambda w, a: w.desk.set_executive_status("e1", "away", actor=a)),
            ("set_capacity", lambda w, a: w.desk.set_executive_capacity("e1", 1, actor=a)),
            ("heartbeat", lambda w, a: w.desk.heartbeat("e1", actor=a)),
            ("assign", lambda w, a: w.desk.assign_chat_round_robin(w.waiting, actor=a)),
            ("release", lambda w, a: w.desk.release_and_reassign_chats("e1", actor=a)),
            ("incoming", lambda w, a: w.desk.receive_customer_message(
                customer_id="+9", customer_name="X", customer_type="retail", text="hi", actor=a)),
            ("reply", lambda w, a: w.desk.send_executive_message(
                w.mine, executive_id="e1", text="hi", actor=a)),
            ("apply_tag", lambda w, a: w.desk.apply_tag(w.mine, "x", actor=a)),
            ("remove_tag", lambda w, a: w.desk.remove_tag(w.mine, "vip", actor=a)),
            ("resolve", lambda w, a: w.desk.resolve_chat(w.mine, actor=a)),
            ("rate", lambda w, a: w.desk.rate_chat(w.resolved, score=5, actor=a)),
            ("rating_token", lambda w, a: w.desk.rating_token(w.resolved, actor=a)),
            ("get_chat", lambda w, a: w.desk.get_chat(w.mine, actor=a)),
            ("fetch", lambda w, a: w.desk.fetch_all_chats(actor=a)),
            ("recount", lambda w, a: w.desk.recount(actor=a)),
            ("get_ratings", lambda w, a: w.desk.get_ratings(w.rated, actor=a)),
            ("get_resolutions", lambda w, a: w.desk.get_resolutions(actor=a)),
            ("run_sla_check", lambda w, a: w.desk.run_sla_check(actor=a)),
            ("run_awaiting_check", lambda w, a: w.desk.run_awaiting_check(actor=a)),
            ("run_inactivity_check", lambda w, a: w.desk.run_inactivity_check(actor=a)),
            ("subscribe", lambda w, a: subscribe_as(w, a)),
        ]:  # fmt: skip
            add(
                f"{name}.actor[{index}:{actor!r:.12}]",
                bad,
                lambda w, o=operation, a=actor: o(w, a),
            )
    return cases, server_cases


CASES, SERVER_CASES = _cases()


async def _check(world: World, error: type[SmartChatError], operation: Operation) -> None:
    before = await _state(world)
    with pytest.raises(error):
        await operation(world)
    assert await _state(world) == before


@pytest.mark.parametrize(("error", "operation"), CASES)
async def test_bad_input_raises_and_changes_nothing(
    memory_world: World, error: type[SmartChatError], operation: Operation
) -> None:
    await _check(memory_world, error, operation)


@pytest.mark.parametrize(("error", "operation"), SERVER_CASES)
async def test_bad_input_on_every_backend(
    world: World, error: type[SmartChatError], operation: Operation
) -> None:
    """What reaches a backend: unknown ids, conflicts, query operators."""
    await _check(world, error, operation)


async def test_unknown_ids_in_filters_find_nothing(world: World) -> None:
    """Well-formed ids nobody has are filters that match nothing, not errors."""
    before = await _state(world)
    assert (await world.desk.fetch_all_chats(assigned_executive_id="e9")).total == 0
    assert (await world.desk.fetch_all_chats(customer_type="nobody")).total == 0
    assert (await world.desk.fetch_all_chats(tag="no-such-tag")).total == 0
    assert await world.desk.get_resolutions(chat_id="nope") == []
    assert await world.desk.get_resolutions(executive_id="e9") == []
    assert await world.desk.get_ratings("nope") == []
    assert await world.desk.get_online_executives("nobody") == []
    assert await world.desk.list_executives(customer_type="nobody") == []
    assert await _state(world) == before


async def test_query_operators_as_text_match_literally(world: World) -> None:
    """A string that looks like a query operator is plain text."""
    for value in ['{"$ne": null}', "$ne", "{'$gt': ''}", ".*"]:
        assert (await world.desk.fetch_all_chats(assigned_executive_id=value)).total == 0
        assert (await world.desk.fetch_all_chats(tag=value)).total == 0
        assert (await world.desk.fetch_all_chats(customer_type=value)).total == 0


@pytest.mark.parametrize("needle", METACHARACTERS)
async def test_search_is_literal(world: World, needle: str) -> None:
    """Regex (and SQL wildcard) metacharacters match only themselves, in the
    customer's name, number or the last message, case-insensitively."""
    everything = (await world.desk.fetch_all_chats(limit=200)).items
    for text in (needle, f"  {needle}  ", needle.upper()):
        wanted = text.strip().casefold()
        expected = [
            c.id
            for c in everything
            if any(
                wanted in field.casefold()
                for field in (c.customer_name, c.customer_id, c.last_message)
            )
        ]
        page = await world.desk.fetch_all_chats(search=text, limit=200)
        assert [c.id for c in page.items] == expected, (text, expected)
        assert page.total == len(expected)
    # ".*" in particular matches just the chats that contain it.
    if needle == ".*":
        assert 0 < len(expected) < len(everything)


async def test_empty_search_is_no_filter(world: World) -> None:
    everything = await world.desk.fetch_all_chats(limit=200)
    for text in ("", "   "):
        assert await world.desk.fetch_all_chats(search=text, limit=200) == everything


async def test_operations_after_bad_input_still_work(fresh_world: World) -> None:
    """A failed call leaves nothing half-done that would break the next one."""
    world = fresh_world
    desk = world.desk
    for value in BAD_IDS:
        with pytest.raises(InvalidInputError):
            await desk.receive_customer_message(
                customer_id=value, customer_name="x", customer_type="retail", text="hi"
            )
    with pytest.raises(NotAssigneeError):
        await desk.resolve_chat(world.mine, executive_id="e2")
    with pytest.raises(AlreadyRatedError):
        await desk.rate_chat(world.rated, score=5)
    resolved = await desk.resolve_chat(world.mine, executive_id="e1")
    assert resolved.is_resolved
    rating = await desk.rate_chat(world.mine, score=5, token=await desk.rating_token(world.mine))
    assert rating.executive_id == "e1"
    counters = await desk.get_counters()
    assert await desk.recount() == counters


async def test_actor_executive_is_checked(world: World) -> None:
    """Typed errors also for an executive actor acting beyond its rights."""
    with pytest.raises(PermissionDeniedError):
        await world.desk.apply_tag(world.theirs, "vip", actor=Actor.executive("e1"))


@pytest.mark.parametrize(
    "template", ["Rate us {1-5}", "Chat {chat} done", "{", "{customer_name:d}", "{chat_id.x}"]
)
@pytest.mark.parametrize("field", ["resolution_message", "sla_alert_template"])
def test_bad_message_templates_are_refused_by_settings(field: str, template: str) -> None:
    """A message template with an unknown or malformed field is refused when
    the settings are built, not found out after an operation's writes."""
    with pytest.raises(ValueError, match=field):
        Settings(**{field: template})


def test_good_message_templates_are_accepted() -> None:
    settings = Settings(
        resolution_message="Thanks {customer_name}! Rate {chat_id}: {rating_token}",
        sla_alert_template="{tier}: {customer_id} waited {waited_minutes:d} min",
    )
    assert settings.sla_alert_template.startswith("{tier}")
