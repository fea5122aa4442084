"""The Redis adapters against a real redis-server and against fakeredis.

asyncio only (redis-py's asyncio client): ``anyio_backend`` is "asyncio" in
this module.  The real server comes from the ``redis_server`` plugin
(tests/redis_server.py); its tests skip where redis-server cannot start,
unless SMARTCHAT_REQUIRE_SERVERS=1.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from redis_server import RedisServer, fake_client, unique_prefix
from smartchat_core import (
    AsyncSmartChat,
    BackendError,
    ChatNotFoundError,
    Event,
    Settings,
    SlaTier,
    SmartChat,
)
from smartchat_core.adapters.memory import MemoryChatStore, memory_ports
from smartchat_core.adapters.redis import (
    RedisAlertDedup,
    RedisConnection,
    RedisEventPublisher,
    RedisKeys,
    RedisLock,
    RedisRotation,
    redis_ports,
)
from smartchat_core.services import Ports
from smartchat_core.testing import ManualClock, RecordingPublisher, RecordingSender

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
ALERT, LEAD = "+910000000001", "+910000000002"
SEED_TIERS = (
    SlaTier("alert", after=timedelta(minutes=3), recipient=ALERT, dedup_ttl=timedelta(seconds=300)),
    SlaTier("escalation", after=timedelta(minutes=10), recipient=LEAD,
            dedup_ttl=timedelta(seconds=700)),
)  # fmt: skip
GUARD = 20  # seconds: only a guard against hangs, never asserted


@pytest.fixture
def anyio_backend() -> str:
    """redis.asyncio runs on asyncio only."""
    return "asyncio"


def _real_client(url: str, **options: Any) -> Redis:
    # One quick retry (a pooled connection may be stale after a restart),
    # no backoff: a stopped server fails fast.  (The asyncio Retry: the
    # synchronous one is accepted by the asyncio client but retries nothing.)
    options.setdefault("retry", AsyncRetry(NoBackoff(), 1))
    options.setdefault("socket_connect_timeout", 5)
    options.setdefault("socket_timeout", 5)
    pool = BlockingConnectionPool.from_url(url, max_connections=20, timeout=GUARD, **options)
    return Redis.from_pool(pool)


@attrs.define
class Clients:
    """New clients on one Redis (real or fake); closed after the test."""

    kind: str
    make: Callable[[], Redis]
    created: list[Redis] = attrs.field(factory=list)

    def new(self) -> Redis:
        client = self.make()
        self.created.append(client)
        return client

    async def aclose(self) -> None:
        for client in self.created:
            await client.aclose()


@pytest.fixture(params=["redis-server", "fakeredis"])
async def clients(request: pytest.FixtureRequest) -> AsyncIterator[Clients]:
    if request.param == "redis-server":
        server: RedisServer = request.getfixturevalue("redis_server")
        made = Clients("redis-server", lambda: _real_client(server.url))
    else:
        fake = request.getfixturevalue("fake_redis_server")
        made = Clients("fakeredis", lambda: fake_client(fake))
    try:
        yield made
    finally:
        await made.aclose()


# ------------------------------------------------------------------ rotation


async def test_rotation_contract(clients: Clients) -> None:
    prefix = unique_prefix("rr")
    ring = RedisRotation(clients.new(), prefix=prefix)
    async with AsyncExitStack() as stack:
        await ring.start(stack)
        assert await ring.next("retail") is None
        assert await ring.members("retail") == []
        for executive in ("a", "b", "c"):
            await ring.add("retail", executive)
        await ring.add("retail", "a")  # a member keeps its place
        assert await ring.members("retail") == ["a", "b", "c"]
        assert [await ring.next("retail") for _ in range(4)] == ["a", "b", "c", "a"]
        assert await ring.members("retail") == ["b", "c", "a"]
        await ring.add("retail", "b")
        assert await ring.members("retail") == ["b", "c", "a"]
        await ring.remove("retail", "c")
        await ring.remove("retail", "zzz")
        assert await ring.members("retail") == ["b", "a"]
        assert await ring.members("wholesale") == []  # rings are per type
        await ring.replace("retail", ["x", "y", "x", "z"])
        assert await ring.members("retail") == ["x", "y", "z"]
        await ring.replace("retail", [])
        assert await ring.next("retail") is None
        many = [f"e{i}" for i in range(2500)]  # more than one RPUSH batch
        await ring.replace("retail", many)
        assert await ring.members("retail") == many
    # the key layout: hash-tagged, one list per type
    keys = RedisKeys(prefix)
    assert keys.rotation("retail") == "{" + prefix + "}:rr:retail"
    assert await clients.created[0].llen(keys.rotation("retail")) == 2500


async def test_rotation_is_exactly_fair_across_two_clients(clients: Clients) -> None:
    prefix = unique_prefix("fair")
    first = RedisRotation(clients.new(), prefix=prefix)
    second = RedisRotation(clients.new(), prefix=prefix)
    executives = [f"e{i}" for i in range(5)]
    await first.replace("retail", executives)
    rounds = 60
    taken: list[str | None] = []

    async def take(ring: RedisRotation) -> None:
        taken.append(await ring.next("retail"))

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            for i in range(rounds * len(executives)):
                group.start_soon(take, first if i % 2 else second)
    assert Counter(taken) == dict.fromkeys(executives, rounds)
    assert await second.members("retail") == executives  # full turns: back to the start


# -------------------------------------------------------------------- dedup


async def test_dedup_uses_the_seed_keys(clients: Clients) -> None:
    client = clients.new()
    dedup = RedisAlertDedup(client)
    key = f"sla::alerted::{unique_prefix('chat')}::alert"
    assert await dedup.claim(key, timedelta(seconds=300))
    assert not await dedup.claim(key, timedelta(seconds=300))
    assert await client.get(key) == b"1"  # the seed's key and value, no prefix
    assert 0 < await client.pttl(key) <= 300_000
    await dedup.release(key)
    assert await client.exists(key) == 0
    assert await dedup.claim(key, timedelta(seconds=300))
    prefixed = RedisAlertDedup(client, prefix="v3:")
    assert await prefixed.claim(key, timedelta(seconds=300))  # another key space
    assert await client.exists("v3:" + key) == 1


async def test_dedup_on_virtual_time(clients: Clients) -> None:
    client = clients.new()
    clock = ManualClock(T0)
    dedup = RedisAlertDedup(client, clock=clock)
    key = f"sla::alerted::{unique_prefix('chat')}::alert"
    assert await dedup.claim(key, timedelta(seconds=300))
    clock.advance(timedelta(seconds=299))
    assert not await dedup.claim(key, timedelta(seconds=300))
    clock.advance(timedelta(seconds=1))
    assert await dedup.claim(key, timedelta(seconds=300))  # the window ended on the clock
    assert not await dedup.claim(key, timedelta(seconds=300))
    await dedup.release(key)
    assert await dedup.claim(key, timedelta(seconds=300))
    # a key written by the seed (value "1", server TTL) is respected
    seed_key = f"sla::alerted::{unique_prefix('seed')}::alert"
    await client.set(seed_key, "1", px=300_000)
    clock.advance(timedelta(days=1))
    assert not await dedup.claim(seed_key, timedelta(seconds=300))


async def test_dedup_claim_races_have_one_winner(clients: Clients) -> None:
    dedups = [RedisAlertDedup(clients.new()), RedisAlertDedup(clients.new())]
    keys = [f"sla::alerted::{unique_prefix('race')}::alert" for _ in range(40)]
    wins: Counter[str] = Counter()

    async def claim(dedup: RedisAlertDedup, key: str) -> None:
        if await dedup.claim(key, timedelta(seconds=300)):
            wins[key] += 1

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            for key in keys:
                for dedup in dedups:
                    group.start_soon(claim, dedup, key)
    assert wins == dict.fromkeys(keys, 1)


# --------------------------------------------------------------------- lock


@pytest.mark.parametrize("virtual", [False, True], ids=["server-time", "virtual-time"])
async def test_lock_contract(clients: Clients, virtual: bool) -> None:
    client = clients.new()
    clock = ManualClock(T0)
    prefix = unique_prefix("lock")
    lock = RedisLock(client, prefix=prefix, clock=clock if virtual else None)
    ttl = timedelta(seconds=120)
    assert await lock.acquire("monitor:sla:1", "p1", ttl)
    assert not await lock.acquire("monitor:sla:1", "p2", ttl)
    assert not await lock.release("monitor:sla:1", "p2")  # never someone else's
    key = RedisKeys(prefix).lock("monitor:sla:1")
    assert key == "{" + prefix + "}:lock:monitor:sla:1"
    assert await client.exists(key) == 1
    assert await client.pttl(key) > 0
    assert await lock.release("monitor:sla:1", "p1")
    assert not await lock.release("monitor:sla:1", "p1")
    assert await lock.acquire("monitor:sla:1", "p2", ttl)
    assert await lock.acquire("monitor:sla:2", "p1", ttl)  # leases are independent
    if virtual:
        clock.advance(ttl)  # p2's lease ended on the clock
        assert not await lock.release("monitor:sla:1", "p2")
        assert await lock.acquire("monitor:sla:1", "p3", ttl)
        assert not await lock.release("monitor:sla:1", "p2")
        assert await lock.release("monitor:sla:1", "p3")


@pytest.mark.parametrize("virtual", [False, True], ids=["server-time", "virtual-time"])
async def test_lock_exactly_once_between_two_clients(clients: Clients, virtual: bool) -> None:
    clock = ManualClock(T0)
    prefix = unique_prefix("lease")
    expiry = clock if virtual else None
    locks = {
        "p1": RedisLock(clients.new(), prefix=prefix, clock=expiry),
        "p2": RedisLock(clients.new(), prefix=prefix, clock=expiry),
    }
    names = [f"monitor:sla:{slot}" for slot in range(50)]
    holders: dict[str, list[str]] = {name: [] for name in names}

    async def race(token: str, name: str) -> None:
        if await locks[token].acquire(name, token, timedelta(seconds=120)):
            holders[name].append(token)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            for name in names:
                for token in locks:
                    group.start_soon(race, token, name)
    assert all(len(tokens) == 1 for tokens in holders.values()), holders
    # only the holder can give it back
    for name, (token,) in holders.items():
        other = "p2" if token == "p1" else "p1"
        assert not await locks[other].release(name, other)
        assert await locks[other].release(name, token)  # the token, not the process, holds


# ------------------------------------------------------------------- events


def _event(name: str, *rooms: str, n: int = 0) -> Event:
    return Event(name, {"n": n, "text": "héllo"}, frozenset(rooms), T0 + timedelta(seconds=n))


async def _next(events: AsyncIterator[Event]) -> Event:
    with anyio.fail_after(GUARD):
        return await events.__anext__()


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for a condition the background tasks bring about (guarded)."""
    with anyio.fail_after(GUARD):
        while not condition():  # noqa: ASYNC110 - a state of other tasks, no event to await
            await anyio.sleep(0.01)


async def _flush(*publishers: RedisEventPublisher) -> None:
    with anyio.fail_after(GUARD):
        for publisher in publishers:
            await publisher.flush()


async def test_events_cross_processes_with_room_filtering(clients: Clients) -> None:
    prefix = unique_prefix("events")
    process_a = RedisEventPublisher(clients.new(), prefix=prefix)
    process_b = RedisEventPublisher(clients.new(), prefix=prefix)
    other_desk = RedisEventPublisher(clients.new(), prefix=unique_prefix("other"))
    async with AsyncExitStack() as stack:
        for publisher in (process_a, process_b, other_desk):
            await publisher.start(stack)
        await process_a.publish(_event("before", "executive:e1", "dashboard"))
        await _flush(process_a)  # on Redis before the subscriptions: not seen
        async with (
            process_b.subscribe({"executive:e1"}) as on_b,
            process_a.subscribe({"dashboard"}) as on_a,
            other_desk.subscribe({"dashboard", "executive:e1"}) as elsewhere,
        ):
            await process_a.publish(_event("dash", "dashboard", n=1))
            await process_a.publish(_event("mine", "executive:e1", "chat:c1", n=2))
            await process_a.publish(_event("chat", "chat:c9", n=3))
            await process_b.publish(_event("from_b", "dashboard", "executive:e1", n=4))
            await other_desk.publish(_event("other", "dashboard", n=5))
            # a process's own events come at once, the others' through Redis:
            # between processes only each publisher's order holds
            got_b = sorted([await _next(on_b), await _next(on_b)], key=lambda e: e.payload["n"])
            assert got_b == [
                _event("mine", "executive:e1", "chat:c1", n=2),
                _event("from_b", "dashboard", "executive:e1", n=4),
            ]
            got_a = [await _next(on_a), await _next(on_a)]
            assert got_a == [
                _event("dash", "dashboard", n=1),
                _event("from_b", "dashboard", "executive:e1", n=4),
            ]
            assert await _next(elsewhere) == _event("other", "dashboard", n=5)  # same class too


async def test_events_skip_malformed_messages(clients: Clients) -> None:
    prefix = unique_prefix("junk")
    client = clients.new()
    publisher = RedisEventPublisher(client, prefix=prefix)
    elsewhere = RedisEventPublisher(clients.new(), prefix=prefix)
    async with AsyncExitStack() as stack:
        for started in (publisher, elsewhere):
            await started.start(stack)
        async with publisher.subscribe({"dashboard"}) as events:
            for junk in (b"not json", b"[1, 2]", b'{"event": "x"}', b"\xff\xfe"):
                await client.publish(f"{prefix}:events", junk)
            await elsewhere.publish(_event("ok", "dashboard"))  # after the junk, through Redis
            assert await _next(events) == _event("ok", "dashboard")


async def test_publisher_lifecycle(clients: Clients) -> None:
    publisher = RedisEventPublisher(clients.new(), prefix=unique_prefix("life"))
    with pytest.raises(RuntimeError, match="start"):
        async with publisher.subscribe({"dashboard"}):
            pass  # pragma: no cover
    await publisher.flush()  # nothing queued: returns
    async with AsyncExitStack() as stack:
        await publisher.start(stack)
        assert not publisher.connected  # listens only while someone here subscribes
        with pytest.raises(RuntimeError, match="already started"):
            await publisher.start(stack)
        async with publisher.subscribe({"dashboard"}):
            assert publisher.connected
            async with publisher.subscribe({"chat:c1"}):
                assert publisher.connected
            assert publisher.connected  # one subscription left
        assert not publisher.connected
        async with publisher.subscribe({"dashboard"}):
            assert publisher.connected
    assert not publisher.connected
    await publisher.publish(_event("while stopped", "dashboard"))  # queued
    assert publisher.queued == 1
    with pytest.raises(RuntimeError, match="start"):
        await publisher.flush()
    async with AsyncExitStack() as stack:  # can start again
        await publisher.start(stack)
        await _flush(publisher)  # what waited goes out
        assert (publisher.queued, publisher.sent) == (0, 1)
        async with publisher.subscribe({"dashboard"}) as events:
            await publisher.publish(_event("again", "dashboard"))
            assert (await _next(events)).name == "again"
    for bad in ({"queue_size": 0}, {"batch_size": 0}, {"batch_delay": -1}):
        with pytest.raises(ValueError, match="must"):
            RedisEventPublisher(clients.new(), **bad)  # type: ignore[arg-type]


async def test_own_events_are_delivered_once_at_publish(clients: Clients) -> None:
    prefix = unique_prefix("own")
    publisher = RedisEventPublisher(clients.new(), prefix=prefix)
    other = RedisEventPublisher(clients.new(), prefix=prefix)
    async with AsyncExitStack() as stack:
        for started in (publisher, other):
            await started.start(stack)
        async with publisher.subscribe({"dashboard"}) as events:
            for n in range(3):
                await publisher.publish(_event("own", "dashboard", n=n))
            # delivered before anything reached Redis
            assert [(await _next(events)).payload["n"] for _ in range(3)] == [0, 1, 2]
            await _flush(publisher)  # now on Redis, before the marker
            await other.publish(_event("marker", "dashboard", n=9))
            # the listener skipped the own messages: the marker comes next
            assert await _next(events) == _event("marker", "dashboard", n=9)
        assert publisher.sent == 3


async def test_own_events_skipped_with_decoded_responses(redis_server: RedisServer) -> None:
    """A client with ``decode_responses=True`` hands the listener text."""
    prefix = unique_prefix("text")
    client = _real_client(redis_server.url, decode_responses=True)
    other_client = _real_client(redis_server.url)
    publisher = RedisEventPublisher(client, prefix=prefix)
    other = RedisEventPublisher(other_client, prefix=prefix)
    try:
        async with AsyncExitStack() as stack:
            for started in (publisher, other):
                await started.start(stack)
            async with publisher.subscribe({"dashboard"}) as events:
                await publisher.publish(_event("own", "dashboard", n=1))
                await _flush(publisher)
                await other.publish(_event("other", "dashboard", n=2))
                assert [await _next(events) for _ in range(2)] == [
                    _event("own", "dashboard", n=1),
                    _event("other", "dashboard", n=2),
                ]
    finally:
        await client.aclose()
        await other_client.aclose()


async def test_listens_only_while_subscribed(clients: Clients) -> None:
    """No subscription here: the channel is not even received; the first
    subscription subscribes, and sees what others publish after it."""
    prefix = unique_prefix("lazy")
    publisher = RedisEventPublisher(clients.new(), prefix=prefix)
    other = RedisEventPublisher(clients.new(), prefix=prefix)
    async with AsyncExitStack() as stack:
        for started in (publisher, other):
            await started.start(stack)
        await other.publish(_event("unheard", "dashboard", n=1))
        await _flush(other)
        assert not publisher.connected
        for round_ in range(2):  # the listener stops and starts again
            async with publisher.subscribe({"dashboard"}) as events:
                await other.publish(_event("heard", "dashboard", n=2 + round_))
                assert await _next(events) == _event("heard", "dashboard", n=2 + round_)
            assert not publisher.connected
        assert publisher.reconnects == 0


async def test_the_wire_form_carries_the_origin(clients: Clients) -> None:
    prefix = unique_prefix("wire")
    client = clients.new()
    publisher = RedisEventPublisher(client, prefix=prefix)
    pubsub = client.pubsub()
    await pubsub.subscribe(f"{prefix}:events")
    try:
        async with AsyncExitStack() as stack:
            await publisher.start(stack)
            event = Event("x", {"set": {"b", "a"}}, frozenset({"dashboard"}), T0)
            await publisher.publish(event)
            await _flush(publisher)
            with anyio.fail_after(GUARD):
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                    if message is not None:
                        break
        data = message["data"].decode()
        assert data.startswith('{"origin":"' + publisher.origin + '",')
        assert json.loads(data) == {
            "origin": publisher.origin,
            **json.loads(json.dumps(event.to_json(), default=sorted)),
        }
        assert Event.from_json(json.loads(data)) == Event(
            "x", {"set": ["a", "b"]}, frozenset({"dashboard"}), T0
        )
        with pytest.raises(TypeError, match="not JSON"):  # a bug of the caller: raised
            await publisher.publish(Event("x", {"bad": object()}, frozenset(), T0))
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


@asynccontextmanager
async def _publisher_and_dashboard(
    clients: Clients, label: str, **options: Any
) -> AsyncIterator[tuple[RedisEventPublisher, AsyncIterator[Event]]]:
    """A started publisher (``options``), and the dashboard events another
    process (publisher) on the same prefix receives."""
    prefix = unique_prefix(label)
    publisher = RedisEventPublisher(clients.new(), prefix=prefix, **options)
    receiver = RedisEventPublisher(clients.new(), prefix=prefix)
    async with AsyncExitStack() as stack:
        for started in (receiver, publisher):
            await started.start(stack)
        async with receiver.subscribe({"dashboard"}) as events:
            yield publisher, events


async def test_events_keep_their_order_over_many_batches(clients: Clients) -> None:
    options = {"batch_size": 7, "batch_delay": 0}
    async with _publisher_and_dashboard(clients, "order", **options) as (publisher, events):
        for n in range(200):
            await publisher.publish(_event("e", "dashboard", n=n))
            if n % 50 == 0:
                await anyio.lowlevel.checkpoint()  # the sender runs in between
        assert [(await _next(events)).payload["n"] for _ in range(200)] == list(range(200))
    assert publisher.sent == 200
    assert publisher.batches >= 200 // 7


async def test_exit_flushes_the_queue(clients: Clients) -> None:
    prefix = unique_prefix("flush")
    receiver = RedisEventPublisher(clients.new(), prefix=prefix)
    async with AsyncExitStack() as outer:
        await receiver.start(outer)
        async with receiver.subscribe({"dashboard"}) as events:
            publisher = RedisEventPublisher(clients.new(), prefix=prefix)
            async with AsyncExitStack() as inner:
                await publisher.start(inner)
                for n in range(30):
                    await publisher.publish(_event("e", "dashboard", n=n))
                assert publisher.sent == 0  # nothing awaited: all still queued
            assert (publisher.queued, publisher.sent) == (0, 30)  # the exit sent them
            assert [(await _next(events)).payload["n"] for _ in range(30)] == list(range(30))


async def test_queue_overflow_drops_the_oldest(
    clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = unique_prefix("full")
    receiver = RedisEventPublisher(clients.new(), prefix=prefix)
    publisher = RedisEventPublisher(clients.new(), prefix=prefix, queue_size=3)
    for n in range(5):  # not started: queued, the oldest dropped
        await publisher.publish(_event("e", "dashboard", n=n))
    for n in range(5, 7):
        await publisher.publish(_event("e", "dashboard", n=n))
    assert (publisher.queued, publisher.queue_dropped) == (3, 4)
    full = [r for r in caplog.records if "queue is full" in r.getMessage()]
    assert len(full) == 1  # one warning, not one an event
    async with AsyncExitStack() as stack:
        await receiver.start(stack)
        async with receiver.subscribe({"dashboard"}) as events:
            await publisher.start(stack)
            await _flush(publisher)
            assert [(await _next(events)).payload["n"] for _ in range(3)] == [4, 5, 6]
    assert (publisher.sent, publisher.queue_dropped) == (3, 4)


async def test_batches_go_out_as_pipelines_where_scripts_are_refused(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Batches are one EVAL (one PUBLISH an event inside); a server that
    refuses scripts to this user gets pipelines instead, once told so."""
    prefix = unique_prefix("noscript")
    user = f"sc-{prefix}"
    admin, receiving = _real_client(redis_server.url), _real_client(redis_server.url)
    try:
        await admin.execute_command("ACL", "SETUSER", user, "on", "nopass", "~*", "&*", "+@all",
                                    "-@scripting")  # fmt: skip
    except RedisError as exc:  # an external server may not let the tests add users
        await admin.aclose()
        await receiving.aclose()
        pytest.skip(f"cannot add a Redis user: {exc}")
    limited = _real_client(redis_server.url, username=user, password="")
    publisher = RedisEventPublisher(limited, prefix=prefix)
    receiver = RedisEventPublisher(receiving, prefix=prefix)
    try:
        async with AsyncExitStack() as stack:
            for started in (receiver, publisher):
                await started.start(stack)
            async with receiver.subscribe({"dashboard"}) as events:
                for n in range(5):
                    await publisher.publish(_event("e", "dashboard", n=n))
                await _flush(publisher)
                await publisher.publish(_event("e", "dashboard", n=5))
                await _flush(publisher)
                assert [(await _next(events)).payload["n"] for _ in range(6)] == list(range(6))
        refused = [r for r in caplog.records if "EVAL refused" in r.getMessage()]
        assert len(refused) == 1
        assert (publisher.sent, publisher.send_errors) == (6, 0)
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        for client in (admin, receiving, limited):
            await client.aclose()


async def test_publish_does_not_wait_for_a_paused_redis(redis_server: RedisServer) -> None:
    """``CLIENT PAUSE ... WRITE`` holds every PUBLISH on the server: publish
    still returns, local subscribers get the event, the others once Redis
    answers again."""
    prefix = unique_prefix("paused")
    admin, sending, receiving = (_real_client(redis_server.url) for _ in range(3))
    publisher = RedisEventPublisher(sending, prefix=prefix)
    receiver = RedisEventPublisher(receiving, prefix=prefix)
    try:
        async with AsyncExitStack() as stack:
            for started in (publisher, receiver):
                await started.start(stack)
            async with (
                publisher.subscribe({"dashboard"}) as here,
                receiver.subscribe({"dashboard"}) as there,
            ):
                await admin.execute_command("CLIENT", "PAUSE", GUARD * 1000, "WRITE")
                try:
                    for n in range(3):
                        await publisher.publish(_event("e", "dashboard", n=n))
                    assert [(await _next(here)).payload["n"] for _ in range(3)] == [0, 1, 2]
                    assert publisher.sent == 0  # Redis holds them: nothing was sent yet
                    assert publisher.queued == 3
                finally:
                    await admin.execute_command("CLIENT", "UNPAUSE")
                await _flush(publisher)
                assert [(await _next(there)).payload["n"] for _ in range(3)] == [0, 1, 2]
    finally:
        for client in (admin, sending, receiving):
            await client.aclose()


async def test_publish_during_an_outage_is_queued_then_sent(
    redis_faults: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_faults
    client = _real_client(server.url, socket_connect_timeout=2, socket_timeout=2)
    publisher = RedisEventPublisher(client, prefix=unique_prefix("down"), reconnect_max_delay=0.2)
    try:
        async with AsyncExitStack() as stack:
            await publisher.start(stack)
            async with publisher.subscribe({"dashboard"}) as events:
                server.stop()
                for n in range(4):
                    await publisher.publish(_event("e", "dashboard", n=n))  # no error
                assert [(await _next(events)).payload["n"] for _ in range(4)] == [0, 1, 2, 3]
                await _until(lambda: publisher.send_errors >= 2)  # it retries, it waits
                assert publisher.sent == 0
                assert publisher.queued == 4
                server.start()
                await _flush(publisher)
                assert (publisher.sent, publisher.queue_dropped) == (4, 0)
        failed = [r for r in caplog.records if "PUBLISH failed" in r.getMessage()]
        assert len(failed) == 1  # once an outage
    finally:
        await client.aclose()


# ---------------------------------------------------------- errors, wiring


async def test_driver_failures_are_backend_errors() -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = _real_client(f"redis://127.0.0.1:{port}/0", retry=AsyncRetry(NoBackoff(), 0))
    try:
        ports = redis_ports(client, settings=Settings(), clock=ManualClock(T0))
        calls: list[Callable[[], Any]] = [
            lambda: ports["rotation"].next("retail"),
            lambda: ports["rotation"].add("retail", "e1"),
            lambda: ports["rotation"].remove("retail", "e1"),
            lambda: ports["rotation"].members("retail"),
            lambda: ports["rotation"].replace("retail", ["e1"]),
            lambda: ports["dedup"].claim("k", timedelta(seconds=1)),
            lambda: ports["dedup"].release("k"),
            lambda: ports["lock"].acquire("l", "t", timedelta(seconds=1)),
            lambda: ports["lock"].release("l", "t"),
            lambda: ports["publisher"].start(AsyncExitStack()),
        ]
        for call in calls:
            with pytest.raises(BackendError) as info:
                await call()
            assert isinstance(info.value.__cause__, (RedisError, OSError))
        await ports["publisher"].publish(_event("x", "dashboard"))  # best-effort: queued
        assert ports["publisher"].queued == 1
        async with AsyncExitStack() as stack:
            with pytest.raises(BackendError):
                await ports["rotation"].start(stack)  # start pings
    finally:
        await client.aclose()


def test_key_prefix_is_checked() -> None:
    for bad in ("", "a{b", "c}"):
        with pytest.raises(ValueError, match="prefix"):
            RedisKeys(bad)
    assert RedisKeys().tag == "{smartchat}"
    assert RedisKeys().events == "smartchat:events"


async def test_url_client_is_created_on_start_and_closed_on_exit(
    redis_server: RedisServer,
) -> None:
    connection = RedisConnection(redis_server.url)
    with pytest.raises(RuntimeError, match="not started"):
        _ = connection.client
    async with AsyncExitStack() as stack:
        await connection.start(stack)
        await connection.start(stack)  # shared by several ports: idempotent
        assert await connection.client.ping()
    with pytest.raises(RuntimeError, match="not started"):
        _ = connection.client


def _desk_ports(
    client: Redis | str,
    *,
    settings: Settings,
    clock: ManualClock,
    sender: RecordingSender,
    publisher: RecordingPublisher | None = None,
    prefix: str | None = None,
) -> Ports:
    """Like ``memory_ports`` with rotation, dedup, lock and publisher on Redis."""
    redis = dict(
        redis_ports(client, settings=settings, clock=clock, prefix=prefix or unique_prefix("desk"))
    )
    if publisher is not None:
        redis["publisher"] = publisher
    return attrs.evolve(memory_ports(settings, clock, sender), **redis)


async def test_desk_on_redis_ports(redis_server: RedisServer) -> None:
    """The sketch's flow with the Redis ports, client built from the URL."""
    clock, sender = ManualClock(T0), RecordingSender()
    settings = Settings(sla_tiers=SEED_TIERS)
    ports = _desk_ports(redis_server.url, settings=settings, clock=clock, sender=sender)
    async with AsyncSmartChat(ports) as desk:
        for executive in ("e1", "e2"):
            await desk.register_executive(executive, name=executive, customer_types={"retail"})
            await desk.set_executive_status(executive, "online")
        async with desk.subscribe(rooms={"dashboard"}) as events:
            chats = [
                await desk.receive_customer_message(
                    customer_id=f"+91980000000{i}", customer_name="R", customer_type="retail",
                    text="hi",
                )
                for i in range(4)
            ]  # fmt: skip
            names = [(await _next(events)).name for _ in range(8)]
        assert names == ["chat_message", "chat_assigned"] * 4
        assert [c.assigned_executive_id for c in chats] == ["e1", "e2", "e1", "e2"]
        clock.advance(timedelta(minutes=4))
        assert len(await desk.run_sla_check()) == 4
        assert await desk.run_sla_check() == []  # dedup window
        clock.advance(timedelta(seconds=301))  # the window ends on the desk's clock
        assert {a.tier for a in await desk.run_sla_check()} == {"alert"}
        assert len(sender.to(ALERT)) == 8
    with pytest.raises(RuntimeError, match="not started"):
        await ports.rotation.next("retail")


async def test_errors_in_the_desk_pass_through_unwrapped(clients: Clients) -> None:
    ports = _desk_ports(clients.new(), settings=Settings(), clock=ManualClock(T0),
                        sender=RecordingSender())  # fmt: skip
    with pytest.raises(ChatNotFoundError):  # not an ExceptionGroup
        async with AsyncSmartChat(ports) as desk:
            await desk.get_chat("nope")


def test_blocking_desk_on_redis(redis_server: RedisServer) -> None:
    """SmartChat enters and exits the desk in different portal tasks."""
    clock, sender = ManualClock(T0), RecordingSender()
    ports = _desk_ports(redis_server.url, settings=Settings(), clock=clock, sender=sender)
    with SmartChat(AsyncSmartChat(ports)) as desk:
        desk.register_executive("e1", name="Asha", customer_types={"retail"})
        desk.set_executive_status("e1", "online")
        with desk.subscribe(rooms={"dashboard"}) as events:
            chat = desk.receive_customer_message(
                customer_id="c1", customer_name="Ravi", customer_type="retail", text="hi"
            )
            assert chat.assigned_executive_id == "e1"
            received = [events.get(GUARD) for _ in range(2)]
            assert [e.name if e else None for e in received] == ["chat_message", "chat_assigned"]
    assert not ports.publisher.connected  # type: ignore[attr-defined]


def test_redis_adapters_need_asyncio() -> None:
    async def start() -> None:
        async with AsyncExitStack() as stack:
            await RedisConnection("redis://127.0.0.1:1/0").start(stack)

    with pytest.raises(RuntimeError, match="asyncio"):
        anyio.run(start, backend="trio")


# ------------------------------------------------------------ data and faults


def _store(ports: Ports) -> MemoryChatStore:
    assert isinstance(ports.chats, MemoryChatStore)
    return ports.chats


async def _assert_consistent(desk: AsyncSmartChat, ports: Ports) -> None:
    """Counters equal a recount; every open chat is assigned or waiting."""
    counters = await desk.get_counters()
    executives = {e.id: (e.open_chats, e.awaiting_chats) for e in await desk.list_executives()}
    assert await desk.recount() == counters
    assert {
        e.id: (e.open_chats, e.awaiting_chats) for e in await desk.list_executives()
    } == executives
    for chat in _store(ports).all_chats():
        if chat.is_open:
            assert (chat.assigned_executive_id is None) == (chat.queued_at is not None)


async def test_rotation_rebuilt_after_redis_lost_it(clients: Clients) -> None:
    clock, sender = ManualClock(T0), RecordingSender()
    client = clients.new()
    prefix = unique_prefix("lost")
    ports = _desk_ports(client, settings=Settings(), clock=clock, sender=sender, prefix=prefix)
    async with AsyncSmartChat(ports) as desk:
        for executive in ("e1", "e2", "e3"):
            await desk.register_executive(executive, name=executive, customer_types={"retail"})
            await desk.set_executive_status(executive, "online")
        await client.delete(RedisKeys(prefix).rotation("retail"))  # Redis lost the ring
        assigned = [
            (
                await desk.receive_customer_message(
                    customer_id=f"c{i}", customer_name="", customer_type="retail", text="hi"
                )
            ).assigned_executive_id
            for i in range(6)
        ]
        assert assigned == ["e1", "e2", "e3"] * 2  # rebuilt from the executive store
        assert sorted(await ports.rotation.members("retail")) == ["e1", "e2", "e3"]
        await _assert_consistent(desk, ports)


async def test_rotation_lost_then_someone_goes_online(clients: Clients) -> None:
    clock, sender = ManualClock(T0), RecordingSender()
    client = clients.new()
    prefix = unique_prefix("partial")
    ports = _desk_ports(client, settings=Settings(), clock=clock, sender=sender, prefix=prefix)
    async with AsyncSmartChat(ports) as desk:
        for executive in ("e1", "e2", "e3"):
            await desk.register_executive(executive, name=executive, customer_types={"retail"})
        for executive in ("e1", "e2"):
            await desk.set_executive_status(executive, "online")
        await client.delete(RedisKeys(prefix).rotation("retail"))  # Redis lost the ring
        await desk.set_executive_status("e3", "online")
        for i in range(6):
            await desk.receive_customer_message(
                customer_id=f"c{i}", customer_name="", customer_type="retail", text="hi"
            )
        loads = {e.id: e.open_chats for e in await desk.list_executives()}
        assert loads == {"e1": 2, "e2": 2, "e3": 2}  # invariant 3


@pytest.mark.parametrize("publisher_on", ["redis", "memory"])
async def test_redis_outage_leaves_nothing_half_changed(
    redis_faults: RedisServer, publisher_on: str
) -> None:
    """Redis stops mid-run: operations raise BackendError, the chats (in
    memory) and counters stay consistent, the chat that could not be assigned
    waits; once Redis is back (empty) the rotation rebuilds and assignment
    continues."""
    server = redis_faults
    clock, sender = ManualClock(T0), RecordingSender()
    recording = RecordingPublisher() if publisher_on == "memory" else None
    client = _real_client(server.url, socket_connect_timeout=2, socket_timeout=2)
    ports = _desk_ports(
        client,
        settings=Settings(sla_tiers=SEED_TIERS),
        clock=clock,
        sender=sender,
        publisher=recording,
    )
    store = _store(ports)

    async def message(customer: str) -> Any:
        return await desk.receive_customer_message(
            customer_id=customer, customer_name=customer, customer_type="retail", text="hi"
        )

    try:
        async with AsyncSmartChat(ports) as desk:
            for executive in ("e1", "e2"):
                await desk.register_executive(executive, name=executive, customer_types={"retail"})
                await desk.set_executive_status(executive, "online")
            first = await message("c1")
            assert first.assigned_executive_id == "e1"

            server.stop()
            with pytest.raises(BackendError) as info:
                await message("c2")
            assert isinstance(info.value.__cause__, (RedisError, OSError))
            # the rotation fails mid-assignment (events on Redis are queued, never raised)
            assert "rotation next" in str(info.value)
            (waiting,) = [c for c in store.all_chats() if c.customer_id == "c2"]
            assert waiting.is_waiting and waiting.queued_at == T0  # recorded, waiting, not lost
            clock.advance(timedelta(minutes=4))
            with pytest.raises(BackendError):
                await desk.run_sla_check()
            assert sender.sent == []  # no alert went out half-way
            with pytest.raises(BackendError):
                await desk.assign_chat_round_robin(waiting.id)
            await _assert_consistent(desk, ports)
            counters = await desk.get_counters()
            assert (counters.open, counters.unassigned) == (2, 1)
            assert (await desk.get_executive("e1")).open_chats == 1

            server.start()  # empty: the ring is gone
            assert await ports.rotation.members("retail") == []
            assigned = await desk.assign_chat_round_robin(waiting.id)
            assert assigned.assigned_executive_id in {"e1", "e2"}
            assert sorted(await ports.rotation.members("retail")) == ["e1", "e2"]
            third = await message("c3")
            assert {assigned.assigned_executive_id, third.assigned_executive_id} == {"e1", "e2"}
            alerts = await desk.run_sla_check()
            assert sorted(a.chat_id for a in alerts) == sorted([first.id, waiting.id])
            assert len(sender.to(ALERT)) == 2
            await _assert_consistent(desk, ports)
            counters = await desk.get_counters()
            assert (counters.open, counters.unassigned) == (3, 0)
            if recording is None:  # the listener is back: events flow again
                async with desk.subscribe(rooms={"dashboard"}) as events:
                    await message("c4")
                    assert (await _next(events)).name == "chat_message"
                    assert (await _next(events)).name == "chat_assigned"
                publisher = ports.publisher
                assert isinstance(publisher, RedisEventPublisher)
                assert publisher.queue_dropped == 0  # what was published meanwhile went out
    finally:
        await client.aclose()


async def test_going_offline_during_an_outage_releases_the_chats(
    redis_faults: RedisServer,
) -> None:
    server = redis_faults
    clock, sender = ManualClock(T0), RecordingSender()
    client = _real_client(server.url, socket_connect_timeout=2, socket_timeout=2)
    ports = _desk_ports(
        client, settings=Settings(), clock=clock, sender=sender, publisher=RecordingPublisher()
    )
    try:
        async with AsyncSmartChat(ports) as desk:
            for executive in ("e1", "e2"):
                await desk.register_executive(executive, name=executive, customer_types={"retail"})
                await desk.set_executive_status(executive, "online")
            chat = await desk.receive_customer_message(
                customer_id="c1", customer_name="", customer_type="retail", text="hi"
            )
            assert chat.assigned_executive_id == "e1"
            server.stop()
            with pytest.raises(BackendError):
                await desk.set_executive_status("e1", "offline")
            server.start()
            await desk.run_inactivity_check()  # the monitors run on
            e1 = await desk.get_executive("e1")
            current = await desk.get_chat(chat.id)
            assert e1.status.value != "offline" or current.assigned_executive_id != "e1"
    finally:
        await client.aclose()


async def test_a_desk_pool_waits_for_a_free_connection(redis_server: RedisServer) -> None:
    """A client built from a URL has a bounded pool: more concurrent commands
    than connections wait for one (never "Too many connections"); with every
    connection held past ``pool_timeout`` a command fails."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from smartchat_core.adapters.redis import RedisConnection

    async with AsyncExitStack() as stack:
        connection = RedisConnection(redis_server.url, max_connections=2, pool_timeout=GUARD)
        await connection.start(stack)
        client = connection.client
        key = f"pool-{uuid.uuid4().hex}"
        await asyncio.gather(*(client.incr(key) for _ in range(40)))
        assert int(await client.get(key)) == 40
        pool = client.connection_pool
        assert pool.max_connections == 2
        assert len(pool._in_use_connections) == 0  # all given back

    async with AsyncExitStack() as stack:
        connection = RedisConnection(
            redis_server.url, max_connections=1, pool_timeout=0.2, retry=None
        )
        await connection.start(stack)
        client = connection.client
        blocked = f"pool-{uuid.uuid4().hex}"
        holder = asyncio.ensure_future(client.blpop([blocked], 2))  # the only connection
        while not client.connection_pool._in_use_connections:  # noqa: ASYNC110 - state of the pool
            await asyncio.sleep(0)  # until BLPOP holds it
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.get(blocked)
        await client.rpush(blocked, "x") if holder.done() else None
        holder.cancel()


# ------------------------------------------------------------- the hot lane


async def _clients_named(admin: Redis, name: str) -> list[dict[str, Any]]:
    return [c for c in await admin.client_list() if c.get("name") == name]


async def _until_blocked(admin: Redis, name: str, count: int) -> None:
    """Wait until ``count`` connections named ``name`` block in BLPOP."""
    with anyio.fail_after(GUARD):
        while True:
            blocked = [c for c in await _clients_named(admin, name) if c.get("cmd") == "blpop"]
            if len(blocked) >= count:
                return
            await anyio.sleep(0.01)


async def test_the_lane_reconnects_after_its_connections_are_killed(
    redis_server: RedisServer,
) -> None:
    """A desk built from a URL sends the rotation's LMOVE on connections of
    its own (the lane); killed by the server, they reconnect under the retry
    policy given for the client (here one retry), and the ring stays exact."""
    name = f"lane-{uuid.uuid4().hex[:8]}"
    admin = _real_client(redis_server.url)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(admin.aclose)
        connection = RedisConnection(
            redis_server.url, client_name=name, retry=AsyncRetry(NoBackoff(), 1)
        )
        await connection.start(stack)
        rotation = RedisRotation(connection, prefix=unique_prefix("lane"))
        await rotation.replace("retail", ["a", "b", "c"])
        assert [await rotation.next("retail") for _ in range(4)] == ["a", "b", "c", "a"]
        assert any(c.get("cmd") == "lmove" for c in await _clients_named(admin, name))
        killed = await admin.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        assert [await rotation.next("retail") for _ in range(3)] == ["b", "c", "a"]
        assert await rotation.members("retail") == ["b", "c", "a"]

        # Without retries too: a lane connection the server closed while it
        # was idle is seen closed before the next command and reconnects
        # first (as the pool checks its own connections).
        bare = RedisConnection(redis_server.url, client_name=name, retry=AsyncRetry(NoBackoff(), 0))
        await bare.start(stack)
        ring = RedisRotation(bare, prefix=rotation.keys.prefix)
        assert await ring.next("retail") == "b"
        await admin.client_kill_filter(_type="normal", skipme=True)
        await _until_closed_seen(bare)
        assert [await ring.next("retail") for _ in range(2)] == ["c", "a"]


async def _until_closed_seen(connection: RedisConnection) -> None:
    """Wait until this process has seen the server close every lane
    connection (the end of the stream reached its reader)."""

    async def seen() -> bool:
        lane = connection._lane
        assert lane is not None
        for made in lane._made:
            if made.is_connected:
                try:
                    if not await made.can_read():
                        return False
                except RedisError:
                    pass  # closed
        return True

    with anyio.fail_after(GUARD):
        while not await seen():  # noqa: ASYNC110 - the server's state, no event to await
            await anyio.sleep(0.01)


async def test_a_cancelled_lane_command_leaves_no_reply_behind(redis_server: RedisServer) -> None:
    """A command cancelled while waiting for its reply: the connection is
    dropped (redis-py disconnects it), so the next command on the lane reads
    its own reply, never the late one; the cancelled BLPOP took nothing."""
    name = f"lane-{uuid.uuid4().hex[:8]}"
    admin = _real_client(redis_server.url)
    key = f"lane-{uuid.uuid4().hex}"
    async with AsyncExitStack() as stack:
        stack.push_async_callback(admin.aclose)
        connection = RedisConnection(redis_server.url, client_name=name)
        await connection.start(stack)
        async with anyio.create_task_group() as group:

            async def blocked() -> None:
                await connection.command("BLPOP", key, 0)
                raise AssertionError("the BLPOP was not cancelled")

            group.start_soon(blocked)
            await _until_blocked(admin, name, 1)
            group.cancel_scope.cancel()
        await admin.rpush(key, "kept")
        assert await connection.command("ECHO", "mine") == b"mine"
        assert await connection.command("LRANGE", key, 0, -1) == [b"kept"]


async def test_the_lane_is_bounded_and_the_rest_use_the_pool(redis_server: RedisServer) -> None:
    """More concurrent commands than lane connections: the extra ones go
    through the client's pool; every command gets its own reply, and the
    lane's connections are closed with the desk."""
    from smartchat_core.adapters import redis as redis_adapter

    name = f"lane-{uuid.uuid4().hex[:8]}"
    admin = _real_client(redis_server.url)
    keys = [f"lane-{uuid.uuid4().hex}" for _ in range(redis_adapter._LANE_SIZE + 3)]
    async with AsyncExitStack() as outer:
        outer.push_async_callback(admin.aclose)
        async with AsyncExitStack() as stack:
            connection = RedisConnection(redis_server.url, client_name=name)
            await connection.start(stack)
            replies: dict[str, Any] = {}
            async with anyio.create_task_group() as group:
                for key in keys:

                    async def pop(key: str = key) -> None:
                        replies[key] = await connection.command("BLPOP", key, 0)

                    group.start_soon(pop)
                await _until_blocked(admin, name, len(keys))
                for key in keys:
                    await admin.rpush(key, key.encode())
            # (raw replies, lane or pool: no response callback on either)
            assert replies == {key: [key.encode(), key.encode()] for key in keys}
            lane = connection._lane
            assert lane is not None and len(lane._made) == redis_adapter._LANE_SIZE
        assert await _clients_named(admin, name) == []  # the lane and the pool closed


async def test_a_lane_command_times_out_as_the_client_does(redis_server: RedisServer) -> None:
    """The pool's ``socket_timeout`` bounds a lane round trip: a command
    Redis holds (``CLIENT PAUSE ... WRITE``) fails with redis-py's
    TimeoutError (a BackendError through the ports), and the lane works
    again once Redis answers; the held commands left with their dropped
    connections and never ran."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    admin = _real_client(redis_server.url)
    key = f"lane-{uuid.uuid4().hex}"
    async with AsyncExitStack() as stack:
        stack.push_async_callback(admin.aclose)
        connection = RedisConnection(
            redis_server.url, socket_timeout=0.2, retry=AsyncRetry(NoBackoff(), 0)
        )
        await connection.start(stack)
        rotation = RedisRotation(connection, prefix=unique_prefix("lane"))
        await rotation.replace("retail", ["a", "b"])
        assert await rotation.next("retail") == "a"
        await admin.execute_command("CLIENT", "PAUSE", GUARD * 1000, "WRITE")
        try:
            with anyio.fail_after(GUARD), pytest.raises(RedisTimeoutError):
                await connection.command("RPUSH", key, "x", repeated=True)
            with anyio.fail_after(GUARD), pytest.raises(BackendError, match="rotation next"):
                await rotation.next("retail")
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
        assert await rotation.next("retail") == "b"
        # the timed-out connections were dropped, so the held commands died with them
        assert await connection.command("LRANGE", key, 0, -1) == []
        assert await rotation.members("retail") == ["a", "b"]


class _CountingBackoff(NoBackoff):
    """No pause between attempts; counts the failed ones (on the class:
    redis-py deep-copies the retry policy into each connection)."""

    failures = 0

    def compute(self, failures: int) -> float:
        _CountingBackoff.failures = max(_CountingBackoff.failures, failures)
        return 0


async def test_a_lane_command_is_retried_as_the_client_would(redis_server: RedisServer) -> None:
    """The timeout bounds each attempt, not the retries: with a retry policy
    that retries timeouts, a command Redis holds for a while is tried again
    until Redis answers, and runs once."""
    _CountingBackoff.failures = 0
    backoff = _CountingBackoff()
    admin = _real_client(redis_server.url)
    key = f"lane-{uuid.uuid4().hex}"
    async with AsyncExitStack() as stack:
        stack.push_async_callback(admin.aclose)
        connection = RedisConnection(
            redis_server.url, socket_timeout=0.2, retry=AsyncRetry(backoff, 10_000)
        )
        await connection.start(stack)
        await connection.command("RPUSH", key, "a", "b")
        await admin.execute_command("CLIENT", "PAUSE", GUARD * 1000, "WRITE")
        async with anyio.create_task_group() as group:
            replies: list[Any] = []

            async def pick() -> None:
                replies.append(await connection.command("LMOVE", key, key, "LEFT", "RIGHT"))

            group.start_soon(pick)
            try:
                await _until(lambda: _CountingBackoff.failures >= 2)  # attempts timed out
            finally:
                await admin.execute_command("CLIENT", "UNPAUSE")
        assert replies == [b"a"]
        assert await connection.command("LRANGE", key, 0, -1) == [b"b", b"a"]  # moved once


async def test_lane_sockets_are_closed_even_when_the_exit_is_cancelled(
    redis_server: RedisServer,
) -> None:
    name = f"lane-{uuid.uuid4().hex[:8]}"
    admin = _real_client(redis_server.url)
    try:
        with anyio.CancelScope() as scope:
            async with AsyncExitStack() as stack:
                connection = RedisConnection(redis_server.url, client_name=name)
                await connection.start(stack)
                async with anyio.create_task_group() as group:
                    for _ in range(3):
                        group.start_soon(connection.command, "ECHO", "x")
                lane = connection._lane
                assert lane is not None and len(lane._made) >= 2
                scope.cancel()
        clients: list[dict[str, Any]] = []

        async def gone() -> bool:
            clients[:] = await _clients_named(admin, name)
            return not clients

        with anyio.fail_after(GUARD):
            while not await gone():  # noqa: ASYNC110 - the server's state, no event to await
                await anyio.sleep(0.01)
    finally:
        await admin.aclose()


async def test_a_ready_made_client_is_used_as_it_is(redis_server: RedisServer) -> None:
    """No lane for a client the caller built: its pool is the only one."""
    client = _real_client(redis_server.url)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(client.aclose)
        connection = RedisConnection(client)
        await connection.start(stack)
        assert await connection.command("ECHO", "x") == b"x"
        assert connection._lane is None


# ------------------------------------------------------- publisher batching


async def test_flush_does_not_wait_for_the_batch_delay(clients: Clients) -> None:
    """A flush cuts the sender's gathering short (batch_delay is a minute
    here, far beyond the guard)."""
    publisher = RedisEventPublisher(clients.new(), prefix=unique_prefix("hurry"), batch_delay=60)
    async with AsyncExitStack() as stack:
        await publisher.start(stack)
        for n in range(3):
            await publisher.publish(_event("e", "dashboard", n=n))
        await anyio.lowlevel.checkpoint()  # the sender starts gathering
        await _flush(publisher)
        assert (publisher.sent, publisher.batches) == (3, 1)


async def test_a_full_queue_goes_out_without_waiting(clients: Clients) -> None:
    """A queue smaller than a batch, full: the gathering ends at once
    instead of dropping events while Redis is healthy."""
    options = {"queue_size": 5, "batch_delay": 60}
    async with _publisher_and_dashboard(clients, "small", **options) as (publisher, events):
        for _ in range(3):
            for n in range(5):
                await publisher.publish(_event("e", "dashboard", n=n))
                await anyio.lowlevel.checkpoint()  # the sender may run
            assert [(await _next(events)).payload["n"] for _ in range(5)] == list(range(5))
        assert (publisher.sent, publisher.queue_dropped) == (15, 0)


async def test_a_full_batch_goes_out_without_waiting(clients: Clients) -> None:
    """``batch_size`` events queued end the gathering at once."""
    options = {"batch_size": 5, "batch_delay": 60}
    async with _publisher_and_dashboard(clients, "full", **options) as (publisher, events):
        for n in range(5):
            await publisher.publish(_event("e", "dashboard", n=n))
            await anyio.lowlevel.checkpoint()
        assert [(await _next(events)).payload["n"] for _ in range(5)] == list(range(5))
        assert publisher.batches == 1
