"""The MongoDB adapters on mongomock and on a real wire server (SecantusDB, or
$SMARTCHAT_TEST_MONGODB_URL).

* differential tests: random call sequences on each Mongo port and on the
  in-memory reference adapter give the same results, call by call;
* query plans of every hot query (index scan, no collection scan);
* concurrency: two clients assigning the same chats, capacity;
* a backend failure mid-operation leaves nothing half-changed; a remembered
  document that is out of date costs a fresh read, never a wrong write;
* operator injection and regex metacharacters through AsyncSmartChat;
* a Smart Chat V2 database (ObjectId ids, missing fields) and ``migrate``.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import attrs
import pytest

from smartchat_core import AsyncSmartChat, BackendError, InvalidInputError, Settings
from smartchat_core._models import (
    ChatQuery,
    ChatStatusFilter,
    ExecutiveCounters,
    ExecutiveStatus,
    Interlocutor,
    Rating,
    ResolutionEntry,
    TypeCounters,
)
from smartchat_core.abc import AssignOutcome
from smartchat_core.adapters import mongodb
from smartchat_core.adapters.memory import (
    MemoryAlertDedup,
    MemoryChatStore,
    MemoryExecutiveStore,
    MemoryLock,
    MemoryRatingStore,
    MemoryResolutionLog,
    MemoryRotation,
)
from smartchat_core.adapters.mongodb import (
    MongoAlertDedup,
    MongoChatStore,
    MongoConnection,
    MongoExecutiveStore,
    MongoLock,
    MongoRatingStore,
    MongoResolutionLog,
    MongoRotation,
    mongo_ports,
)
from smartchat_core.services import Ports
from smartchat_core.testing import ManualClock, RecordingPublisher, RecordingSender

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
TYPES = ("retail", "vip")
EXECUTIVES = ("e1", "e2", "e3")
TAGS = ("awaiting", "vip", "x.y")
NAMES = ("Ravi", "a.b", "axb", "(x)", "[z", "100%", "A+B", "back\\slash", "Zoë")
SEARCHES = ("a.b", ".", "(", "[", "%", "+", "\\", "RAVI", "ravi", ".*", "a+", "+91", "zz", "Zo")


# ------------------------------------------------------------------ environments


@attrs.define
class Env:
    """One Mongo setup: mongomock, or the wire server.  ``connection()``
    opens a new client on the same database (a second "process"); mongomock
    shares its one in-process client."""

    name: str
    make_client: Callable[[], Any]
    database: str
    clients: list[Any] = attrs.Factory(list)

    @property
    def wire(self) -> bool:
        return self.name != "mongomock"

    def connection(self) -> MongoConnection:
        client = self.make_client()
        self.clients.append(client)
        return MongoConnection(client, database=self.database)

    def raw_db(self) -> Any:
        if not self.clients:
            self.connection()
        return self.clients[0][self.database]

    def close(self) -> None:
        for client in {id(c): c for c in self.clients}.values():
            client.close()


@pytest.fixture(params=["mongomock", "wire"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    """mongomock, and the wire server."""
    if request.param == "mongomock":
        client = request.getfixturevalue("mongomock_client")
        environment = Env("mongomock", lambda: client, "smartchat")
    else:
        import pymongo

        url = request.getfixturevalue("mongo_url")
        database = request.getfixturevalue("mongo_database")
        environment = Env(
            request.param,
            lambda: pymongo.MongoClient(url, tz_aware=True),
            database,
        )
    yield environment
    environment.close()


@pytest.fixture
def wire_env(mongo_url: str, mongo_database: str) -> Iterator[Env]:
    import pymongo

    environment = Env("wire", lambda: pymongo.MongoClient(mongo_url, tz_aware=True), mongo_database)
    yield environment
    environment.close()


async def started(port: Any, stack: AsyncExitStack) -> Any:
    await port.start(stack)
    return port


@asynccontextmanager
async def desk_on(env: Env, clock: ManualClock, **settings: Any) -> AsyncIterator[AsyncSmartChat]:
    """A desk whose stores, rotation, dedup and lock are on ``env``."""
    config = Settings(**settings)
    client = env.make_client()
    env.clients.append(client)
    ports = mongo_ports(
        client,
        database=env.database,
        settings=config,
        clock=clock,
    )
    async with AsyncSmartChat(
        Ports(
            settings=config,
            clock=clock,
            sender=RecordingSender(),
            publisher=RecordingPublisher(),
            **ports,
        )
    ) as desk:
        yield desk


def publisher_of(desk: AsyncSmartChat) -> RecordingPublisher:
    publisher = desk.ports.publisher
    assert isinstance(publisher, RecordingPublisher)
    return publisher


async def assert_counters_equal_recount(store: MongoChatStore) -> None:
    """The counters the store reports equal a tally of every chat, done here
    by hand from a plain listing."""
    page = await store.query(ChatQuery(status=ChatStatusFilter.OPEN, limit=10_000))
    by_type: dict[str, list[int]] = {}
    by_executive = {e: [0, 0] for e in EXECUTIVES}
    for chat in page.items:
        awaiting = int(store.awaiting_tag in chat.tags)
        counts = by_type.setdefault(chat.customer_type, [0, 0, 0])
        counts[0] += 1
        counts[1] += int(chat.assigned_executive_id is None)
        counts[2] += awaiting
        if chat.assigned_executive_id in by_executive:
            by_executive[chat.assigned_executive_id][0] += 1
            by_executive[chat.assigned_executive_id][1] += awaiting
    assert await store.type_counters() == {t: TypeCounters(*c) for t, c in by_type.items()}
    assert await store.executive_counters(EXECUTIVES) == {
        e: ExecutiveCounters(*c) for e, c in by_executive.items()
    }


# ------------------------------------------------------------ differential: chats


def _random_query(rng: random.Random) -> ChatQuery:
    return ChatQuery(
        status=rng.choice(list(ChatStatusFilter)),
        customer_type=rng.choice([None, None, *TYPES]),
        search=rng.choice([None, None, None, *SEARCHES]),
        tag=rng.choice([None, None, None, *TAGS]),
        sender=rng.choice([None, None, *Interlocutor]),
        assigned_executive_id=rng.choice([None, None, "unassigned", *EXECUTIVES]),
        limit=rng.randint(1, 8),
        offset=rng.choice([0, 0, 1, 3]),
    )


async def _compare_chat_reads(
    memory: MemoryChatStore, mongo: MongoChatStore, clock: ManualClock, rng: random.Random
) -> None:
    for chat in list(memory.all_chats()):
        assert await mongo.get(chat.id) == chat
    cutoff = clock.now() - timedelta(seconds=rng.choice([0, 60, 180]))
    limit = rng.randint(1, 6)
    assert await mongo.sla_due(cutoff, limit=limit) == await memory.sla_due(cutoff, limit=limit)
    assert await mongo.awaiting_due(cutoff, limit=limit) == await memory.awaiting_due(
        cutoff, limit=limit
    )
    for customer_type in TYPES:
        assert await mongo.waiting(customer_type, limit=limit) == await memory.waiting(
            customer_type, limit=limit
        )
    for executive in EXECUTIVES:
        assert await mongo.open_chats_of(executive) == await memory.open_chats_of(executive)
    for _ in range(3):
        query = _random_query(rng)
        assert await mongo.query(query) == await memory.query(query), query
    assert await mongo.executive_counters(EXECUTIVES) == await memory.executive_counters(EXECUTIVES)
    assert await mongo.type_counters() == await memory.type_counters()


@pytest.mark.parametrize("seed", [1, 2])
async def test_chat_store_matches_memory(env: Env, seed: int) -> None:
    """Random call sequences: every result equals the reference model's."""
    rng = random.Random(seed)
    clock = ManualClock(T0)
    memory = MemoryChatStore(awaiting_tag="awaiting")
    async with AsyncExitStack() as stack:
        mongo = await started(MongoChatStore(env.connection()), stack)
        customers = [f"+9198{n:08d}" for n in range(7)]
        steps = 160 if env.wire else 320
        for step in range(steps):
            clock.advance(timedelta(seconds=rng.choice([0, 1, 5, 30, 100])))
            now = clock.now()
            ids = [c.id for c in memory.all_chats()] or ["missing"]
            chat_id = rng.choice([*ids, *ids, "missing"])
            current = await memory.get(chat_id)
            holder = current.assigned_executive_id if current is not None else None
            executive = rng.choice(EXECUTIVES)
            operation = rng.choice(
                ["incoming"] * 4
                + ["outgoing"] * 2
                + ["assign"] * 4
                + ["unassign", "add_tag", "add_tag", "remove_tag", "resolve"]
            )
            customer = rng.choice(customers)
            name = rng.choice(NAMES)
            customer_type = rng.choice(TYPES)
            tag = rng.choice(TAGS)
            expected_from = holder if rng.random() < 0.85 else executive
            new_id = uuid.uuid4().hex
            method, args, kwargs = {
                "incoming": (
                    "record_incoming",
                    (),
                    {
                        "new_id": new_id,
                        "customer_id": customer,
                        "customer_name": name,
                        "customer_type": customer_type,
                        "preview": name,
                        "now": now,
                    },
                ),
                "outgoing": (
                    "record_outgoing",
                    (chat_id,),
                    {"executive_id": holder or executive, "preview": name, "now": now},
                ),
                "assign": (
                    "assign",
                    (chat_id, executive),
                    {"expected_from": expected_from, "now": now},
                ),
                "unassign": (
                    "unassign",
                    (chat_id,),
                    {"expected_from": holder or executive, "now": now},
                ),
                "add_tag": ("add_tag", (chat_id, tag), {}),
                "remove_tag": ("remove_tag", (chat_id, tag), {}),
                "resolve": ("resolve", (chat_id,), {"now": now}),
            }[operation]
            expected = await getattr(memory, method)(*args, **kwargs)
            actual = await getattr(mongo, method)(*args, **kwargs)
            assert actual == expected, (step, operation)
            if step % 8 == 0:
                await _compare_chat_reads(memory, mongo, clock, rng)
        await _compare_chat_reads(memory, mongo, clock, rng)
        await assert_counters_equal_recount(mongo)


# ------------------------------------------------------- differential: the others


async def test_executive_store_matches_memory(env: Env) -> None:
    rng = random.Random(7)
    clock = ManualClock(T0)
    memory = MemoryExecutiveStore()
    async with AsyncExitStack() as stack:
        mongo = await started(MongoExecutiveStore(env.connection()), stack)
        for step in range(150 if env.wire else 300):
            clock.advance(timedelta(seconds=rng.choice([0, 10, 60, 120])))
            now = clock.now()
            executive = rng.choice([*EXECUTIVES, "e4", "nobody"])
            operation = rng.choice(["upsert", "status", "status", "touch", "read"])
            if operation == "upsert":
                kwargs: dict[str, Any] = {
                    "name": rng.choice(NAMES),
                    "customer_types": frozenset(rng.sample(TYPES, rng.randint(1, 2))),
                    "max_open_chats": rng.choice([None, 0, 2]),
                }
                assert await mongo.upsert(executive, **kwargs) == await memory.upsert(
                    executive, **kwargs
                ), step
            elif operation == "status":
                status = rng.choice(list(ExecutiveStatus))
                assert await mongo.set_status(executive, status, now=now) == (
                    await memory.set_status(executive, status, now=now)
                ), step
            elif operation == "touch":
                assert await mongo.touch(executive, now=now) == await memory.touch(
                    executive, now=now
                ), step
            assert await mongo.get(executive) == await memory.get(executive)
            customer_type = rng.choice([None, *TYPES])
            status_filter = rng.choice([None, *ExecutiveStatus])
            assert await mongo.list(customer_type=customer_type, status=status_filter) == (
                await memory.list(customer_type=customer_type, status=status_filter)
            )
            cutoff = now - timedelta(seconds=rng.choice([0, 60, 240]))
            limit = rng.randint(1, 4)
            assert await mongo.inactive(cutoff, limit=limit) == await memory.inactive(
                cutoff, limit=limit
            ), step


async def test_rotation_matches_memory(env: Env) -> None:
    rng = random.Random(11)
    memory = MemoryRotation()
    async with AsyncExitStack() as stack:
        mongo = await started(MongoRotation(env.connection()), stack)
        for step in range(300):
            customer_type = rng.choice(TYPES)
            executive = rng.choice([*EXECUTIVES, "e4"])
            operation = rng.choice(["add", "add", "remove", "next", "next", "next", "replace"])
            if operation == "replace":
                ring = rng.sample([*EXECUTIVES, "e4", "e1"], rng.randint(0, 4))
                args: tuple[Any, ...] = (customer_type, ring)
            elif operation == "next":
                args = (customer_type,)
            else:
                args = (customer_type, executive)
            assert await getattr(mongo, operation)(*args) == await getattr(memory, operation)(
                *args
            ), step
            assert await mongo.members(customer_type) == await memory.members(customer_type)


async def test_dedup_and_lock_match_memory(env: Env) -> None:
    rng = random.Random(5)
    clock = ManualClock(T0)
    memory_dedup, memory_lock = MemoryAlertDedup(clock), MemoryLock(clock)
    async with AsyncExitStack() as stack:
        connection = env.connection()
        dedup = await started(MongoAlertDedup(connection, clock=clock), stack)
        lock = await started(MongoLock(connection, clock=clock), stack)
        for step in range(200):
            clock.advance(timedelta(seconds=rng.choice([0, 30, 100, 300])))
            key = rng.choice(["sla::alerted::c1::alert", "sla::alerted::c2::alert", "k"])
            ttl = timedelta(seconds=rng.choice([60, 300, 700]))
            token = rng.choice(["p1", "p2"])
            operation = rng.choice(["claim", "claim", "release", "acquire", "acquire", "free"])
            if operation == "claim":
                assert await dedup.claim(key, ttl) == await memory_dedup.claim(key, ttl), step
            elif operation == "release":
                await dedup.release(key)
                await memory_dedup.release(key)
            elif operation == "acquire":
                assert await lock.acquire(key, token, ttl) == await memory_lock.acquire(
                    key, token, ttl
                ), step
            else:
                assert await lock.release(key, token) == await memory_lock.release(key, token), step


async def test_ratings_and_resolution_log_match_memory(env: Env) -> None:
    rng = random.Random(3)
    memory_ratings, memory_log = MemoryRatingStore(), MemoryResolutionLog()
    async with AsyncExitStack() as stack:
        connection = env.connection()
        ratings = await started(MongoRatingStore(connection), stack)
        log = await started(MongoResolutionLog(connection), stack)
        moment = T0
        for step in range(120):
            moment += timedelta(seconds=rng.choice([1, 60]))
            chat_id = rng.choice(["c1", "c2", "c3"])
            executive = rng.choice([None, *EXECUTIVES])
            resolved_at = rng.choice([T0, T0 + timedelta(minutes=5), moment])
            rating = Rating(
                chat_id=chat_id,
                score=rng.randint(1, 5),
                comment=rng.choice([None, "quick", "a.b"]),
                executive_id=executive,
                customer_id="+91",
                resolved_at=resolved_at,
                rated_at=moment,
            )
            assert await ratings.add(rating) == await memory_ratings.add(rating), step
            entry = ResolutionEntry(
                chat_id=chat_id,
                executive_id=executive,
                customer_id="+91",
                customer_type=rng.choice(TYPES),
                opened_at=T0,
                resolved_at=moment,
                tags=tuple(rng.sample(TAGS, rng.randint(0, 2))),
            )
            await log.append(entry)
            await memory_log.append(entry)
            for chat in ("c1", "c2", "c3"):
                assert await ratings.for_chat(chat) == await memory_ratings.for_chat(chat)
            query = {
                "chat_id": rng.choice([None, "c1", "c2"]),
                "executive_id": rng.choice([None, *EXECUTIVES]),
                "limit": rng.randint(1, 10),
            }
            assert await log.entries(**query) == await memory_log.entries(**query), step


# ---------------------------------------------------------------- the whole desk


async def test_sketch_on_mongo(env: Env) -> None:
    """The SPEC §12 walk-through with every store on MongoDB."""
    clock = ManualClock(T0)
    async with desk_on(env, clock) as desk:
        await desk.register_executive("e1", name="Asha", customer_types={"retail"})
        await desk.set_executive_status("e1", "online")
        chat = await desk.receive_customer_message(
            customer_id="+919800000001", customer_name="Ravi", customer_type="retail", text="hi"
        )
        assert chat.assigned_executive_id == "e1"
        clock.advance(timedelta(minutes=4))
        assert [a.tier for a in await desk.run_sla_check()] == ["alert"]
        assert await desk.run_sla_check() == []
        await desk.send_executive_message(chat.id, executive_id="e1", text="hello")
        await desk.apply_tag(chat.id, "vip")
        clock.advance(timedelta(minutes=2))
        assert [c.id for c in await desk.run_awaiting_check()] == [chat.id]
        assert await desk.run_inactivity_check() == []
        executive = await desk.get_executive("e1")
        assert (executive.open_chats, executive.awaiting_chats) == (1, 1)
        resolved = await desk.resolve_chat(chat.id, executive_id="e1")
        assert resolved.is_resolved and resolved.tags == ()
        assert await desk.resolve_chat(chat.id) == resolved
        assert (await desk.get_executive("e1")).open_chats == 0
        rating = await desk.rate_chat(chat.id, score=5, comment="quick")
        assert rating.executive_id == "e1"
        page = await desk.fetch_all_chats(assigned_executive_id="e1", limit=20)
        assert [c.id for c in page.items] == [chat.id] and page.total == 1
        counters = await desk.get_counters()
        assert await desk.recount() == counters
        clock.advance(timedelta(minutes=5))
        assert [e.id for e in await desk.run_inactivity_check()] == ["e1"]


# ------------------------------------------------------------------- query plans


def _plan_stages(explain: dict[str, Any]) -> list[str]:
    stages = []
    node = explain["queryPlanner"]["winningPlan"]
    while True:
        stages.append(node.get("stage", "?"))
        children = [node["inputStage"]] if "inputStage" in node else node.get("inputStages", [])
        if not children:
            return stages
        node = children[0]


def _explain(db: Any, collection: str, filter: dict[str, Any], sort: Any, limit: int) -> Any:
    command: dict[str, Any] = {"find": collection, "filter": filter, "limit": limit}
    if sort:
        command["sort"] = dict(sort)
    return db.command("explain", command, verbosity="executionStats")


async def test_hot_queries_use_indexes(wire_env: Env) -> None:
    """Every hot query is an index scan whose examined documents are about
    what it returns, among many documents it must not touch."""
    ManualClock(T0)
    rng = random.Random(1)
    async with AsyncExitStack() as stack:
        connection = wire_env.connection()
        chats = await started(MongoChatStore(connection), stack)
        executives = await started(MongoExecutiveStore(connection), stack)
        db = wire_env.raw_db()
        docs = []
        for n in range(600):
            resolved = n % 5 > 1  # most chats are history
            spoke = Interlocutor.CUSTOMER if n % 2 else Interlocutor.EXECUTIVE
            assignee = None if n % 3 == 0 else rng.choice(EXECUTIVES)
            moment = T0 + timedelta(seconds=n)
            chat = mongodb.Chat(
                id=f"c{n:04d}",
                customer_id=f"+91{n:06d}",
                customer_name=f"name {n}",
                customer_type=TYPES[n % 2],
                created_at=moment,
                opened_at=moment,
                last_incoming_message=moment,
                last_outgoing_message=moment if spoke is Interlocutor.EXECUTIVE else None,
                last_interaction_by=spoke,
                last_activity_at=moment,
                is_resolved=resolved,
                resolved_at=moment if resolved else None,
                tags=("awaiting",) if n % 7 == 0 else ("x.y",),
                assigned_executive_id=assignee,
                assigned_at=moment if assignee else None,
                queued_at=moment if assignee is None and not resolved else None,
            )
            docs.append({"_id": chat.id, **mongodb._chat_doc(chat, "awaiting"), "_v": 1})
        db[chats.chats_collection].insert_many(docs)
        db[executives.collection].insert_many(
            [
                {
                    "_id": f"x{n:03d}",
                    "name": "n",
                    "customer_types": ["retail"],
                    "status": ["online", "away", "offline"][n % 3],
                    "last_active_at": T0 + timedelta(seconds=n),
                }
                for n in range(300)
            ]
        )
        cutoff = T0 + timedelta(seconds=400)
        queries: dict[str, tuple[str, dict[str, Any], Any]] = {
            "sla_due": (chats.chats_collection, *chats.sla_due_query(cutoff)),
            "awaiting_due": (chats.chats_collection, *chats.awaiting_due_query(cutoff)),
            "waiting": (chats.chats_collection, *chats.waiting_query("retail")),
            "open_by_executive": (chats.chats_collection, *chats.open_chats_query("e1")),
        }
        for status_ in ("online", "away"):
            filter, sort = executives.inactive_queries(cutoff)[status_ == "away"]
            queries[f"inactive_{status_}"] = (executives.collection, filter, sort)
        for name, query in {
            "list_status": ChatQuery(status=ChatStatusFilter.OPEN),
            "list_resolved": ChatQuery(status=ChatStatusFilter.RESOLVED),
            "list_type": ChatQuery(customer_type="vip"),
            "list_assignee": ChatQuery(assigned_executive_id="e2"),
            "list_unassigned": ChatQuery(assigned_executive_id="unassigned"),
            "list_tag": ChatQuery(tag="awaiting"),
            "list_sender": ChatQuery(sender=Interlocutor.CUSTOMER),
            "list_all": ChatQuery(),
        }.items():
            queries[name] = (chats.chats_collection, *chats.listing_query(query))
        report: dict[str, Any] = {}
        for name, (collection, filter, sort) in queries.items():
            limit = 1000 if not name.startswith("list_") else 20
            explain = _explain(db, collection, filter, sort, limit)
            stages = _plan_stages(explain)
            stats = explain["executionStats"]
            matches = db[collection].count_documents(filter)
            report[name] = (stages, stats["totalDocsExamined"], stats["nReturned"], matches)
            assert "IXSCAN" in stages and "COLLSCAN" not in stages, (name, stages)
            assert stats["totalDocsExamined"] <= stats["nReturned"] + 2, (name, report[name])
            assert stats["nReturned"] <= max(matches, limit), (name, report[name])
            # The data exercises the query: some documents match, others not.
            assert 0 < matches < (601 if name == "list_all" else 600), (name, matches)


async def test_indexes_exist(wire_env: Env) -> None:
    clock = ManualClock(T0)
    async with AsyncExitStack() as stack:
        ports = mongo_ports(
            wire_env.make_client(), database=wire_env.database, settings=Settings(), clock=clock
        )
        wire_env.clients.append(ports["chats"].connection._source)
        for port in ports.values():
            await port.start(stack)
            await port.ensure_indexes()  # idempotent
        db = wire_env.raw_db()
        names = {i["name"] for i in db["v2_chats"].list_indexes()}
        assert {
            "smartchat_customer",
            "smartchat_sla_due",
            "smartchat_awaiting_due",
            "smartchat_waiting",
            "smartchat_open_by_executive",
            "smartchat_list_all",
            "smartchat_list_status",
            "smartchat_list_type",
            "smartchat_list_assignee",
            "smartchat_list_tag",
            "smartchat_list_sender",
        } <= names
        ttl = {i["name"]: i.get("expireAfterSeconds") for i in db["v2_locks"].list_indexes()}
        assert ttl["smartchat_purge"] == 0
        unique = {i["name"]: i.get("unique") for i in db["v2_chat_ratings"].list_indexes()}
        assert unique["smartchat_rating_once"] is True


# ------------------------------------------------------------------- concurrency


async def _waiting_chats(store: MongoChatStore, count: int) -> list[str]:
    ids = []
    for n in range(count):
        result = await store.record_incoming(
            new_id=f"chat{n:03d}",
            customer_id=f"+91{n:08d}",
            customer_name="c",
            customer_type="retail",
            preview="hi",
            now=T0,
        )
        ids.append(result.chat.id)
    return ids


async def test_two_clients_never_double_assign(env: Env) -> None:
    ManualClock(T0)
    async with AsyncExitStack() as stack:
        first = await started(MongoChatStore(env.connection()), stack)
        second = await started(MongoChatStore(env.connection()), stack)
        chat_ids = await _waiting_chats(first, 25)
        wins: dict[str, list[str]] = {c: [] for c in chat_ids}

        async def assign(store: MongoChatStore, chat_id: str, executive: str) -> None:
            result = await store.assign(chat_id, executive, expected_from=None, now=T0)
            if result.outcome is AssignOutcome.ASSIGNED:
                wins[chat_id].append(executive)
            else:
                assert result.outcome is AssignOutcome.CHAT_CHANGED

        async with anyio.create_task_group() as group:
            for chat_id in chat_ids:
                group.start_soon(assign, first, chat_id, "e1")
                group.start_soon(assign, second, chat_id, "e2")
                group.start_soon(assign, second, chat_id, "e3")
        assert all(len(w) == 1 for w in wins.values()), wins
        for chat_id, (winner,) in wins.items():
            assert (await first.get(chat_id)).assigned_executive_id == winner  # type: ignore[union-attr]
        counters = await first.executive_counters(EXECUTIVES)
        assert sum(c.open_chats for c in counters.values()) == 25
        for executive in EXECUTIVES:
            mine = sum(1 for (w,) in wins.values() if w == executive)
            assert counters[executive].open_chats == mine
        assert (await second.type_counters())["retail"] == mongodb.TypeCounters(25, 0, 0)
        await assert_counters_equal_recount(second)


async def test_capacity_never_exceeded_under_concurrency(env: Env) -> None:
    """Two desks (two clients) assign 16 chats at once to one executive with
    room for 3: it ends with exactly 3, the others wait."""
    clock = ManualClock(T0)
    async with desk_on(env, clock) as first, desk_on(env, clock) as second:
        await first.register_executive("e1", name="e1", customer_types={"retail"}, max_open_chats=3)
        chat_ids = await _waiting_chats(first.ports.chats, 16)  # type: ignore[arg-type]
        await first.ports.executives.set_status("e1", ExecutiveStatus.ONLINE, now=clock.now())
        await first.ports.rotation.add("retail", "e1")
        async with anyio.create_task_group() as group:
            for chat_id, desk in itertools.product(chat_ids, (first, second)):
                group.start_soon(desk.assign_chat_round_robin, chat_id)
        assert len(await second.ports.chats.open_chats_of("e1")) == 3
        assert (await first.get_executive("e1")).open_chats == 3
        assert (await second.get_counters()).unassigned == 13
        announced = [
            e.payload for desk in (first, second) for e in publisher_of(desk).named("chat_assigned")
        ]
        assert len(announced) == 3
        await assert_counters_equal_recount(second.ports.chats)  # type: ignore[arg-type]


async def test_two_desks_assign_each_chat_once(env: Env) -> None:
    """Two desks (two clients, like two app processes) route the same chats
    at once: each chat is assigned (and announced) exactly once."""
    clock = ManualClock(T0)
    async with desk_on(env, clock) as first, desk_on(env, clock) as second:
        for executive in EXECUTIVES:
            await first.register_executive(executive, name=executive, customer_types={"retail"})
        chats = []
        for n in range(15):
            chat = await first.receive_customer_message(
                customer_id=f"+91{n:08d}", customer_name="c", customer_type="retail", text="hi"
            )
            assert chat.assigned_executive_id is None  # nobody online yet
            chats.append(chat.id)
        # Executives come online through the store so that nothing drains yet.
        for executive in EXECUTIVES:
            await first.ports.executives.set_status(
                executive, ExecutiveStatus.ONLINE, now=clock.now()
            )
            for customer_type in ("retail",):
                await first.ports.rotation.add(customer_type, executive)
        async with anyio.create_task_group() as group:
            for chat_id in chats:
                group.start_soon(first.assign_chat_round_robin, chat_id)
                group.start_soon(second.assign_chat_round_robin, chat_id)
        announced = [
            e.payload for desk in (first, second) for e in publisher_of(desk).named("chat_assigned")
        ]
        assert len(announced) == len(chats)
        for chat_id in chats:
            assert (await second.get_chat(chat_id)).assigned_executive_id in EXECUTIVES
        counters = await first.get_counters()
        assert (counters.open, counters.unassigned) == (15, 0)
        assert await second.recount() == counters
        assert sum(e.open_chats for e in await second.list_executives()) == 15


# ------------------------------------------------------------- failure injection


class Boom(Exception):
    pass


def _fail_updates(
    monkeypatch: pytest.MonkeyPatch, collection: str, *, after: int = 0, times: int = 1
) -> dict[str, int]:
    """Make ``update_one`` on ``collection`` raise a driver error on calls
    ``after`` .. ``after + times - 1`` (counting from 0)."""
    from pymongo.errors import AutoReconnect

    state = {"calls": 0, "failed": 0}
    original = mongodb._ThreadedColl.update_one

    async def update_one(self: Any, filter: Any, update: Any, **kwargs: Any) -> Any:
        if self.name == collection:
            call = state["calls"]
            state["calls"] += 1
            if after <= call < after + times:
                state["failed"] += 1
                raise AutoReconnect(f"injected failure on {collection}")
        return await original(self, filter, update, **kwargs)

    monkeypatch.setattr(mongodb._ThreadedColl, "update_one", update_one)
    return state


async def test_failing_chat_write_changes_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    ManualClock(T0)
    async with AsyncExitStack() as stack:
        store = await started(MongoChatStore(env.connection()), stack)
        (chat_id,) = await _waiting_chats(store, 1)
        before = await store.get(chat_id)
        counters = await store.type_counters()
        state = _fail_updates(monkeypatch, "v2_chats", times=1000)
        with pytest.raises(BackendError) as caught:
            await store.assign(chat_id, "e1", expected_from=None, now=T0)
        assert caught.value.__cause__ is not None
        assert state["failed"] >= 1
        monkeypatch.undo()
        assert await store.get(chat_id) == before
        assert await store.type_counters() == counters
        assert (await store.executive_counters(["e1"]))["e1"].open_chats == 0
        await assert_counters_equal_recount(store)


async def test_a_remembered_document_out_of_date_costs_a_read(env: Env) -> None:
    """Each store remembers the chats it read or wrote; another client's
    change makes its next write against that memory fail, and the store
    reads the chat again and decides on what is there."""
    ManualClock(T0)
    async with AsyncExitStack() as stack:
        first = await started(MongoChatStore(env.connection()), stack)
        second = await started(MongoChatStore(env.connection()), stack)
        chat_id, other = await _waiting_chats(first, 2)
        assert (await first.get(chat_id)) == (await second.get(chat_id))
        taken = await second.assign(chat_id, "e2", expected_from=None, now=T0)
        assert taken.outcome is AssignOutcome.ASSIGNED
        # first still remembers the chat unassigned
        result = await first.assign(chat_id, "e1", expected_from=None, now=T0)
        assert result.outcome is AssignOutcome.CHAT_CHANGED and result.chat == taken.chat
        moved = await first.assign(chat_id, "e1", expected_from="e2", now=T0)
        assert moved.outcome is AssignOutcome.ASSIGNED
        # a no-op decided on memory is checked against the server
        await second.add_tag(chat_id, "vip")
        change = await first.add_tag(chat_id, "vip")
        assert not change.changed and change.chat is not None and change.chat.tags == ("vip",)
        change = await second.remove_tag(chat_id, "vip")  # second remembers an old version
        assert change.changed and change.chat is not None
        assert change.chat.assigned_executive_id == "e1"
        # a store without memory reads every time and gives the same answers
        plain = await started(MongoChatStore(env.connection(), cache_size=0), stack)
        result = await plain.assign(other, "e3", expected_from=None, now=T0)
        assert result.outcome is AssignOutcome.ASSIGNED
        assert result.previous is not None and result.previous.assigned_executive_id is None
        await assert_counters_equal_recount(first)


async def test_an_assignment_of_a_chat_in_hand_is_one_command(
    wire_env: Env, mongo_url: str
) -> None:
    """A chat this process has just read is assigned with one ``update``
    (compare-and-set on its version), and taken back with one more."""
    import pymongo
    from pymongo import monitoring

    commands: list[str] = []

    class Listener(monitoring.CommandListener):
        def started(self, event: Any) -> None:
            if event.command_name not in ("hello", "isMaster", "endSessions"):
                commands.append(event.command_name)

        def succeeded(self, event: Any) -> None:
            pass

        def failed(self, event: Any) -> None:
            pass

    client = pymongo.MongoClient(mongo_url, tz_aware=True, event_listeners=[Listener()])
    wire_env.clients.append(client)
    async with AsyncExitStack() as stack:
        store = await started(
            MongoChatStore(MongoConnection(client, database=wire_env.database)), stack
        )
        (chat_id,) = await _waiting_chats(store, 1)
        waiting = await store.waiting("retail", limit=10)
        assert [c.id for c in waiting] == [chat_id]
        commands.clear()
        result = await store.assign(chat_id, "e1", expected_from=None, now=T0)
        assert result.outcome is AssignOutcome.ASSIGNED and result.chat is not None
        assert commands == ["update"]
        assert result.previous is not None
        assert (await store.undo_assign(result.chat, result.previous)).changed
        assert commands == ["update", "update"]
        commands.clear()
        assert (await store.executive_counters(["e1"]))["e1"].open_chats == 0
        assert commands == ["aggregate"]


async def test_driver_errors_become_backend_errors(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pymongo.errors import ServerSelectionTimeoutError

    async def down(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise ServerSelectionTimeoutError("injected: no server")

    ManualClock(T0)
    async with AsyncExitStack() as stack:
        connection = env.connection()
        store = await started(MongoChatStore(connection), stack)
        rotation = await started(MongoRotation(connection), stack)
        monkeypatch.setattr(mongodb._ThreadedColl, "find_one", down)
        monkeypatch.setattr(mongodb._ThreadedColl, "find_one_and_update", down)
        with pytest.raises(BackendError) as caught:
            await store.get("c1")
        assert isinstance(caught.value.__cause__, ServerSelectionTimeoutError)
        with pytest.raises(BackendError):
            await rotation.next("retail")


# ------------------------------------------------------- bad input through a desk


async def test_operator_injection_and_regex_through_the_desk(env: Env) -> None:
    clock = ManualClock(T0)
    async with desk_on(env, clock) as desk:
        for n, name in enumerate(NAMES):
            await desk.receive_customer_message(
                customer_id=f"+91{n:08d}", customer_name=name, customer_type="retail", text="hi"
            )
        injection = {"$ne": None}
        for call in (
            lambda: desk.get_chat(injection),  # type: ignore[arg-type]
            lambda: desk.apply_tag(injection, "x"),  # type: ignore[arg-type]
            lambda: desk.resolve_chat(injection),  # type: ignore[arg-type]
            lambda: desk.fetch_all_chats(customer_type=injection),  # type: ignore[arg-type]
            lambda: desk.fetch_all_chats(assigned_executive_id=injection),  # type: ignore[arg-type]
            lambda: desk.fetch_all_chats(tag=injection),  # type: ignore[arg-type]
            lambda: desk.fetch_all_chats(search=injection),  # type: ignore[arg-type]
            lambda: desk.get_executive(injection),  # type: ignore[arg-type]
        ):
            with pytest.raises(InvalidInputError):
                await call()
        # The adapters refuse it too, whoever calls them.
        with pytest.raises(InvalidInputError):
            await desk.ports.chats.get(injection)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            await desk.ports.rotation.next(injection)  # type: ignore[arg-type]

        async def found(search: str) -> list[str]:
            page = await desk.fetch_all_chats(search=search, limit=50)
            return sorted(c.customer_name for c in page.items)

        assert await found("a.b") == ["a.b"]
        assert await found("A.B") == ["a.b"]
        assert await found("(x") == ["(x)"]
        assert await found("[") == ["[z"]
        assert await found("%") == ["100%"]
        assert await found("a+b") == ["A+B"]
        assert await found("\\") == ["back\\slash"]
        assert await found(".*") == []
        assert await found("^R") == []
        assert await found("(a+)+$") == []
        assert await found("ravi") == ["Ravi"]


# ------------------------------------------------------ a Smart Chat V2 database


async def test_seed_database_and_migrate(env: Env) -> None:
    from bson import ObjectId

    clock = ManualClock(T0 + timedelta(minutes=5))
    oid = ObjectId()
    seed_doc = {
        "_id": oid,
        "customer_id": "+919800000009",
        "customer_name": "Old",
        "customer_type": "retail",
        "created_at": T0,
        "last_incoming_message": T0 + timedelta(minutes=1),
        "last_outgoing_message": None,
        "last_interaction_by": "Customer",
        "is_resolved": False,
        "resolved_at": None,
        "tags": [],
        "assigned_executive_id": None,
        "assigned_at": None,
    }
    async with AsyncExitStack() as stack:
        store = await started(MongoChatStore(env.connection()), stack)
        env.raw_db()[store.chats_collection].insert_one(dict(seed_doc))
        chat = await store.get(str(oid))
        assert chat is not None and chat.id == str(oid)
        assert chat.opened_at == T0 and chat.last_activity_at == T0 + timedelta(minutes=1)
        assert chat.queued_at == T0 + timedelta(minutes=1) and chat.last_message == ""
        # The SLA query reads seed fields only: it works before migrating.
        assert [c.id for c in await store.sla_due(clock.now(), limit=10)] == [str(oid)]
        assert await store.waiting("retail", limit=10) == []  # needs queued_at
        assert await store.migrate() == 1
        assert await store.migrate() == 0
        assert [c.id for c in await store.waiting("retail", limit=10)] == [str(oid)]
        assert (await store.type_counters())["retail"] == mongodb.TypeCounters(1, 1, 0)
        result = await store.assign(str(oid), "e1", expected_from=None, now=T0)
        assert result.outcome is AssignOutcome.ASSIGNED
        again = await store.record_incoming(
            new_id="unused",
            customer_id="+919800000009",
            customer_name="Old",
            customer_type="retail",
            preview="still me",
            now=clock.now(),
        )
        assert again.chat.id == str(oid) and not again.created
        await assert_counters_equal_recount(store)


# ---------------------------------------------------------- the native async client


async def test_async_client(anyio_backend: str, mongo_url: str, mongo_database: str) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("pymongo's AsyncMongoClient runs on asyncio only")
    clock = ManualClock(T0)
    environment = Env("wire", lambda: None, mongo_database, None)
    settings = Settings()
    ports = mongo_ports(
        mongo_url, database=mongo_database, settings=settings, clock=clock, async_client=True
    )
    connection = ports["chats"].connection
    assert isinstance(connection.db(), mongodb._AsyncDb)
    async with AsyncSmartChat(
        Ports(
            settings=settings,
            clock=clock,
            sender=RecordingSender(),
            publisher=RecordingPublisher(),
            **ports,
        )
    ) as desk:
        await desk.register_executive(
            "e1", name="Asha", customer_types={"retail"}, max_open_chats=1
        )
        await desk.set_executive_status("e1", "online")
        first = await desk.receive_customer_message(
            customer_id="+91", customer_name="Ravi", customer_type="retail", text="hi"
        )
        second = await desk.receive_customer_message(
            customer_id="+92", customer_name="Sita", customer_type="retail", text="hi"
        )
        assert first.assigned_executive_id == "e1" and second.assigned_executive_id is None
        await desk.resolve_chat(first.id)
        assert (await desk.get_chat(second.id)).assigned_executive_id == "e1"
        assert await desk.recount() == await desk.get_counters()
        page = await desk.fetch_all_chats(search="sit")
        assert [c.id for c in page.items] == [second.id]
    assert connection._db is None  # the client it created was closed
    del environment


# -------------------------------------------------------------- server quirks


async def test_due_queries_include_the_cutoff_itself(env: Env) -> None:
    """ "At or before" includes "at" (SecantusDB drops documents equal to a
    ``$lte`` bound on a middle field of a compound index)."""
    ManualClock(T0)
    async with AsyncExitStack() as stack:
        connection = env.connection()
        chats = await started(MongoChatStore(connection), stack)
        executives = await started(MongoExecutiveStore(connection), stack)
        (chat_id,) = await _waiting_chats(chats, 1)
        assert [c.id for c in await chats.sla_due(T0, limit=5)] == [chat_id]
        assert await chats.sla_due(T0 - timedelta(milliseconds=1), limit=5) == []
        await chats.assign(chat_id, "e1", expected_from=None, now=T0)
        await chats.record_outgoing(chat_id, executive_id="e1", preview="hello", now=T0)
        assert [c.id for c in await chats.awaiting_due(T0, limit=5)] == [chat_id]
        assert await chats.awaiting_due(T0 - timedelta(milliseconds=1), limit=5) == []
        for status in (ExecutiveStatus.ONLINE, ExecutiveStatus.AWAY):
            await executives.upsert(
                status.value, name="x", customer_types=frozenset({"retail"}), max_open_chats=None
            )
            await executives.set_status(status.value, status, now=T0)
        assert [e.id for e in await executives.inactive(T0, limit=5)] == ["away", "online"]
        assert await executives.inactive(T0 - timedelta(milliseconds=1), limit=5) == []


async def test_rotation_next_is_atomic_across_clients(env: Env) -> None:
    """Concurrent ``next`` from two clients hands out each turn once
    (SecantusDB's findAndModify pre-image is stale under concurrency)."""
    async with AsyncExitStack() as stack:
        rotations = [await started(MongoRotation(env.connection()), stack) for _ in range(2)]
        await rotations[0].replace("retail", list(EXECUTIVES))
        picked: list[str | None] = []

        async def take(rotation: MongoRotation) -> None:
            picked.append(await rotation.next("retail"))

        async with anyio.create_task_group() as group:
            for n in range(60):
                group.start_soon(take, rotations[n % 2])
        assert sorted(Counter(picked).values()) == [20, 20, 20], Counter(picked)
        assert await rotations[1].members("retail") == list(EXECUTIVES)
