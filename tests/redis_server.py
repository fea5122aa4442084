"""pytest plugin: a real ``redis-server`` for the tests, and fakeredis.

Load it with ``pytest_plugins = ["redis_server"]`` in ``tests/conftest.py``
(or ``-p redis_server`` with ``tests/`` on ``sys.path``).

* ``redis_server`` (session): a ``redis-server`` started on a free loopback
  port (``--bind 127.0.0.1 --save "" --appendonly no``: nothing on disk),
  stopped at the end of the session.  With ``SMARTCHAT_REDIS_URL`` set, that
  server is used instead (it cannot be stopped: fault tests skip; the keys
  the tests leave, all under ``sc-`` prefixes, are deleted at the end).
* ``redis_faults`` (function): the same server, for tests that stop and
  start it mid-test (:meth:`RedisServer.stop` / :meth:`RedisServer.start`;
  a restarted server is empty); it is running again after the test.
* ``fake_redis_server`` (function): a fresh ``fakeredis.FakeServer``; its
  clients (:func:`fake_client`) share its data and run Lua through lupa.

Where ``redis-server`` is missing or does not start, the tests that need it
skip with the reason, unless ``SMARTCHAT_REQUIRE_SERVERS=1`` (CI), which
turns the skip into a failure.  Tests use a fresh key prefix each
(:func:`unique_prefix`), so they never see each other's keys.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import pytest

from smartchat_core import Settings
from smartchat_core.abc import Clock, EventPublisher, MessageSender
from smartchat_core.adapters.memory import memory_ports
from smartchat_core.services import Ports
from smartchat_core.testing.backends import Backend

if TYPE_CHECKING:
    import fakeredis
    from redis.asyncio import Redis

__all__ = [
    "REQUIRE_SERVERS_ENV",
    "REDIS_URL_ENV",
    "RedisServer",
    "fake_client",
    "redis_backend",
    "server_unavailable",
    "unique_prefix",
]

REQUIRE_SERVERS_ENV = "SMARTCHAT_REQUIRE_SERVERS"
REDIS_URL_ENV = "SMARTCHAT_REDIS_URL"
_START_TIMEOUT = 15.0


def server_unavailable(reason: str) -> NoReturn:
    """Skip, or fail when ``SMARTCHAT_REQUIRE_SERVERS=1``."""
    if os.environ.get(REQUIRE_SERVERS_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_SERVERS_ENV}=1)", pytrace=False)
    pytest.skip(reason)


class RedisServerError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` process on ``127.0.0.1`` (or an external server)."""

    def __init__(
        self,
        executable: str | None,
        workdir: Path | None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        url: str | None = None,
    ) -> None:
        self.executable = executable
        self.workdir = workdir
        self.host = host
        self.port = port or 0
        self._url = url
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def managed(self) -> bool:
        """Whether the tests started this server (and may stop it)."""
        return self._url is None

    @property
    def url(self) -> str:
        return self._url or f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (empty) and wait until it answers PING."""
        if not self.managed:
            raise RuntimeError("an external Redis server cannot be started by the tests")
        if self.running:
            return
        assert self.executable is not None and self.workdir is not None
        attempts = 1 if self.port else 3
        error = ""
        for _ in range(attempts):
            port = self.port or _free_port()
            log = self.workdir / f"redis-{port}.log"
            with log.open("ab") as out:
                process = subprocess.Popen(
                    [
                        self.executable,
                        "--port", str(port),
                        "--bind", "127.0.0.1",
                        "--save", "",
                        "--appendonly", "no",
                        "--daemonize", "no",
                        "--dir", str(self.workdir),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )  # fmt: skip
            deadline = time.monotonic() + _START_TIMEOUT
            while time.monotonic() < deadline and process.poll() is None:
                if _ping(self.host, port):
                    self._process, self.port = process, port
                    self.starts += 1
                    return
                time.sleep(0.02)
            _stop(process)
            error = log.read_text(errors="replace")[-2000:]
        raise RedisServerError(f"redis-server did not start on 127.0.0.1: {error.strip()}")

    def stop(self) -> None:
        """Stop the server (its data is gone: nothing is persisted)."""
        if not self.managed:
            raise RuntimeError("an external Redis server cannot be stopped by the tests")
        process, self._process = self._process, None
        if process is not None:
            _stop(process)

    def restart(self) -> None:
        self.stop()
        self.start()


def _delete_test_keys(url: str) -> None:
    """Remove the rings and leases the tests left on an external server (the
    dedup keys expire by themselves)."""
    import redis

    with redis.Redis.from_url(url) as client:
        for pattern in ("{sc-*", "*sla::alerted::sc-*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis for the session (see the module docstring)."""
    url = os.environ.get(REDIS_URL_ENV)
    if url:
        yield RedisServer(None, None, url=url)
        _delete_test_keys(url)
        return
    executable = shutil.which("redis-server")
    if executable is None:
        server_unavailable(
            "redis-server is not installed (apt-get install -y redis-server redis-tools)"
        )
    server = RedisServer(executable, tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except (RedisServerError, OSError) as exc:
        server_unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_faults(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's server, to stop and start mid-test; running afterwards."""
    if not redis_server.managed:
        pytest.skip(f"fault tests need a server the tests started ({REDIS_URL_ENV} is set)")
    try:
        yield redis_server
    finally:
        if not redis_server.running:
            redis_server.start()


@pytest.fixture
def fake_redis_server() -> fakeredis.FakeServer:
    """A fresh fakeredis server (Lua scripts through lupa)."""
    fake = pytest.importorskip("fakeredis")
    pytest.importorskip("lupa", reason="fakeredis runs Lua scripts through lupa")
    server: fakeredis.FakeServer = fake.FakeServer()
    return server


def fake_client(server: fakeredis.FakeServer, **options: Any) -> Redis:
    """A new asyncio client on a fakeredis server (a blocking pool: bursts of
    concurrent commands wait for a connection instead of failing)."""
    import fakeredis
    from redis.asyncio import BlockingConnectionPool

    options.setdefault("connection_pool_class", BlockingConnectionPool)
    client: Redis = fakeredis.FakeAsyncRedis(server=server, **options)
    return client


def unique_prefix(label: str = "t") -> str:
    """A key prefix no other test uses."""
    return f"sc-{label}-{uuid.uuid4().hex[:12]}"


def redis_backend(name: str, make_client: Callable[[], Redis] | str) -> Backend:
    """A backend-table entry: chats and executives in memory, rotation,
    dedup, lock and (unless the test brings one) publisher on Redis, with a
    fresh key prefix per :class:`Ports`.  ``make_client`` gives a new client
    per Ports (closed when they are done), or is a URL: the ports then build
    their own client, as ``AsyncSmartChat.from_urls`` does (and the desk's
    exit closes it).  Ports from one entry share state through the server
    only for the Redis ports (``multi_process`` False)."""
    from smartchat_core.adapters.redis import redis_ports

    @asynccontextmanager
    async def factory(
        settings: Settings, clock: Clock, sender: MessageSender, publisher: EventPublisher | None
    ) -> AsyncIterator[Ports]:
        client: Redis | str = make_client if isinstance(make_client, str) else make_client()
        try:
            prefix = unique_prefix()
            ports = redis_ports(
                client, settings=settings, clock=clock, prefix=prefix, dedup_prefix=prefix + ":"
            )
            changes: dict[str, Any] = dict(ports)
            if publisher is not None:
                changes["publisher"] = publisher
            yield attrs.evolve(memory_ports(settings, clock, sender), **changes)
        finally:
            if not isinstance(client, str):
                await client.aclose()

    return Backend(name, factory, asyncio_only=True)
