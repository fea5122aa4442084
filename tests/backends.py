"""The backend table of this test suite: the contract suite and the state
machine run over every entry.

* ``memory``: the in-memory adapters (the reference model);
* ``mongomock+fakeredis``: the in-process fakes (fakeredis runs the Lua);
* ``mongodb+redis``: the MongoDB wire server (SecantusDB, or
  ``$SMARTCHAT_TEST_MONGODB_URL``) and a real ``redis-server``: every Ports
  built from the entry has its own connections to one database and one key
  prefix, like separate app processes;
* ``mongodb-only``: the wire server alone (rotation, dedup and leases in
  MongoDB too; events in-process) — a mixed setup;
* ``memory+redis``: chats in memory, rotation/dedup/leases/events on the real
  ``redis-server`` through a URL (the client the adapters build themselves,
  as in production) — the other mixed setup.

The server entries are built inside fixtures (the servers' addresses are
known only then); see :func:`backend_for`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest

from smartchat_core import Ports, Settings
from smartchat_core.abc import Clock, EventPublisher, MessageSender
from smartchat_core.testing.backends import MEMORY, Backend

BACKENDS: list[Backend] = [MEMORY]
"""Entries that need no fixture."""

BACKEND_NAMES = ["memory", "mongomock+fakeredis", "mongodb+redis", "mongodb-only", "memory+redis"]


def backend_for(name: str, request: pytest.FixtureRequest) -> Backend:
    """The backend-table entry ``name``, using the server fixtures it needs."""
    if name == "memory":
        return MEMORY
    if name == "mongomock+fakeredis":
        return _mongomock_fakeredis(request.getfixturevalue("fake_redis_server"))
    if name == "memory+redis":
        from redis_server import redis_backend

        # From the URL, as AsyncSmartChat.from_urls builds it (its own pool
        # and the lane of RedisConnection); the mongodb+redis entry covers a
        # ready-made client.
        return redis_backend("memory+redis", request.getfixturevalue("redis_server").url)
    mongo_url: str = request.getfixturevalue("mongo_url")
    database: str = request.getfixturevalue("mongo_database")
    if name == "mongodb-only":
        return _servers("mongodb-only", mongo_url, database, None)
    if name == "mongodb+redis":
        return _servers(
            "mongodb+redis", mongo_url, database, request.getfixturevalue("redis_server").url
        )
    raise LookupError(name)


def backend_maker(name: str, request: pytest.FixtureRequest) -> Callable[[], Backend]:
    """A factory of *fresh* entries ``name`` (new database, new key prefix, new
    fake server each call): one per Hypothesis example.  Databases made on the
    wire server are dropped when the test ends."""
    if name == "memory":
        return lambda: MEMORY
    if name == "mongomock+fakeredis":
        import fakeredis

        return lambda: _mongomock_fakeredis(fakeredis.FakeServer())
    if name == "memory+redis":
        return lambda: backend_for(name, request)
    mongo_url: str = request.getfixturevalue("mongo_url")
    client: Any = request.getfixturevalue("mongo_client")
    redis_url = request.getfixturevalue("redis_server").url if name == "mongodb+redis" else None
    made: list[str] = []

    def drop() -> None:
        for database in made:
            with contextlib.suppress(Exception):
                client.drop_database(database)

    request.addfinalizer(drop)

    def make() -> Backend:
        made.append(f"smartchat_sm_{uuid.uuid4().hex[:12]}")
        return _servers(name, mongo_url, made[-1], redis_url)

    return make


def _servers(name: str, mongo_url: str, database: str, redis_url: str | None) -> Backend:
    """Ports on the real servers sharing one database and one key prefix."""
    prefix = f"sc-{uuid.uuid4().hex[:12]}"

    @contextlib.asynccontextmanager
    async def factory(
        settings: Settings, clock: Clock, sender: MessageSender, publisher: EventPublisher | None
    ) -> AsyncIterator[Ports]:
        import pymongo

        from mongo_server import build_ports

        client: Any = pymongo.MongoClient(mongo_url, tz_aware=True)
        redis_client = None
        try:
            ports = build_ports(client, database, settings, clock, sender, publisher)
            if redis_url is not None:
                from redis.asyncio import BlockingConnectionPool, Redis

                from smartchat_core.adapters.redis import redis_ports

                redis_client = Redis.from_pool(BlockingConnectionPool.from_url(redis_url))
                changes: dict[str, Any] = dict(
                    redis_ports(
                        redis_client, settings=settings, clock=clock, prefix=prefix,
                        dedup_prefix=prefix + ":",
                    )
                )  # fmt: skip
                if publisher is not None:
                    del changes["publisher"]
                ports = attrs.evolve(ports, **changes)
            yield ports
        finally:
            client.close()
            if redis_client is not None:
                await redis_client.aclose()

    return Backend(name, factory, multi_process=True, asyncio_only=redis_url is not None)


def _mongomock_fakeredis(server: Any) -> Backend:
    from redis_server import fake_client
    from smartchat_core.adapters.redis import redis_ports

    @contextlib.asynccontextmanager
    async def factory(
        settings: Settings, clock: Clock, sender: MessageSender, publisher: EventPublisher | None
    ) -> AsyncIterator[Ports]:
        import mongomock

        from mongo_server import build_ports

        redis_client = fake_client(server)
        try:
            ports = build_ports(
                mongomock.MongoClient(tz_aware=True), "smartchat", settings, clock, sender,
                publisher,
            )  # fmt: skip
            changes: dict[str, Any] = dict(
                redis_ports(
                    redis_client,
                    settings=settings,
                    clock=clock,
                    prefix=f"sc-{uuid.uuid4().hex[:8]}",
                )
            )
            if publisher is not None:
                del changes["publisher"]
            yield attrs.evolve(ports, **changes)
        finally:
            await redis_client.aclose()

    return Backend("mongomock+fakeredis", factory, asyncio_only=True)
