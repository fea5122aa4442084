"""pytest plugin: a real MongoDB wire server for the tests, and mongomock.

* ``mongo_url`` (session): ``$SMARTCHAT_TEST_MONGODB_URL`` if set (a real
  MongoDB), else a SecantusDB server started once per session on a free
  loopback port (``python -m secantus --storage-path :memory:``) and stopped
  at the end.  Where no server can be had the tests using it skip with the
  reason -- or fail when ``SMARTCHAT_REQUIRE_SERVERS=1`` (CI).
* ``mongo_client`` (session): a ``pymongo.MongoClient`` on it.
* ``mongo_database`` (function): a fresh database name for one test (dropped
  afterwards).
* ``mongomock_client`` (function): a fresh in-process ``mongomock`` client.
* ``MONGOMOCK`` and the ``mongo_backend`` fixture: entries for the backend
  table of the contract suite.

Enable with ``pytest_plugins = ["mongo_server"]`` (tests/ on ``sys.path``) or
``-p mongo_server``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from smartchat_core import Settings
from smartchat_core.abc import Clock, EventPublisher, MessageSender
from smartchat_core.adapters.memory import MemoryEventPublisher
from smartchat_core.services import Ports
from smartchat_core.testing.backends import Backend

URL_VARIABLE = "SMARTCHAT_TEST_MONGODB_URL"
REQUIRE_VARIABLE = "SMARTCHAT_REQUIRE_SERVERS"
START_TIMEOUT = 60.0


def _unavailable(reason: str) -> None:
    """Skip, or fail where servers are required (CI)."""
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{reason} (and {REQUIRE_VARIABLE}=1)", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(url: str, timeout: float) -> str | None:
    """None if the server answers ``ping``, else the error."""
    import pymongo

    client: Any = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=1000
    )
    try:
        client.admin.command("ping")
        return None
    except Exception as exc:  # any driver error means "not yet"
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()


class SecantusServer:
    """A SecantusDB process on a free loopback port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}/?directConnection=true"
        self._workdir = tempfile.mkdtemp(prefix="smartchat-secantus-")
        self._log_path = os.path.join(self._workdir, "secantus.log")
        self._log = open(self._log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "secantus",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                ":memory:",
                "--log-level",
                "WARNING",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self._workdir,  # no stray secantusd.toml is picked up
        )

    def log_tail(self, chars: int = 2000) -> str:
        try:
            with open(self._log_path, "rb") as log:
                return log.read().decode(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str | None:
        """None once ``ping`` answers; else why it did not."""
        deadline = time.monotonic() + timeout
        error: str | None = "not started"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"secantus exited with {self.process.returncode}: {self.log_tail()}"
            error = _ping(self.url, 0.5)
            if error is None:
                return None
            time.sleep(0.1)
        return f"secantus did not answer ping within {timeout:.0f} s ({error})"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self._log.close()
        shutil.rmtree(self._workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def _mongo_url_or_reason() -> Iterator[tuple[str | None, str]]:
    url = os.environ.get(URL_VARIABLE)
    if url:
        error = _ping(url, 5.0)
        yield (None, f"{URL_VARIABLE} server unreachable: {error}") if error else (url, "")
        return
    try:
        import pymongo  # noqa: F401
        import secantus  # noqa: F401
    except ImportError as exc:
        yield None, f"SecantusDB/pymongo not installed ({exc}); pip install secantusdb pymongo"
        return
    try:
        server = SecantusServer()
    except OSError as exc:
        yield None, f"could not start SecantusDB: {exc}"
        return
    try:
        error = server.wait_ready()
        yield (None, f"SecantusDB unavailable: {error}") if error else (server.url, "")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_url(_mongo_url_or_reason: tuple[str | None, str]) -> str:
    """URL of the real wire server (SecantusDB or $SMARTCHAT_TEST_MONGODB_URL)."""
    url, reason = _mongo_url_or_reason
    if url is None:
        _unavailable(reason)
    assert url is not None
    return url


@pytest.fixture(scope="session")
def mongo_client(mongo_url: str) -> Iterator[Any]:
    """A synchronous pymongo client on the wire server (tz-aware)."""
    import pymongo

    client: Any = pymongo.MongoClient(mongo_url, tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def mongo_database(mongo_client: Any) -> Iterator[str]:
    """A fresh database name on the wire server, dropped after the test."""
    name = f"smartchat_test_{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(Exception):
        mongo_client.drop_database(name)


@pytest.fixture
def mongomock_client() -> Any:
    """A fresh in-process mongomock client (tz-aware)."""
    mongomock = pytest.importorskip("mongomock")
    return mongomock.MongoClient(tz_aware=True)


# ----------------------------------------------------------- backend table entries


def build_ports(
    client: Any,
    database: str,
    settings: Settings,
    clock: Clock,
    sender: MessageSender,
    publisher: EventPublisher | None,
    **options: Any,
) -> Ports:
    """Ports with every store, the rotation, dedup and lock on MongoDB."""
    from smartchat_core.adapters.mongodb import mongo_ports

    ports = mongo_ports(client, database=database, settings=settings, clock=clock, **options)
    return Ports(
        settings=settings,
        clock=clock,
        sender=sender,
        publisher=publisher or MemoryEventPublisher(),
        **ports,
    )


@contextlib.asynccontextmanager
async def _mongomock_ports(
    settings: Settings, clock: Clock, sender: MessageSender, publisher: EventPublisher | None
) -> AsyncIterator[Ports]:
    import mongomock

    yield build_ports(
        mongomock.MongoClient(tz_aware=True), "smartchat", settings, clock, sender, publisher
    )


MONGOMOCK = Backend("mongomock", _mongomock_ports)
"""mongomock: in-process, one client per Ports (no sharing)."""


@pytest.fixture
def mongo_backend(mongo_url: str, mongo_client: Any) -> Iterator[Backend]:
    """The wire server as a backend entry.  All Ports built in one test share
    one fresh database (each with its own client), so two of them behave
    like two app processes."""
    name = f"smartchat_test_{uuid.uuid4().hex[:12]}"

    @contextlib.asynccontextmanager
    async def factory(
        settings: Settings, clock: Clock, sender: MessageSender, publisher: EventPublisher | None
    ) -> AsyncIterator[Ports]:
        import pymongo

        client: Any = pymongo.MongoClient(mongo_url, tz_aware=True)
        try:
            yield build_ports(client, name, settings, clock, sender, publisher)
        finally:
            client.close()

    yield Backend("mongodb", factory, multi_process=True)
    with contextlib.suppress(Exception):
        mongo_client.drop_database(name)
