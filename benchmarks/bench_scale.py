"""Benchmarks against real servers, and the scale targets.

Starts its own ``redis-server`` and SecantusDB (MongoDB wire protocol) on
free loopback ports (``benchmarks/_servers.py``), runs, stops them, and
prints markdown tables (and writes them to ``--output``):

1. **Assignments**: ``assign_chat_round_robin`` on waiting chats, and
   ``receive_customer_message`` (create + assign), on three stacks:
   in-memory; Redis rotation/dedup/locks/publisher with in-memory chats;
   Redis + chats on the wire server.  Round trips per assignment are
   counted on the server for Redis (``INFO commandstats`` deltas) and with
   a pymongo ``CommandListener`` for MongoDB.  The same minimal sequence
   done with raw driver calls (rotation pick + the chat update with its
   precondition) runs in the same process, and library/raw is the
   throughput ratio.
2. **Monitor tick** against the number of stored chats with the due chats
   fixed: in-memory at 10^4 / 10^5 / 10^6 (``bench_core``), on the wire
   server as large as it builds in reasonable time.
3. **Listing**: ``fetch_all_chats`` per filter at 10^5 and 10^6 chats
   (in-memory), and the "My chats / Unassigned / All" counts from the
   counters (no scan) with their time, checked against the listing totals.
4. **Burst**: new chats over 4 OS processes (multiprocessing, spawn)
   sharing the redis-server, 50 executives in 3 customer types: shared
   chat store on the wire server (10,000 chats),
   and the full 10,000 with per-process in-memory chat stores (the only
   other store there is; rotation, dedup, leases and events are still
   shared through Redis).
5. **Targets**: PASS/FAIL lines.  The exit status is 0 unless ``--strict``
   and a target failed.

Usage::

    python benchmarks/bench_scale.py --output benchmarks/results/latest.md
    python benchmarks/bench_scale.py --quick      # a smoke run (minutes)

This is a script, not a test: timings are never asserted in the test suite.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _burst
import bench_core
from _servers import RedisProcess, SecantusProcess, ServerError, redis_server, secantus

import smartchat_core
from smartchat_core import AsyncSmartChat, Chat, Settings
from smartchat_core.abc import MessageSender
from smartchat_core.adapters.memory import (
    MemoryChatStore,
    MemoryEventPublisher,
    SystemClock,
)
from smartchat_core.testing import ManualClock

CUSTOMER_TYPES = bench_core.CUSTOMER_TYPES
EXECUTIVES = bench_core.EXECUTIVES
RATIO_TARGET = 0.7
MONGO_TARGET = 2.0
TICK_TARGET = 2.0


class NullSender(MessageSender):
    async def send_text(self, to: str, text: str) -> None:
        return None


# ---------------------------------------------------------------- counting


class MongoCounter:
    """Counts the commands pymongo sends (a ``CommandListener`` registered
    for every client of this process), by command and collection."""

    IGNORED = frozenset({"hello", "ismaster", "isMaster", "ping", "endSessions", "buildInfo"})

    def __init__(self) -> None:
        from pymongo import monitoring

        outer = self
        self.counts: Counter[str] = Counter()

        class Listener(monitoring.CommandListener):
            def started(self, event: Any) -> None:
                name = event.command_name
                if name not in outer.IGNORED:
                    target = event.command.get(name)
                    where = f" {target}" if isinstance(target, str) else ""
                    outer.counts[f"{name}{where}"] += 1

            def succeeded(self, event: Any) -> None:
                return None

            def failed(self, event: Any) -> None:
                return None

        monitoring.register(Listener())

    def snapshot(self) -> Counter[str]:
        return Counter(self.counts)


class RedisCounter:
    """Counts the commands the redis-server executed (``INFO commandstats``),
    minus the ``INFO`` calls of this counter."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)

    def snapshot(self) -> Counter[str]:
        info = self.client.info("commandstats")
        counts = Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()})
        return counts

    @staticmethod
    def delta(after: Counter[str], before: Counter[str]) -> Counter[str]:
        diff = Counter({k: after[k] - before.get(k, 0) for k in after})
        diff.pop("info", None)
        return +diff


def per(counts: Counter[str], n: int) -> str:
    if not counts:
        return "0"
    total = sum(counts.values()) / n
    parts = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(counts.items()))
    return f"**{total:.2f}** ({parts})"


# ---------------------------------------------------------------- stacks


@attrs.frozen
class Servers:
    redis: RedisProcess | None
    mongo: SecantusProcess | None
    redis_counter: RedisCounter | None
    mongo_counter: MongoCounter | None


def fresh_settings(**changes: Any) -> Settings:
    return Settings(redis_prefix=f"bench-{uuid.uuid4().hex[:10]}", resolution_message=None,
                    **changes)  # fmt: skip


def build_desk(
    stack: str,
    servers: Servers,
    *,
    clock: Any = None,
    settings: Settings | None = None,
    mongodb_async: bool = False,
    local_events: bool = False,
) -> tuple[AsyncSmartChat, str]:
    """A desk on ``stack`` ("memory", "redis", "redis+mongo"); and its database name."""
    settings = settings or fresh_settings()
    clock = clock or SystemClock()
    database = f"bench_{uuid.uuid4().hex[:10]}"
    if stack == "memory":
        return AsyncSmartChat.in_memory(settings=settings, clock=clock, sender=NullSender()), ""
    assert servers.redis is not None
    mongodb_url = None
    if stack == "redis+mongo":
        assert servers.mongo is not None
        mongodb_url = servers.mongo.url
    desk = AsyncSmartChat.from_urls(
        mongodb_url=mongodb_url,
        redis_url=servers.redis.url,
        database=database,
        settings=settings,
        clock=clock,
        sender=NullSender(),
        mongodb_async=mongodb_async,
        publisher=MemoryEventPublisher() if local_events else None,
    )
    return desk, database


async def register_team(desk: AsyncSmartChat) -> None:
    for index in range(EXECUTIVES):
        executive_id = f"e{index:02d}"
        await desk.register_executive(
            executive_id,
            name=f"Executive {index}",
            customer_types=bench_core.executive_types(index),
        )
        await desk.set_executive_status(executive_id, "online")


def waiting_chats(count: int, now: datetime) -> list[Chat]:
    """Open unassigned chats in the waiting queues, oldest first."""
    return list(bench_core.waiting_chats(count, now))


async def load_chats(desk: AsyncSmartChat, chats: Sequence[Chat], servers: Servers) -> None:
    """Bulk-load ready chats into the desk's chat store (memory: ``load``;
    MongoDB: ``insert_many`` of the adapter's own documents, then ``recount``)."""
    store = desk.ports.chats
    if isinstance(store, MemoryChatStore):
        store.load(chats)
        return
    from smartchat_core.adapters import mongodb

    docs = [
        {"_id": chat.id, **mongodb._chat_doc(chat, desk.settings.awaiting_tag), "_v": 1}
        for chat in chats
    ]
    collection = await _raw_collection(desk, servers)
    for start in range(0, len(docs), 5000):
        collection.insert_many(docs[start : start + 5000], ordered=False)
    await store.recount()


async def _raw_collection(desk: AsyncSmartChat, servers: Servers) -> Any:
    import pymongo

    assert servers.mongo is not None
    store: Any = desk.ports.chats
    database = store.connection.database
    client: Any = pymongo.MongoClient(servers.mongo.url, tz_aware=True)
    return client[database][desk.settings.chats_collection]


# ------------------------------------------------------------ assignments


@attrs.frozen
class AssignRow:
    stack: str
    path: str
    count: int
    seconds: float
    redis: Counter[str]
    mongo: Counter[str]

    @property
    def rate(self) -> float:
        return self.count / self.seconds


async def _counted(
    servers: Servers, count: int, body: Callable[[], Awaitable[None]]
) -> tuple[float, Counter[str], Counter[str]]:
    r0 = servers.redis_counter.snapshot() if servers.redis_counter else Counter()
    m0 = servers.mongo_counter.snapshot() if servers.mongo_counter else Counter()
    gc.collect()
    started = time.perf_counter()
    await body()
    seconds = time.perf_counter() - started
    r1 = servers.redis_counter.snapshot() if servers.redis_counter else Counter()
    m1 = servers.mongo_counter.snapshot() if servers.mongo_counter else Counter()
    return seconds, RedisCounter.delta(r1, r0), +(m1 - m0)


async def library_assign(
    stack: str,
    servers: Servers,
    count: int,
    *,
    mongodb_async: bool = False,
    local_events: bool = False,
) -> AssignRow:
    desk, _ = build_desk(stack, servers, mongodb_async=mongodb_async, local_events=local_events)
    async with desk:
        await register_team(desk)
        chats = waiting_chats(count, desk.clock.now())
        await load_chats(desk, chats, servers)

        async def body() -> None:
            for chat in chats:
                await desk.assign_chat_round_robin(chat.id)

        seconds, redis_counts, mongo_counts = await _counted(servers, count, body)
        counters = await desk.get_counters()
        if counters.unassigned:
            raise AssertionError(f"{stack}: {counters.unassigned} chats left unassigned")
    label = stack + (" (AsyncMongoClient)" if mongodb_async else "")
    path = "library: assign_chat_round_robin"
    if local_events and stack != "memory":
        path += ", events in-process (no PUBLISH)"
    return AssignRow(label, path, count, seconds,
                     redis_counts, mongo_counts)  # fmt: skip


async def library_drain(
    stack: str, servers: Servers, count: int, *, mongodb_async: bool = False
) -> AssignRow:
    """``assign_waiting_chats``: the desk drains the queues itself, on the
    chats as its queue query returned them (no read of each chat)."""
    desk, _ = build_desk(stack, servers, mongodb_async=mongodb_async)
    async with desk:
        await register_team(desk)
        chats = waiting_chats(count, desk.clock.now())
        await load_chats(desk, chats, servers)

        async def body() -> None:
            assigned = await desk.assign_waiting_chats()
            if len(assigned) != count:
                raise AssertionError(f"{stack} drain: {len(assigned)} of {count} assigned")

        seconds, redis_counts, mongo_counts = await _counted(servers, count, body)
        counters = await desk.get_counters()
        if counters.unassigned:
            raise AssertionError(f"{stack}: {counters.unassigned} chats left unassigned")
    label = stack + (" (AsyncMongoClient)" if mongodb_async else "")
    return AssignRow(label, "library: assign_waiting_chats (queue drain)", count, seconds,
                     redis_counts, mongo_counts)  # fmt: skip


async def library_intake(
    stack: str, servers: Servers, count: int, *, mongodb_async: bool = False
) -> AssignRow:
    desk, _ = build_desk(stack, servers, mongodb_async=mongodb_async)
    async with desk:
        await register_team(desk)
        prefix = uuid.uuid4().hex[:6]

        async def body() -> None:
            for i in range(count):
                await desk.receive_customer_message(
                    customer_id=f"+93{prefix}{i:08d}",
                    customer_name="Customer",
                    customer_type=CUSTOMER_TYPES[i % len(CUSTOMER_TYPES)],
                    text="hello, I need help with my order",
                )

        seconds, redis_counts, mongo_counts = await _counted(servers, count, body)
        counters = await desk.get_counters()
        if counters.unassigned or counters.open != count:
            raise AssertionError(f"{stack} intake: {counters}")
    label = stack + (" (AsyncMongoClient)" if mongodb_async else "")
    return AssignRow(label, "library: receive_customer_message (create + assign)", count,
                     seconds, redis_counts, mongo_counts)  # fmt: skip


def _rings() -> dict[str, list[str]]:
    return bench_core.serving()


async def raw_assign(
    stack: str, servers: Servers, count: int, *, publish: bool = False
) -> AssignRow:
    """The minimal sequence by hand: pick the next executive of the chat's
    type (memory: a deque; Redis: one LMOVE), then set the assignee if the
    chat is still open and unassigned (memory: a dict; MongoDB: one
    ``update_one`` with the precondition in its filter, AsyncMongoClient)."""
    now = datetime.now(timezone.utc)
    chats = waiting_chats(count, now)
    docs: dict[str, dict[str, Any]] = {
        c.id: {"customer_type": c.customer_type, "assigned_executive_id": None,
               "is_resolved": False, "assigned_at": None}
        for c in chats
    }  # fmt: skip
    if stack == "memory":
        rings = {t: deque(members) for t, members in _rings().items()}

        async def body() -> None:
            for chat in chats:
                doc = docs[chat.id]
                ring = rings[doc["customer_type"]]
                pick = ring[0]
                ring.rotate(-1)
                if doc["assigned_executive_id"] is None and not doc["is_resolved"]:
                    doc["assigned_executive_id"] = pick
                    doc["assigned_at"] = datetime.now(timezone.utc)

        seconds, r, m = await _counted(servers, count, body)
        return AssignRow(stack, "raw: deque pick + dict update", count, seconds, r, m)

    from redis.asyncio import Redis

    assert servers.redis is not None
    client = Redis.from_url(servers.redis.url)
    prefix = f"raw-{uuid.uuid4().hex[:8]}"
    for customer_type, members in _rings().items():
        await client.rpush(f"{{{prefix}}}:rr:{customer_type}", *members)
    try:
        if stack == "redis":

            async def body() -> None:
                for chat in chats:
                    doc = docs[chat.id]
                    key = f"{{{prefix}}}:rr:{doc['customer_type']}"
                    pick = (await client.lmove(key, key, "LEFT", "RIGHT")).decode()
                    if doc["assigned_executive_id"] is None and not doc["is_resolved"]:
                        doc["assigned_executive_id"] = pick
                        doc["assigned_at"] = datetime.now(timezone.utc)
                        if publish:
                            event = {"event": "chat_assigned", "chat_id": chat.id,
                                     "executive_id": pick}  # fmt: skip
                            await client.publish(f"{prefix}:events", json.dumps(event))

            seconds, r, m = await _counted(servers, count, body)
            path = "raw: LMOVE + PUBLISH + dict update" if publish else "raw: LMOVE + dict update"
            return AssignRow(stack, path, count, seconds, r, m)

        from pymongo import AsyncMongoClient

        assert servers.mongo is not None
        mongo: Any = AsyncMongoClient(servers.mongo.url, tz_aware=True)
        collection = mongo[f"raw_{uuid.uuid4().hex[:8]}"]["chats"]
        await collection.insert_many([{"_id": k, **v} for k, v in docs.items()])
        try:

            async def body() -> None:
                for chat in chats:
                    key = f"{{{prefix}}}:rr:{chat.customer_type}"
                    pick = (await client.lmove(key, key, "LEFT", "RIGHT")).decode()
                    await collection.update_one(
                        {"_id": chat.id, "assigned_executive_id": None, "is_resolved": False},
                        {"$set": {"assigned_executive_id": pick,
                                  "assigned_at": datetime.now(timezone.utc)}},
                    )  # fmt: skip

            seconds, r, m = await _counted(servers, count, body)
        finally:
            await mongo.drop_database(collection.database.name)
            await mongo.close()
        return AssignRow(stack, "raw: LMOVE + update_one with precondition", count, seconds, r, m)
    finally:
        await client.aclose()


def _median_row(rows: Sequence[AssignRow]) -> AssignRow:
    ordered = sorted(rows, key=lambda r: r.seconds)
    return ordered[len(ordered) // 2]


def assign_table(rows: Sequence[AssignRow], ratios: dict[str, float]) -> list[str]:
    lines = [
        "| stack | path | assignments | assignments/s | Redis commands / assignment "
        "| MongoDB commands / assignment | library/raw |",
        "|---|---|---:|---:|---|---|---:|",
    ]
    for r in rows:
        ratio = ratios.get(f"{r.stack}|{r.path}")
        lines.append(
            f"| {r.stack} | {r.path} | {r.count:,} | **{r.rate:,.0f}** | {per(r.redis, r.count)} "
            f"| {per(r.mongo, r.count)} | {'' if ratio is None else f'**{ratio:.2f}**'} |"
        )
    return lines


# ------------------------------------------------------------------ ticks


@attrs.frozen
class WireTick:
    size: int
    due: int
    build_seconds: float
    sla: float
    awaiting: float
    inactivity: float
    runs: int
    mongo_per_tick: float

    @property
    def total(self) -> float:
        return self.sla + self.awaiting + self.inactivity


async def wire_ticks(
    servers: Servers, sizes: Sequence[int], due: int, repeats: int
) -> list[WireTick]:
    import redis

    assert servers.redis is not None
    rows = []
    raw_redis = redis.Redis.from_url(servers.redis.url)
    for size in sizes:
        print(f"... wire server: building {size:,} chats", file=sys.stderr, flush=True)
        clock = ManualClock(bench_core.NOW)
        settings = attrs.evolve(bench_core.SETTINGS, redis_prefix=f"bt-{uuid.uuid4().hex[:8]}",
                                resolution_message=None)  # fmt: skip
        desk, _ = build_desk("redis+mongo", servers, clock=clock, settings=settings)
        async with desk:
            for index in range(EXECUTIVES):
                await desk.register_executive(
                    f"e{index:02d}", name=f"Executive {index}",
                    customer_types=bench_core.executive_types(index),
                )  # fmt: skip
                await desk.set_executive_status(f"e{index:02d}", "online")
            started = time.perf_counter()
            chats = list(bench_core.generate_chats(size, due, random.Random(size)))
            await load_chats(desk, chats, servers)
            del chats
            build = time.perf_counter() - started
            samples = []
            mongo_calls = []
            for run in range(repeats + 1):
                m0 = servers.mongo_counter.snapshot() if servers.mongo_counter else Counter()
                t0 = time.perf_counter()
                alerts = await desk.run_sla_check()
                t1 = time.perf_counter()
                tagged = await desk.run_awaiting_check()
                t2 = time.perf_counter()
                offline = await desk.run_inactivity_check()
                t3 = time.perf_counter()
                m1 = servers.mongo_counter.snapshot() if servers.mongo_counter else Counter()
                if len(alerts) != due or len(tagged) != due or offline:
                    raise AssertionError(
                        f"wire {size}: {len(alerts)} alerts, {len(tagged)} tagged, "
                        f"{len(offline)} offline (expected {due}, {due}, 0)"
                    )
                # Undo: the same chats are due next run.
                for alert in alerts:
                    raw_redis.delete(f"sla::alerted::{alert.chat_id}::{alert.tier}")
                for chat in tagged:
                    await desk.ports.chats.remove_tag(chat.id, settings.awaiting_tag)
                if run:
                    samples.append((t1 - t0, t2 - t1, t3 - t2))
                    mongo_calls.append(sum((m1 - m0).values()))
            store: Any = desk.ports.chats
            database = store.connection.database
        import pymongo

        assert servers.mongo is not None
        with pymongo.MongoClient(servers.mongo.url) as client:
            client.drop_database(database)
        rows.append(
            WireTick(
                size=size,
                due=due,
                build_seconds=build,
                sla=statistics.median(s[0] for s in samples),
                awaiting=statistics.median(s[1] for s in samples),
                inactivity=statistics.median(s[2] for s in samples),
                runs=len(samples),
                mongo_per_tick=statistics.median(mongo_calls),
            )
        )
    raw_redis.close()
    return rows


def wire_tick_table(rows: Sequence[WireTick]) -> list[str]:
    lines = [
        "| stored chats | due (SLA / awaiting) | run_sla_check | run_awaiting_check "
        "| run_inactivity_check | tick total | MongoDB commands / tick | store build |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size:,} | {r.due} / {r.due} | {r.sla * 1e3:.1f} ms | {r.awaiting * 1e3:.1f} ms "
            f"| {r.inactivity * 1e3:.1f} ms | **{r.total * 1e3:.1f} ms** | {r.mongo_per_tick:.0f} "
            f"| {r.build_seconds:.1f} s |"
        )
    return lines


# ---------------------------------------------------------------- listing

FILTERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("no filter", {}),
    ("status=open", {"status": "open"}),
    ("customer_type=retail", {"customer_type": "retail"}),
    ("tag=awaiting", {"tag": "awaiting"}),
    ("sender=Customer", {"sender": "Customer"}),
    ("assigned_executive_id=e01", {"assigned_executive_id": "e01"}),
    ("assigned_executive_id=unassigned", {"assigned_executive_id": "unassigned"}),
    ("search='Customer 4242'", {"search": "Customer 4242"}),
    ("combined: open + retail + Customer + e00", {"status": "open", "customer_type": "retail",
                                                  "sender": "Customer",
                                                  "assigned_executive_id": "e00"}),
    ("combined: open + retail + search '+91'", {"status": "open", "customer_type": "retail",
                                                "search": "+91"}),
)  # fmt: skip


@attrs.frozen
class ListingRow:
    size: int
    name: str
    total: int
    seconds: float


@attrs.frozen
class CounterRow:
    size: int
    what: str
    value: int
    seconds: float
    listing_total: int


async def _median_time(call: Callable[[], Awaitable[Any]], repeats: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = await call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


async def listing(sizes: Sequence[int], repeats: int) -> tuple[list[ListingRow], list[CounterRow]]:
    rows: list[ListingRow] = []
    counter_rows: list[CounterRow] = []
    for size in sizes:
        print(f"... listing: building {size:,} chats", file=sys.stderr, flush=True)
        clock = ManualClock(bench_core.NOW)
        desk = await bench_core.new_desk(clock)
        gc.disable()
        try:
            chats = list(bench_core.generate_chats(size - size // 100, bench_core.DUE,
                                                   random.Random(size)))  # fmt: skip
            chats += waiting_chats(size // 100, bench_core.NOW - timedelta(minutes=1))
            chats.sort(key=lambda chat: (chat.last_activity_at, chat.id), reverse=True)
            bench_core.chat_store(desk).load(chats)
            del chats
        finally:
            gc.enable()
        gc.collect()
        gc.freeze()
        try:
            for name, filters in FILTERS:
                seconds, page = await _median_time(
                    lambda f=filters, d=desk: d.fetch_all_chats(limit=20, **f), repeats
                )
                rows.append(ListingRow(size, name, page.total, seconds))
            # The dashboard's numbers from the counters, and the listing totals they equal.
            seconds, counters = await _median_time(desk.get_counters, repeats)
            mine_seconds, mine = await _median_time(lambda d=desk: d.get_executive("e01"), repeats)
            team_seconds, team = await _median_time(desk.list_executives, repeats)
            checks = (
                ("All (open chats): get_counters().open", counters.open, seconds,
                 {"status": "open"}),
                ("Unassigned: get_counters().unassigned", counters.unassigned, seconds,
                 {"status": "open", "assigned_executive_id": "unassigned"}),
                ("My chats (e01): get_executive('e01').open_chats", mine.open_chats,
                 mine_seconds, {"status": "open", "assigned_executive_id": "e01"}),
                (f"every executive's open chats: list_executives() ({len(team)})",
                 sum(e.open_chats for e in team), team_seconds,
                 {"status": "open", "assigned_executive_id": None}),
            )  # fmt: skip
            for what, value, took, filters in checks:
                wanted = {k: v for k, v in filters.items() if v is not None}
                page = await desk.fetch_all_chats(limit=1, **wanted)
                listing_total = page.total
                if filters.get("assigned_executive_id", "") is None:
                    listing_total = page.total - counters.unassigned
                counter_rows.append(CounterRow(size, what, value, took, listing_total))
        finally:
            gc.unfreeze()
        del desk
        gc.collect()
    return rows, counter_rows


def listing_table(rows: Sequence[ListingRow], sizes: Sequence[int]) -> list[str]:
    header = "| filter | " + " | ".join(f"{bench_core.power_of_ten(s)} chats: time (total)"
                                          for s in sizes) + " |"  # fmt: skip
    lines = [header, "|---|" + "---:|" * len(sizes)]
    for name, _ in FILTERS:
        cells = []
        for size in sizes:
            row = next(r for r in rows if r.size == size and r.name == name)
            cells.append(f"{_ms(row.seconds)} ({row.total:,})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def counter_table(rows: Sequence[CounterRow]) -> list[str]:
    lines = [
        "| chats | number | value | time | equals the listing total |",
        "|---:|---|---:|---:|---|",
    ]
    for r in rows:
        ok = "yes" if r.value == r.listing_total else f"**NO** (listing: {r.listing_total:,})"
        lines.append(
            f"| {bench_core.power_of_ten(r.size)} | {r.what} | {r.value:,} | {_ms(r.seconds)} "
            f"| {ok} |"
        )
    return lines


def _ms(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


# ------------------------------------------------------------------ burst


@attrs.frozen
class BurstRow:
    store: str
    processes: int
    concurrency: int
    chats: int
    seconds: float
    errors: int
    spread: dict[str, int]
    double: int
    assigned_events: int
    reassigned_events: int
    lost: int
    ticks: dict[str, int]
    slots: dict[str, int]
    crash: str | None = None

    @property
    def rate(self) -> float:
        return self.chats / self.seconds if self.seconds else 0.0


async def _listen_events(url: str, channel: str, seen: Counter[str], names: Counter[str],
                         ready: anyio.Event) -> None:  # fmt: skip
    import json

    from redis.asyncio import Redis

    client = Redis.from_url(url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(channel)
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            if message["type"] == "subscribe":
                ready.set()
                continue
            if message["type"] != "message":
                continue
            document = json.loads(message["data"])
            name = document.get("event")
            if name is None:
                continue
            names[name] += 1
            if name == "chat_assigned":
                seen[document["payload"]["chat_id"]] += 1
    finally:
        with anyio.CancelScope(shield=True):
            await pubsub.aclose()
            await client.aclose()


async def burst(
    servers: Servers,
    *,
    chats: int,
    processes: int,
    concurrency: int,
    shared_store: bool,
    monitor_interval: float,
) -> BurstRow:
    assert servers.redis is not None
    prefix = f"burst-{uuid.uuid4().hex[:8]}"
    database = f"burst_{uuid.uuid4().hex[:8]}"
    mongodb_url = servers.mongo.url if (shared_store and servers.mongo) else None
    label = "shared: SecantusDB wire server" if shared_store else "per-process in-memory"
    # The team goes online once, from here: the rings' order is fixed before the burst.
    setup = _burst.make_desk(servers.redis.url, mongodb_url, database, prefix, monitor_interval)
    async with setup:
        await _burst.register_team(setup)
    context = multiprocessing.get_context("spawn")
    ready_events = [context.Event() for _ in range(processes)]
    go = context.Event()
    results = context.Queue()
    shares = [list(range(i, chats, processes)) for i in range(processes)]
    workers = [
        context.Process(
            target=_burst.worker,
            args=(
                i,
                shares[i],
                servers.redis.url,
                mongodb_url,
                database,
                prefix,
                concurrency,
                monitor_interval,
                ready_events[i],
                go,
                results,
            ),
            daemon=True,
        )
        for i in range(processes)
    ]
    seen: Counter[str] = Counter()
    names: Counter[str] = Counter()
    outcomes: list[dict[str, Any]] = []
    async with anyio.create_task_group() as group:
        listening = anyio.Event()
        group.start_soon(_listen_events, servers.redis.url, f"{prefix}:events", seen, names,
                         listening)  # fmt: skip
        with anyio.fail_after(30):
            await listening.wait()
        for process in workers:
            process.start()
        deadline = time.monotonic() + 120
        for event in ready_events:
            await anyio.to_thread.run_sync(event.wait, max(0.0, deadline - time.monotonic()))
        started = time.perf_counter()
        go.set()
        for _ in workers:
            outcomes.append(await anyio.to_thread.run_sync(results.get, True, 1800))
        seconds = time.perf_counter() - started
        for process in workers:
            await anyio.to_thread.run_sync(process.join, 60)
        # Let the listener drain what is still in flight (bounded).
        total_expected = chats
        settle = time.monotonic() + 20
        last = -1
        while time.monotonic() < settle:
            current = sum(seen.values())
            if current >= total_expected and current == last:
                break
            last = current
            await anyio.sleep(0.5)
        group.cancel_scope.cancel()
    crash = next((o["crash"] for o in outcomes if "crash" in o), None)
    errors = sum(int(o.get("error_count", 0)) for o in outcomes)
    per_executive: Counter[tuple[str, str]] = Counter()
    lost = 0
    if mongodb_url is not None:
        import pymongo

        with pymongo.MongoClient(mongodb_url) as client:
            docs = {
                d["customer_id"]: d
                for d in client[database][Settings().chats_collection].find(
                    {}, {"customer_id": 1, "customer_type": 1, "assigned_executive_id": 1,
                         "is_resolved": 1},
                )
            }  # fmt: skip
            client.drop_database(database)
        for number in range(chats):
            doc = docs.get(_burst.customer(number)[0])
            if doc is None or doc.get("is_resolved") or doc.get("assigned_executive_id") is None:
                lost += 1
            else:
                per_executive[(doc["customer_type"], doc["assigned_executive_id"])] += 1
    else:
        for outcome in outcomes:
            lost += int(outcome.get("lost", 0))
            for customer_type, executive_id, n in outcome.get("counts", ()):
                per_executive[(customer_type, executive_id)] += int(n)
    spread = {}
    for customer_type in _burst.CUSTOMER_TYPES:
        team = [e for e, t in _burst.executive_ids() if t == customer_type]
        numbers = [per_executive.get((customer_type, e), 0) for e in team]
        spread[customer_type] = max(numbers) - min(numbers)
    ticks: Counter[str] = Counter()
    for outcome in outcomes:
        ticks.update(outcome.get("ticks", {}))
    slots = {name: int(seconds // monitor_interval) for name in ("sla", "awaiting", "inactivity")}
    return BurstRow(
        store=label, processes=processes, concurrency=concurrency, chats=chats,
        seconds=seconds, errors=errors, spread=spread,
        double=sum(1 for n in seen.values() if n > 1),
        assigned_events=sum(seen.values()),
        reassigned_events=names.get("chat_reassigned", 0),
        lost=lost, ticks=dict(ticks), slots=slots, crash=crash,
    )  # fmt: skip


def burst_table(rows: Sequence[BurstRow], interval: float) -> list[str]:
    lines = [
        "| chat store | processes x tasks | new chats | time | chats/s | errors "
        "| spread per type (retail / wholesale / premium) | double assignments "
        "| chat_assigned events | lost chats | monitor ticks (sla / awaiting / inactivity) "
        f"vs intervals of {interval:g} s elapsed |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        spread = " / ".join(str(r.spread[t]) for t in _burst.CUSTOMER_TYPES)
        ticks = " / ".join(str(r.ticks.get(n, 0)) for n in ("sla", "awaiting", "inactivity"))
        lines.append(
            f"| {r.store} | {r.processes} x {r.concurrency} | {r.chats:,} | {r.seconds:.1f} s "
            f"| **{r.rate:,.0f}** | {r.errors} | {spread} | {r.double} | {r.assigned_events:,} "
            f"| {r.lost} | {ticks} (≈{r.slots['sla']}) |"
        )
    return lines


# ------------------------------------------------------------------- main


@attrs.frozen
class Options:
    quick: bool
    tick_sizes: tuple[int, ...]
    wire_tick_sizes: tuple[int, ...]
    listing_sizes: tuple[int, ...]
    memory_assignments: int
    assign_repeats: int
    redis_repeats: int
    redis_assignments: int
    mongo_assignments: int
    burst_chats: int
    burst_mongo_chats: int
    processes: int
    concurrency: int
    output: Path | None
    strict: bool
    skip: frozenset[str]


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    parser.add_argument(
        "--burst-mongo-chats",
        type=int,
        default=None,
        help="new chats of the burst on the wire server (default 10,000)",
    )
    parser.add_argument(
        "--burst-chats",
        type=int,
        default=None,
        help="new chats of the burst with in-memory stores (default 10,000)",
    )
    parser.add_argument(
        "--wire-tick-sizes",
        default=None,
        help="stored chats on the wire server (default 1000,10000)",
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated sections to skip: assign,tick,listing,burst"
    )
    args = parser.parse_args(argv)

    def sizes(text: str) -> tuple[int, ...]:
        return tuple(int(s.replace("_", "")) for s in text.split(",") if s)

    quick = args.quick
    return Options(
        quick=quick,
        tick_sizes=(10_000, 100_000) if quick else (10_000, 100_000, 1_000_000),
        wire_tick_sizes=sizes(args.wire_tick_sizes or ("1000,3000" if quick else "1000,10000")),
        listing_sizes=(100_000,) if quick else (100_000, 1_000_000),
        memory_assignments=2_000 if quick else 20_000,
        assign_repeats=1 if quick else 3,
        redis_repeats=1 if quick else 7,
        redis_assignments=1_000 if quick else 5_000,
        mongo_assignments=100 if quick else 500,
        burst_chats=args.burst_chats or (1_000 if quick else 10_000),
        burst_mongo_chats=args.burst_mongo_chats or (200 if quick else 10_000),
        processes=4,
        concurrency=8,
        output=args.output,
        strict=args.strict,
        skip=frozenset(s.strip() for s in args.skip.split(",") if s.strip()),
    )


def machine() -> list[str]:
    try:
        with open("/proc/meminfo") as meminfo:
            kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
        memory = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "unknown"
    return [
        f"smartchat_core {smartchat_core.__version__}; Python {platform.python_version()} "
        f"({platform.python_implementation()}); {platform.system()} {platform.machine()}; "
        f"{os.cpu_count()} CPUs; {memory} memory; anyio on asyncio.",
    ]


async def run(options: Options) -> int:
    report: list[str] = []

    def say(*lines: str) -> None:
        for line in lines:
            print(line, flush=True)
            report.append(line)

    verdicts: list[tuple[bool, str]] = []

    def verdict(ok: bool, text: str) -> None:
        verdicts.append((ok, text))

    say("# smartchat_core benchmark: assignments, monitors, listing, burst", "")
    say(*machine())
    servers_stack = _ServersStack()
    servers = servers_stack.open()
    if servers.redis is not None:
        say(f"redis-server {servers.redis.version()} on 127.0.0.1:{servers.redis.port}.", "")
    if servers.mongo is not None:
        say(f"SecantusDB {servers.mongo.version()} (MongoDB wire protocol, --storage-path "
            f":memory:) on 127.0.0.1:{servers.mongo.port}.", "")  # fmt: skip
    for reason in servers_stack.missing:
        say(f"**not measured**: {reason}", "")
    try:
        if "assign" not in options.skip:
            await section_assign(options, servers, say, verdict)
        if "tick" not in options.skip:
            await section_ticks(options, servers, say, verdict)
        if "listing" not in options.skip:
            await section_listing(options, say)
        if "burst" not in options.skip:
            await section_burst(options, servers, say, verdict)
    finally:
        servers_stack.close()
    say("", "## Targets", "")
    for ok, text in verdicts:
        say(f"- {'PASS' if ok else 'FAIL'}: {text}")
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text("\n".join(report) + "\n", encoding="utf-8")
        print(f"\nwritten to {options.output}", flush=True)
    failed = [text for ok, text in verdicts if not ok]
    return 1 if (failed and options.strict) else 0


class _ServersStack:
    def __init__(self) -> None:
        self.missing: list[str] = []
        self._redis: Any = None
        self._mongo: Any = None

    def open(self) -> Servers:
        redis_process = mongo_process = None
        try:
            self._redis = redis_server()
            redis_process = self._redis.__enter__()
        except ServerError as exc:
            self._redis = None
            self.missing.append(f"Redis rows ({exc})")
        try:
            self._mongo = secantus()
            mongo_process = self._mongo.__enter__()
        except ServerError as exc:
            self._mongo = None
            self.missing.append(f"wire-server rows ({exc})")
        return Servers(
            redis_process,
            mongo_process,
            RedisCounter(redis_process.url) if redis_process else None,
            MongoCounter() if mongo_process else None,
        )

    def close(self) -> None:
        for manager in (self._mongo, self._redis):
            if manager is not None:
                manager.__exit__(None, None, None)


async def section_assign(options: Options, servers: Servers, say: Any, verdict: Any) -> None:
    say("", "## Assignments per second and round trips per assignment", "")
    say(f"{EXECUTIVES} online executives, each serving one or two of {len(CUSTOMER_TYPES)} "
        "customer types, no capacity limit, one process, one task, the system clock. "
        "`assign_chat_round_robin` runs on chats already waiting in the queues; "
        "`receive_customer_message` creates the chat and assigns it. Redis commands are "
        "counted on the server (`INFO commandstats` deltas), MongoDB commands by a pymongo "
        "`CommandListener` (`hello`/`endSessions` not counted). The raw rows do the minimal "
        "sequence by hand in the same run: the rotation pick and the chat update with its "
        "precondition (no counters, no events, no capacity, no re-checks); library/raw is the "
        "throughput ratio of `assign_chat_round_robin` to its raw row. Library and raw runs "
        f"alternate: each row is the median of {options.assign_repeats} runs in memory, "
        f"{options.redis_repeats} on the redis stack and 1 with MongoDB, each ratio the median "
        "of the per-run ratios.", "")  # fmt: skip
    rows: list[AssignRow] = []
    ratios: dict[str, float] = {}
    stacks = [("memory", options.memory_assignments)]
    if servers.redis is not None:
        stacks.append(("redis", options.redis_assignments))
        if servers.mongo is not None:
            stacks.append(("redis+mongo", options.mongo_assignments))
    repeats = options.assign_repeats
    for stack, count in stacks:
        print(f"... assignments: {stack}", file=sys.stderr, flush=True)
        # Library and raw alternate, run after run; each row is the median run,
        # each ratio the median of the per-run ratios (the machine may be busy).
        measures: dict[str, list[Callable[[], Awaitable[AssignRow]]]] = {
            "raw": [lambda s=stack, c=count: raw_assign(s, servers, c)],
            "library": [lambda s=stack, c=count: library_assign(s, servers, c)],
        }
        if stack == "redis":
            measures["raw+publish"] = [
                lambda c=count: raw_assign("redis", servers, c, publish=True)
            ]
            measures["library-local"] = [
                lambda c=count: library_assign("redis", servers, c, local_events=True)
            ]
        if stack == "redis+mongo":
            measures["library-async"] = [
                lambda c=count: library_assign("redis+mongo", servers, c, mongodb_async=True)
            ]
        runs: dict[str, list[AssignRow]] = {name: [] for name in measures}
        times = {"memory": repeats, "redis": options.redis_repeats}.get(stack, 1)
        for _ in range(times):
            for name, (measure,) in measures.items():
                runs[name].append(await measure())
        medians = {name: _median_row(found) for name, found in runs.items()}
        raw_rates = [r.rate for r in runs["raw"]]
        for name, found in runs.items():
            if name.startswith("library"):
                row = medians[name]
                ratios[f"{row.stack}|{row.path}"] = statistics.median(
                    r.rate / raw for r, raw in zip(found, raw_rates, strict=True)
                )
        if "raw+publish" in runs:
            ratios["redis|library vs raw+publish"] = statistics.median(
                r.rate / p.rate for r, p in zip(runs["library"], runs["raw+publish"], strict=True)
            )
        order = ["library", "library-local", "library-async", "raw", "raw+publish"]
        rows += [medians[name] for name in order if name in medians]
        rows.append(await library_drain(stack, servers, count))
        if stack == "redis+mongo":
            rows.append(await library_drain(stack, servers, count, mongodb_async=True))
        rows.append(await library_intake(stack, servers, count))
    for line in assign_table(rows, ratios):
        say(line)
    by = {(r.stack, r.path): r for r in rows}
    redis_row = by.get(("redis", "library: assign_chat_round_robin"))
    if redis_row is not None:
        picks = redis_row.redis.get("lmove", 0) + redis_row.redis.get("evalsha", 0)
        per_pick = picks / redis_row.count
        verdict(per_pick <= 1.0,
                f"one Redis command or script call per rotation pick: {per_pick:.2f} "
                f"(LMOVE + EVALSHA per assignment; every Redis command per assignment: "
                f"{sum(redis_row.redis.values()) / redis_row.count:.2f}, the rest is the "
                "PUBLISH of chat_assigned)")  # fmt: skip
        ratio = ratios["redis|library: assign_chat_round_robin"]
        verdict(ratio >= RATIO_TARGET,
                f"library/raw on the Redis rotation path >= {RATIO_TARGET}: {ratio:.2f} "
                f"({redis_row.rate:,.0f} vs {by[('redis', 'raw: LMOVE + dict update')].rate:,.0f}"
                " assignments/s, median of the per-run ratios)")  # fmt: skip
        if "redis|library vs raw+publish" in ratios:
            say(
                "",
                "library/raw on the Redis path against the raw sequence that also "
                "publishes the event (LMOVE + PUBLISH + dict update): "
                f"{ratios['redis|library vs raw+publish']:.2f}.",
            )
    mongo_row = by.get(("redis+mongo", "library: assign_waiting_chats (queue drain)"))
    by_id = by.get(("redis+mongo", "library: assign_chat_round_robin"))
    if mongo_row is not None:
        settings = Settings()
        commands = sum(mongo_row.mongo.values())
        writes = mongo_row.mongo.get(f"update {settings.chats_collection}", 0)
        checks = mongo_row.mongo.get(f"find {settings.executives_collection}", 0)
        queue = commands - writes - checks
        per_assign = (writes + checks) / mongo_row.count
        verdict(per_assign <= MONGO_TARGET,
                f"MongoDB commands per assignment <= {MONGO_TARGET:g}: {per_assign:.2f} "
                f"(queue drain: the chat's update {writes / mongo_row.count:.2f} + the "
                f"executive's check {checks / mongo_row.count:.2f}; plus {queue} queue/"
                f"counter queries for all {mongo_row.count} chats = "
                f"{commands / mongo_row.count:.3f} per chat in all)")  # fmt: skip
    if by_id is not None:
        say("", f"`assign_chat_round_robin(chat_id)` on MongoDB reads the chat first: "
            f"{sum(by_id.mongo.values()) / by_id.count:.2f} commands per assignment "
            f"({per(by_id.mongo, by_id.count).replace('**', '')}).")  # fmt: skip


async def section_ticks(options: Options, servers: Servers, say: Any, verdict: Any) -> None:
    repeats = 5 if options.quick else 15
    say("", f"## Monitor tick against stored chats, in-memory (median of {repeats} runs)", "")
    say(f"Exactly {bench_core.DUE} chats due for the SLA alert tier and {bench_core.DUE} for "
        "the awaiting tagger; the rest mostly resolved, the open ones not due. "
        "From `benchmarks/bench_core.py`.", "")  # fmt: skip
    rows = await bench_core.measure_ticks(options.tick_sizes, repeats)
    gc.collect()
    for line in bench_core.tick_table(rows):
        say(line)
    small, large = rows[0], rows[-1]
    ratio = large.total / small.total
    verdict(
        ratio <= TICK_TARGET,
        f"in-memory tick({bench_core.power_of_ten(large.size)}) / "
        f"tick({bench_core.power_of_ten(small.size)}) <= {TICK_TARGET:g}: {ratio:.2f}",
    )
    if servers.redis is None or servers.mongo is None or not options.wire_tick_sizes:
        return
    due = 20
    wire_repeats = 3
    say("", f"## Monitor tick on the wire server (Redis + SecantusDB, median of {wire_repeats} "
        "runs)", "")  # fmt: skip
    say(
        f"The same chat mix with {due} due for each check (each tagged chat is one chat write; "
        "the tags are removed again between runs). Chats are bulk-inserted as the adapter's "
        "documents; sizes are what the wire server builds in a few minutes.",
        "",
    )
    wire = await wire_ticks(servers, options.wire_tick_sizes, due, wire_repeats)
    for line in wire_tick_table(wire):
        say(line)
    if len(wire) > 1:
        ratio = wire[-1].total / wire[0].total
        say("", f"wire server tick({wire[-1].size:,}) / tick({wire[0].size:,}) = {ratio:.2f} "
            "(informational; no target).")  # fmt: skip


async def section_listing(options: Options, say: Any) -> None:
    repeats = 3 if options.quick else 5
    say("", f"## Chat listing, in-memory (page of 20, median of {repeats} runs)", "")
    say(
        "Chats of the tick benchmark's mix plus 1 % waiting unassigned. `total` is the number "
        "of matches (the listing counts them all).",
        "",
    )
    rows, counter_rows = await listing(options.listing_sizes, repeats)
    for line in listing_table(rows, options.listing_sizes):
        say(line)
    say("", "### My chats / Unassigned / All from the counters (no scan)", "")
    for line in counter_table(counter_rows):
        say(line)


async def section_burst(options: Options, servers: Servers, say: Any, verdict: Any) -> None:
    if servers.redis is None:
        return
    interval = 1.0
    say("", "## Burst: new chats over 4 OS processes", "")
    say(
        f"{options.processes} processes (multiprocessing, spawn), each with "
        f"{options.concurrency} concurrent tasks calling `receive_customer_message` for its "
        "share of new customers, and each running `run_monitors()` with every interval "
        f"{interval:g} s (leases in Redis). All share the redis-server: rotation, SLA dedup, "
        f"leases, pub/sub events. {_burst.EXECUTIVES} executives, one customer type each "
        "(17 / 17 / 16), all online throughout, no capacity limit. Double assignments: "
        "chats with more than one `chat_assigned` event seen by an independent subscriber "
        "on the event channel. Lost: customers without an open assigned chat at the end. "
        "Spread: per customer type, most minus fewest chats among its executives.",
        "",
    )
    rows = []
    if servers.mongo is not None:
        print(f"... burst: {options.burst_mongo_chats:,} chats, shared wire server",
              file=sys.stderr, flush=True)  # fmt: skip
        rows.append(await burst(servers, chats=options.burst_mongo_chats,
                                processes=options.processes, concurrency=options.concurrency,
                                shared_store=True, monitor_interval=interval))  # fmt: skip
    print(f"... burst: {options.burst_chats:,} chats, in-memory stores", file=sys.stderr,
          flush=True)  # fmt: skip
    rows.append(await burst(servers, chats=options.burst_chats, processes=options.processes,
                            concurrency=options.concurrency, shared_store=False,
                            monitor_interval=interval))  # fmt: skip
    for line in burst_table(rows, interval):
        say(line)
    for r in rows:
        if r.crash:
            say("", f"A worker crashed ({r.store}):", "", "```", r.crash, "```")
    say(
        "",
        "With per-process in-memory stores every chat lives in the process that received "
        "it, so two processes can never race on one chat there; that row measures the shared "
        "Redis rotation (fairness across processes), dedup, leases and events at the full "
        "size. Races on one chat are covered by the shared-store row.",
    )
    for r in rows:
        name = f"burst, {r.store}, {r.chats:,} chats"
        verdict(r.double == 0 and r.crash is None, f"{name}: 0 double assignments: {r.double}")
        verdict(r.lost == 0 and r.crash is None, f"{name}: 0 lost chats: {r.lost}")
        worst = max(r.spread.values())
        verdict(
            worst <= 1 and r.crash is None,
            f"{name}: spread <= 1 per customer type: "
            + ", ".join(f"{t} {r.spread[t]}" for t in _burst.CUSTOMER_TYPES),
        )
        if r.errors:
            verdict(False, f"{name}: {r.errors} receive_customer_message calls raised")


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    return anyio.run(run, options, backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
