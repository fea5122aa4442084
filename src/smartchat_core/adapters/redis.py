"""Redis adapters (redis-py's asyncio client): rotation, SLA alert dedup,
leases and cross-process events.

**asyncio only.**  ``redis.asyncio`` runs on asyncio, so a desk using these
ports must run under asyncio (anyio's asyncio backend), not trio.

Nothing connects at import time: the client is either passed in ready-made
(a ``redis.asyncio.Redis``, which the caller keeps and closes) or built from
a ``redis://`` URL in :meth:`~smartchat_core.abc.Port.start` and closed with
the exit stack.  The ports built by :func:`redis_ports` share one client.
Driver failures (``redis.exceptions.RedisError`` and ``OSError``: connection
refused or lost, timeouts) are raised as :class:`~smartchat_core.BackendError`
with the original as ``__cause__``.

Key layout (``<P>`` is the prefix, default :attr:`Settings.redis_prefix`
= ``smartchat``; braces are literal)::

    {<P>}:rr:<customer_type>           list     the rotation ring of a type, head first
    {<P>}:lock:<name>                  string   a lease: the holder's token
                                                (monitors: <name> = monitor:<monitor>:<slot>)
    <D>sla::alerted::<chat_id>::<tier> string   an SLA alert dedup key: the seed's key;
                                                <D> = dedup prefix, default empty
    <P>:events                         channel  every event, as JSON (pub/sub),
                                                {"origin": <publisher id>, **Event.to_json()}

e.g. ``{smartchat}:rr:retail``, ``{smartchat}:lock:monitor:sla:29432160``,
``sla::alerted::65a1...::alert``, ``smartchat:events``.

``{<P>}`` is a Redis Cluster hash tag: every rotation ring and lease hashes
on the prefix alone, so they all live in one slot and a script over several
of them stays valid on a cluster (each command and script of this module
touches exactly one key anyway).  They are few and small.  The dedup keys
are many (one per alerted chat and tier), each used alone, so they carry no
hash tag and spread over the cluster; their default format is the seed's so
a Smart Chat V2 deployment keeps its keys.  Pub/sub channels are not hashed
to slots.

Operations:

* ``Rotation.next`` is one ``LMOVE key key LEFT RIGHT`` (rotate, return the
  old head), atomic on the server: concurrent callers in any number of
  processes get a strict rotation.  ``add`` is a script (``LPOS`` then
  ``RPUSH``, keeping a member's place), ``remove`` is ``LREM``, ``members``
  ``LRANGE``, ``replace`` a script (``DEL`` + ``RPUSH``).  On a client built
  from a URL, ``LMOVE`` and the publisher's batches go on a few connections
  of their own, past redis-py's client and pool bookkeeping
  (:meth:`RedisConnection.command`).  A ring that Redis
  lost (restart without persistence, failover) reads as empty and the
  executive service rebuilds it from the executive store.
* ``AlertDedup.claim`` is ``SET key 1 NX PX ttl``; ``Lock.acquire`` is
  ``SET key token NX PX ttl`` and ``release`` a compare-and-delete script
  (never someone else's lease).  With ``clock`` given (see
  :func:`redis_ports`), expiry follows that clock instead of the server's:
  the value carries the expiry moment (``"{ms}:1"``, ``"{ms}:{token}"``),
  a script compares it with the clock's now, and the key's Redis TTL
  (``ttl`` + one hour) only collects garbage.  That is how tests and
  simulations on virtual time get dedup windows and leases that end when
  virtual time says so.
* Events: ``publish`` never waits for Redis: it hands the event to this
  process's subscribers at once and queues it; a background sender (a task
  of its own, started by ``start``, flushed and stopped on exit) sends the
  queue in batches, one round trip a batch (one ``EVAL`` running a
  ``PUBLISH`` an event), on ``<P>:events`` (:meth:`Event.to_json` as JSON, with the publisher's
  ``origin`` first).  While this process has a subscription, a background
  listener subscribed to the channel fans the other processes' events out
  to it with room filtering (its own it recognises by the origin and
  skips), so a WebSocket served by any process sees every process's
  events.  A new subscription sees exactly what Redis received after it (a
  barrier message through the channel).  Best-effort, as pub/sub is: the
  queue is bounded (the oldest dropped beyond it), and the listener
  reconnects by itself after a connection loss (what was published
  meanwhile is lost to it: pub/sub does not store it).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    suppress,
)
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypedDict

import anyio
import attrs

from .._errors import BackendError
from .._events import Event
from .._settings import Settings
from ..abc import AlertDedup, Clock, EventPublisher, Lock, Port, Rotation
from .memory import MemoryEventPublisher, SystemClock

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub
    from redis.commands.core import AsyncScript

__all__ = [
    "DEFAULT_PREFIX",
    "RedisAlertDedup",
    "RedisConnection",
    "RedisEventPublisher",
    "RedisKeys",
    "RedisLock",
    "RedisPorts",
    "RedisRotation",
    "redis_ports",
]

logger = logging.getLogger("smartchat_core")

DEFAULT_PREFIX: str = Settings().redis_prefix
"""The default key prefix, :attr:`Settings.redis_prefix` (``"smartchat"``)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_GC_GRACE = timedelta(hours=1)
"""Extra Redis TTL of clock-driven keys (the clock decides, Redis collects)."""


@functools.cache
def _redis_error() -> type[Exception]:
    from redis.exceptions import RedisError

    return RedisError


class _backend_errors:
    """Translate driver failures into :class:`BackendError`.

    A plain class, not ``@contextmanager``: it wraps every Redis call,
    the rotation's ``LMOVE`` on the assignment path among them, and a
    generator-based context manager costs several times more."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: Any
    ) -> None:
        if exc is not None and isinstance(exc, (_redis_error(), OSError)):
            raise BackendError(f"Redis {self.what} failed: {exc}") from exc


def _asyncio_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "the Redis adapters need asyncio (redis.asyncio); run the desk on asyncio, not trio"
        ) from None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(value: timedelta) -> int:
    return max(1, int(value.total_seconds() * 1000))


def _epoch_ms(moment: datetime) -> int:
    return int((moment - _EPOCH).total_seconds() * 1000)


# ---------------------------------------------------------------------- keys


@attrs.frozen
class RedisKeys:
    """The key layout (see the module docstring)."""

    prefix: str = DEFAULT_PREFIX

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix:
            raise ValueError("the Redis key prefix must be a non-empty string")
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError("the Redis key prefix must not contain braces (it is the hash tag)")

    @property
    def tag(self) -> str:
        """The hash tag every rotation and lease key starts with: ``{prefix}``."""
        return "{" + self.prefix + "}"

    def rotation(self, customer_type: str) -> str:
        return f"{self.tag}:rr:{customer_type}"

    def lock(self, name: str) -> str:
        return f"{self.tag}:lock:{name}"

    @property
    def events(self) -> str:
        """The pub/sub channel of the events."""
        return f"{self.prefix}:events"


# ---------------------------------------------------------------- connection


class RedisConnection:
    """One ``redis.asyncio`` client shared by several ports.

    Built from a ready-made client (used as it is, never closed here) or a
    URL (the client is created by the first :meth:`start` and closed with
    that exit stack).  :meth:`start` also checks the server answers, so a
    desk does not start against an unreachable Redis.

    A client built from a URL uses a pool of ``max_connections``
    connections: a burst of concurrent commands waits up to
    ``pool_timeout`` seconds for a free connection instead of failing
    (redis-py's default pool raises "Too many connections" beyond its size;
    give a ready-made client a ``BlockingConnectionPool``).  Unlike
    redis-py's ``BlockingConnectionPool`` it costs nothing while a
    connection is free.  ``client_options`` go to
    the pool (``socket_timeout``, ``retry``, ``health_check_interval``...).
    """

    def __init__(
        self,
        client_or_url: Redis | str,
        *,
        max_connections: int = 100,
        pool_timeout: float | None = 20.0,
        **client_options: Any,
    ) -> None:
        if isinstance(client_or_url, str):
            self._url: str | None = client_or_url
            self._client: Redis | None = None
        else:
            if client_options or max_connections != 100 or pool_timeout != 20.0:
                raise TypeError("client options apply to a URL, not to a ready-made client")
            self._url = None
            self._client = client_or_url
        self._options = client_options
        self._max_connections = max_connections
        self._pool_timeout = pool_timeout
        self._started = False
        self._lane: _Lane | None = None

    @property
    def client(self) -> Redis:
        """The client; for a URL, only between :meth:`start` and its exit."""
        if self._client is None:
            raise RuntimeError("the Redis connection is not started (start it with the desk)")
        return self._client

    async def start(self, exit_stack: AsyncExitStack) -> None:
        """Create the client if needed and ping the server (idempotent)."""
        if self._started:
            return
        _asyncio_loop()
        if self._client is None:
            from redis.asyncio import Redis

            assert self._url is not None
            pool = _bounded_pool_class().from_url(
                self._url,
                max_connections=self._max_connections,
                **self._options,
            )
            pool.wait_timeout = self._pool_timeout
            client = Redis.from_pool(pool)
            self._client = client
            lane = self._lane = _Lane(pool, min(_LANE_SIZE, self._max_connections))

            async def close() -> None:
                self._client = self._lane = None
                with anyio.CancelScope(shield=True):  # every socket, even when cancelled
                    try:
                        await lane.close()
                    finally:
                        await client.aclose()

            exit_stack.push_async_callback(close)
        with _backend_errors("PING"):
            await self.client.ping()
        self._started = True
        exit_stack.callback(setattr, self, "_started", False)

    async def command(self, *args: Any, repeated: bool = False) -> Any:
        """One command of the hot path (the rotation's ``LMOVE``, the
        publisher's batches), for commands whose reply redis-py passes
        through unchanged (no response callback).

        On a client built from a URL it goes on one of a few connections of
        this object's own (see :class:`_Lane`), past the client's and the
        pool's bookkeeping, or, every lane connection being busy, on a
        connection of the pool; a ready-made client (cluster or not) runs
        it with ``execute_command``.  ``repeated``: the same arguments (text
        and bytes) come again and again (``LMOVE`` of one ring): the lane
        packs them once.
        Driver errors are raised as they are (callers translate them to
        :class:`BackendError`).
        """
        lane = self._lane
        if lane is None:
            return await self.client.execute_command(*args)  # type: ignore[no-untyped-call]
        connection = lane.take()
        if connection is not None:
            try:
                return await lane.run(connection, args, repeated)
            finally:
                lane.give(connection)
        pool = self.client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            return await _command_on(connection, args, None)
        finally:
            await pool.release(connection)


_LANE_SIZE = 4
"""Connections of a :class:`_Lane` at most."""

_PACKED_MEMO_SIZE = 256

_deadline: Callable[[float], AbstractAsyncContextManager[None]] | None = getattr(
    asyncio, "timeout", None
)
"""``asyncio.timeout`` (Python 3.11 and later)."""


async def _command_on(connection: Any, args: Sequence[Any], packed: list[bytes] | None) -> Any:
    """Send one command on a connection (``packed``: already packed) and
    read its reply, under the connection's retry policy (as
    ``Redis.execute_command`` does)."""
    return await connection.retry.call_with_retry(
        lambda: _round_trip(connection, args, packed), lambda _error: connection.disconnect()
    )


async def _round_trip(connection: Any, args: Sequence[Any], packed: list[bytes] | None) -> Any:
    if packed is None:
        await connection.send_command(*args)
    else:
        await connection.send_packed_command(packed)
    return await connection.read_response()


async def _bounded_round_trip(
    connection: Any, args: Sequence[Any], packed: list[bytes] | None, seconds: float
) -> Any:
    assert _deadline is not None
    try:
        async with _deadline(seconds):
            return await _round_trip(connection, args, packed)
    except TimeoutError:
        from redis.exceptions import TimeoutError as RedisTimeoutError

        # (redis-py disconnected the connection when the deadline cut its
        # write or read short: a late reply cannot be read by the next one.)
        raise RedisTimeoutError(f"no reply to {args[0]} within {seconds} s") from None


async def _closed_or_dirty(connection: Any) -> bool:
    """Whether an idle connection has something to read: the server closed
    it, or bytes are waiting that no command asked for (the check the pool
    makes before handing a connection out)."""
    can_read = getattr(connection, "can_read", None) or connection.can_read_destructive
    try:
        return bool(await can_read())
    except (_redis_error(), OSError):
        return True


class _Lane:
    """A few connections for the hottest command, used one command at a time.

    redis-py's ``Redis.execute_command`` costs some 20 to 40 µs of CPU around
    each round trip (the pool's lock, observability hooks, a retry wrapper
    per command): as much as a third of an ``LMOVE``.  Here a command takes
    a free connection from a list, sends, reads and puts it back.  The
    connections are made by the client's pool (``make_connection``: same
    address, credentials, TLS, timeouts and retry policy) but are not in it;
    at most ``size`` exist, created on demand.  A connection a failure or a
    cancellation left half-used is disconnected by redis-py itself (its
    ``send_command`` / ``read_response`` do that) and reconnects on its next
    command.

    The pool's ``socket_timeout`` bounds each round trip as a whole, under
    one ``asyncio.timeout`` (Python 3.11 and later): redis-py puts each
    write under ``asyncio.wait_for``, which on Python 3.11 starts a task per
    command.  A round trip that outlasts it disconnects its connection and
    raises redis-py's ``TimeoutError``, as the client does.
    """

    def __init__(self, pool: Any, size: int) -> None:
        self._pool = pool
        self._size = size
        self._free: list[Any] = []
        self._made: list[Any] = []
        self._packed: dict[tuple[Any, ...], list[bytes]] = {}
        self.timeout: float | None = None
        """Seconds a round trip may take: the pool's ``socket_timeout``."""

    def packed(self, connection: Any, args: tuple[Any, ...]) -> list[bytes]:
        """``args`` packed for the wire, once (the lane's connections share
        their pool's encoder); a few hundred commands remembered at most."""
        packed = self._packed.get(args)
        if packed is None:
            if len(self._packed) >= _PACKED_MEMO_SIZE:
                self._packed.clear()
            packed = self._packed[args] = connection.pack_command(*args)
        return packed

    def take(self) -> Any:
        """A free connection, a new one, or None when ``size`` are busy."""
        if self._free:
            return self._free.pop()
        if len(self._made) >= self._size:
            return None
        connection = self._pool.make_connection()
        if _deadline is not None and connection.socket_timeout:
            # The timeout moves from each write and read to the round trip
            # (the connect timeout is a setting of its own, kept).
            self.timeout = connection.socket_timeout
            connection.socket_timeout = None
        self._made.append(connection)
        return connection

    async def run(self, connection: Any, args: tuple[Any, ...], repeated: bool) -> Any:
        """One command on a connection of this lane, under the connection's
        retry policy; the timeout bounds each attempt."""
        packed = self.packed(connection, args) if repeated else None
        if connection.is_connected and await _closed_or_dirty(connection):
            # Closed by the server while idle (its timeout, CLIENT KILL, a
            # restart): reconnect before sending, as the pool does.
            await connection.disconnect()
        timeout = self.timeout
        if timeout is None or _deadline is None:
            return await _command_on(connection, args, packed)
        return await connection.retry.call_with_retry(
            lambda: _bounded_round_trip(connection, args, packed, timeout),
            lambda _error: connection.disconnect(),
        )

    def give(self, connection: Any) -> None:
        self._free.append(connection)

    async def close(self) -> None:
        made, self._made, self._free = self._made, [], []
        for connection in made:
            with suppress(Exception):
                await connection.disconnect(nowait=True)


class _NeverRaised(Exception):
    """Stands for an exception the installed driver does not have."""


@functools.cache
def _bounded_pool_class() -> type[Any]:
    """redis-py's plain ``ConnectionPool``, but a command that finds every
    connection busy waits (up to ``wait_timeout`` seconds) for one to be
    released instead of failing with "Too many connections".

    Unlike ``BlockingConnectionPool``, which takes an ``asyncio.Condition``
    and arms a timeout for every command (about 25 µs per command), this
    costs nothing while a connection is free: it only waits when the pool is
    exhausted.  Built on the pool's public methods (``can_get_connection``,
    ``get_connection``, ``release``).
    """
    import redis.exceptions
    from redis.asyncio import ConnectionPool

    redis_connection_error = redis.exceptions.ConnectionError
    # redis-py >= 5.3 raises MaxConnectionsError when the pool is exhausted;
    # older ones take the connection without an await after the check.
    exhausted: type[BaseException] = getattr(redis.exceptions, "MaxConnectionsError", _NeverRaised)
    # redis-py < 5.3 requires a command name (unused) where newer ones
    # deprecate passing one.
    name = inspect.signature(ConnectionPool.get_connection).parameters.get("command_name")
    needs_name = name is not None and name.default is inspect.Parameter.empty

    class BoundedConnectionPool(ConnectionPool):
        wait_timeout: float | None = 20.0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._released: asyncio.Condition | None = None
            self._waiting = 0

        async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            if needs_name and not args:
                args = ("_",)
            deadline = None
            if self.wait_timeout is not None:
                deadline = asyncio.get_running_loop().time() + self.wait_timeout
            while True:
                if self.can_get_connection():
                    try:
                        # (redis-py < 5.3 passes the command name along.)
                        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
                    except exhausted:
                        pass  # taken by another task meanwhile: wait
                await self._wait(deadline)

        async def _wait(self, deadline: float | None) -> None:
            if self._released is None:
                self._released = asyncio.Condition()
            timeout = None
            if deadline is not None:
                timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            self._waiting += 1
            try:
                async with self._released:
                    await asyncio.wait_for(
                        self._released.wait_for(self.can_get_connection), timeout
                    )
            except asyncio.TimeoutError as error:
                raise redis_connection_error("No connection available.") from error
            finally:
                self._waiting -= 1

        async def release(self, connection: Any) -> None:
            await super().release(connection)
            if self._waiting and self._released is not None:
                # Every waiter re-checks (one woken then cancelled must not
                # swallow the wake-up); shielded so a cancelled release
                # still wakes them.
                with anyio.CancelScope(shield=True):
                    async with self._released:
                        self._released.notify_all()

    return BoundedConnectionPool


def _connection(value: Redis | str | RedisConnection) -> RedisConnection:
    return value if isinstance(value, RedisConnection) else RedisConnection(value)


class _RedisPort(Port):
    def __init__(self, client: Redis | str | RedisConnection, prefix: str) -> None:
        self.connection = _connection(client)
        self.keys = RedisKeys(prefix)
        self._scripts: dict[str, tuple[Redis, AsyncScript]] = {}

    async def start(self, exit_stack: AsyncExitStack) -> None:
        await self.connection.start(exit_stack)

    @property
    def client(self) -> Redis:
        return self.connection.client

    async def _script(self, source: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        """Run a Lua script (EVALSHA, loading it when the server lacks it)."""
        client = self.client
        cached = self._scripts.get(source)
        if cached is None or cached[0] is not client:
            cached = (client, client.register_script(source))
            self._scripts[source] = cached
        return await cached[1](keys=list(keys), args=list(args))  # type: ignore[arg-type]


# ------------------------------------------------------------------ rotation

_ROTATION_ADD = """
if redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
"""

_ROTATION_REPLACE = """
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return #ARGV
"""


_ROTATION_GIVE_BACK = """
if redis.call('LREM', KEYS[1], 0, ARGV[1]) > 0 then redis.call('LPUSH', KEYS[1], ARGV[1]) end
return 0
"""


class RedisRotation(_RedisPort, Rotation):
    """The round-robin rings in Redis lists (asyncio only).

    ``next`` is a single ``LMOVE key key LEFT RIGHT``: the head moves to the
    tail and is returned, atomically on the server, so any number of
    processes share one strict rotation.
    """

    def __init__(
        self, client: Redis | str | RedisConnection, *, prefix: str = DEFAULT_PREFIX
    ) -> None:
        super().__init__(client, prefix)
        self._ring_keys: dict[str, str] = {}

    async def add(self, customer_type: str, executive_id: str) -> None:
        with _backend_errors("rotation add"):
            await self._script(_ROTATION_ADD, [self.keys.rotation(customer_type)], [executive_id])

    async def remove(self, customer_type: str, executive_id: str) -> None:
        with _backend_errors("rotation remove"):
            await self.client.lrem(self.keys.rotation(customer_type), 0, executive_id)

    async def next(self, customer_type: str) -> str | None:
        key = self._ring_keys.get(customer_type)
        if key is None:
            key = self._ring_keys[customer_type] = self.keys.rotation(customer_type)
        with _backend_errors("rotation next"):
            head = await self.connection.command("LMOVE", key, key, "LEFT", "RIGHT", repeated=True)
        return None if head is None else _text(head)

    async def give_back(self, customer_type: str, executive_id: str) -> None:
        with _backend_errors("rotation give back"):
            await self._script(
                _ROTATION_GIVE_BACK, [self.keys.rotation(customer_type)], [executive_id]
            )

    async def members(self, customer_type: str) -> Sequence[str]:
        with _backend_errors("rotation members"):
            ring = await self.client.lrange(self.keys.rotation(customer_type), 0, -1)
        return [_text(member) for member in ring]

    async def replace(self, customer_type: str, executive_ids: Sequence[str]) -> None:
        unique = list(dict.fromkeys(executive_ids))
        with _backend_errors("rotation replace"):
            await self._script(_ROTATION_REPLACE, [self.keys.rotation(customer_type)], unique)


# --------------------------------------------------------------- dedup, lock

# ARGV: value, now_ms, expires_ms, gc_ttl_ms.  A value without a leading
# "{ms}:" (e.g. the seed's "1") is held until Redis expires it.
_CLOCK_SET_IF_EXPIRED = """
local current = redis.call('GET', KEYS[1])
if current then
  local expires = string.match(current, '^(%-?%d+):')
  if expires == nil or tonumber(expires) > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3] .. ':' .. ARGV[1], 'PX', ARGV[4])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# ARGV: token, now_ms
_CLOCK_RELEASE = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local expires, token = string.match(current, '^(%-?%d+):(.*)$')
if token == ARGV[1] and tonumber(expires) > tonumber(ARGV[2]) then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class _Expiring(_RedisPort):
    """Set-if-absent keys expiring on the server's clock, or on ``clock``."""

    def __init__(
        self, client: Redis | str | RedisConnection, prefix: str, clock: Clock | None
    ) -> None:
        super().__init__(client, prefix)
        self.clock = clock

    async def _set_if_absent(self, key: str, value: str, ttl: timedelta) -> bool:
        if self.clock is None:
            return bool(await self.client.set(key, value, nx=True, px=_ms(ttl)))
        now = self.clock.now()
        args = (value, _epoch_ms(now), _epoch_ms(now + ttl), _ms(ttl + _GC_GRACE))
        return bool(await self._script(_CLOCK_SET_IF_EXPIRED, [key], args))


class RedisAlertDedup(_Expiring, AlertDedup):
    """SLA alert dedup keys (asyncio only): ``SET key 1 NX PX ttl``.

    The key is the one the SLA service gives (the seed's
    ``sla::alerted::{chat_id}::{alert_type}``) behind ``prefix`` (default
    none, so an existing Smart Chat V2 deployment's keys are the same).
    ``clock``: see :func:`redis_ports`.
    """

    def __init__(
        self,
        client: Redis | str | RedisConnection,
        *,
        prefix: str = "",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(client, DEFAULT_PREFIX, clock)
        self.prefix = prefix

    async def claim(self, key: str, ttl: timedelta) -> bool:
        with _backend_errors("dedup claim"):
            return await self._set_if_absent(self.prefix + key, "1", ttl)

    async def release(self, key: str) -> None:
        with _backend_errors("dedup release"):
            await self.client.delete(self.prefix + key)


class RedisLock(_Expiring, Lock):
    """Leases across processes (asyncio only): ``SET {P}:lock:{name} token NX
    PX ttl``; release is a compare-and-delete script, so a process never
    deletes a lease someone else holds (e.g. after its own expired).
    ``clock``: see :func:`redis_ports`."""

    def __init__(
        self,
        client: Redis | str | RedisConnection,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(client, prefix, clock)

    async def acquire(self, name: str, token: str, ttl: timedelta) -> bool:
        with _backend_errors("lock acquire"):
            return await self._set_if_absent(self.keys.lock(name), token, ttl)

    async def release(self, name: str, token: str) -> bool:
        key = self.keys.lock(name)
        with _backend_errors("lock release"):
            if self.clock is None:
                released = await self._script(_RELEASE, [key], [token])
            else:
                now = _epoch_ms(self.clock.now())
                released = await self._script(_CLOCK_RELEASE, [key], [token, now])
        return bool(released)


# -------------------------------------------------------------------- events


@attrs.frozen
class _Sequenced(Event):
    """An event as the listener hands it to the local fan-out: with its
    position in the channel, so a subscription can skip what came before it."""

    seq: int = 0

    def unwrap(self) -> Event:
        return Event(self.name, self.payload, self.rooms, self.occurred_at)


@attrs.define(eq=False)
class _Pending:
    """A subscription waiting for its barrier to come back through the channel."""

    arrived: anyio.Event = attrs.field(factory=anyio.Event)
    seq: int = 0


class _Subscription(AsyncIterator[Event]):
    """The events of one subscription: those after its barrier."""

    def __init__(self, stream: AsyncIterator[Event], after: int) -> None:
        self._stream = stream
        self._after = after

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            event = await self._stream.__anext__()
            if not isinstance(event, _Sequenced):
                return event  # this process's own event, delivered at publish
            if event.seq > self._after:
                return event.unwrap()

    async def receive(self) -> Event:
        """The next event (like a memory object stream's ``receive``)."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise anyio.EndOfStream from None


def _json(value: object) -> object:
    """Sets in a payload (not JSON) go out as sorted lists."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"an event payload holds a {type(value).__name__}, which is not JSON")


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json)
"""One encoder for every message (``json.dumps`` with options builds one a call)."""


def _stdlib_encode(document: object) -> bytes:
    return _ENCODER.encode(document).encode()


def _pick_encoder() -> Callable[[object], bytes]:
    """orjson when it is installed (the ``redis`` extra brings it: about ten
    times faster on an event), else the standard library; same JSON, UTF-8."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is in the redis extra
        return _stdlib_encode
    dumps = orjson.dumps

    def encode(document: object) -> bytes:
        return dumps(document, default=_json)

    return encode


_encode = _pick_encoder()


_PUBLISH_ALL = """
for i = 2, #ARGV do redis.call('PUBLISH', ARGV[1], ARGV[i]) end
return #ARGV - 1
"""
"""A batch of events in one call, each its own PUBLISH (ARGV: channel, messages)."""


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _is_cluster(client: object) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task and wait for its end (shielded)."""
    if task is None:
        return
    with anyio.CancelScope(shield=True):
        while not task.done():
            # Repeated: a driver's asyncio.wait_for (Python < 3.12) can
            # swallow a cancellation that races with a wake-up.
            task.cancel()
            await asyncio.wait([task], timeout=0.1)
    if not task.cancelled() and task.exception() is not None:  # pragma: no cover
        logger.error("a Redis event task failed", exc_info=task.exception())


async def _aclose_quietly(pubsub: PubSub) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        except Exception:  # the connection is being dropped anyway
            logger.debug("closing the Redis pub/sub connection failed", exc_info=True)


class RedisEventPublisher(EventPublisher):
    """Events over Redis pub/sub (asyncio only), so a subscriber in any
    process sees every process's events.

    **Publishing never waits for Redis.**  :meth:`publish` hands the event at
    once to this process's subscribers (room filtering, a
    :class:`~smartchat_core.adapters.memory.MemoryEventPublisher`: each
    subscriber has a buffer of ``buffer_size`` events; one that does not
    keep up loses events, counted in :attr:`dropped`, instead of slowing
    anyone down) and queues it for Redis.  A background sender (an asyncio
    task started by :meth:`start`) sends the queue in batches: it lets
    events gather for ``batch_delay`` seconds (less when :meth:`flush` is
    called or ``batch_size`` events wait), then sends up to
    ``batch_size`` of them in one round trip, in publish order, on the
    channel ``{prefix}:events``: :meth:`Event.to_json` as JSON with this
    publisher's :attr:`origin` as first field.  A batch is one ``EVAL`` of
    a script that runs one ``PUBLISH`` an event (redis-py parses one reply
    instead of one an event); where scripts are refused, a pipeline of
    ``PUBLISH`` commands; on Redis Cluster, whose pipelines refuse
    ``PUBLISH``, one command after the other.  :meth:`flush` waits until what was
    published so far is on Redis; the exit stack flushes (for up to
    ``flush_timeout`` seconds) before stopping.

    Delivery is best-effort, as pub/sub always is: a Redis failure never
    reaches the caller of ``publish``.  While Redis is unreachable, events
    wait in the queue (``queue_size`` events at most; beyond that the oldest
    are dropped, counted in :attr:`queue_dropped`, with one warning an
    outage) and go out when it answers again; the part of a batch not
    confirmed when a connection broke is sent again, so a few events can
    reach the other processes twice around an outage.

    A background listener (an asyncio task of its own) runs while this
    process has at least one subscription (:attr:`connected`): it receives
    the channel and fans the other processes' events out to the local
    subscribers.  It recognises this publisher's own messages by their first
    bytes and skips them undecoded (they were delivered at publish).  A
    process without subscriptions does not receive the channel at all.
    While disconnected, the listener retries with a growing delay (up to
    ``reconnect_max_delay`` seconds); what other processes publish meanwhile
    is lost to it.

    Entering :meth:`subscribe` costs one round trip through the channel (a
    barrier message; two for the first subscription, which subscribes to
    the channel): the subscription sees exactly the events of other
    processes that Redis received after it, and every event this process
    publishes from the moment ``subscribe`` is entered.  Events of this
    process reach its subscribers before Redis has them, so between
    processes only each publisher's own order is kept.
    """

    def __init__(
        self,
        client: Redis | str | RedisConnection,
        *,
        prefix: str = DEFAULT_PREFIX,
        buffer_size: int = 1000,
        subscribe_timeout: float = 10.0,
        reconnect_max_delay: float = 2.0,
        queue_size: int = 10_000,
        batch_size: int = 500,
        batch_delay: float = 0.02,
        flush_timeout: float = 5.0,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        if batch_delay < 0 or flush_timeout < 0:
            raise ValueError("batch_delay and flush_timeout must not be negative")
        self.connection = _connection(client)
        self.channel = RedisKeys(prefix).events
        self.subscribe_timeout = subscribe_timeout
        self.reconnect_max_delay = reconnect_max_delay
        self.queue_size = queue_size
        """Events waiting for Redis at most; beyond, the oldest are dropped."""
        self.batch_size = batch_size
        """Events sent in one batch (one round trip) at most."""
        self.batch_delay = batch_delay
        """Seconds the sender lets events gather after the first one of a batch."""
        self.flush_timeout = flush_timeout
        """Seconds the exit waits for queued events to reach Redis."""
        self.origin = uuid.uuid4().hex
        """This publisher's id, the first field of each of its messages."""
        self._head = '{"origin":"' + self.origin + '",'
        self._head_bytes = self._head.encode()
        self._local = MemoryEventPublisher(buffer_size=buffer_size)
        self._pending: dict[str, _Pending] = {}
        self._subscriptions = 0
        self._seq = 0
        self._running = False
        self._listener: asyncio.Task[None] | None = None
        self._listening: asyncio.Lock | None = None
        self._sender: asyncio.Task[None] | None = None
        # (number, message): events numbered in publish order; the sender's
        # batch in flight came from the front of the queue.
        self._queue: deque[tuple[int, bytes]] = deque()
        self._batch: list[tuple[int, bytes]] = []
        self._queued = 0
        self._wake: asyncio.Event | None = None
        self._gathering: asyncio.Future[None] | None = None
        self._idle = False
        self._batch_sent = 0
        self._script_batches = True
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._failing = False
        self._overflow_warned = False
        self.connected = False
        """Whether the listener is subscribed right now (it runs only while
        this process has a subscription)."""
        self.reconnects = 0
        """How many times the listener re-subscribed after losing its connection."""
        self.sent = 0
        """Events sent to Redis."""
        self.batches = 0
        """Batches sent (:attr:`sent` / :attr:`batches` is the mean batch)."""
        self.send_errors = 0
        """Failed batches (each is sent again after a growing delay)."""
        self.queue_dropped = 0
        """Events never sent to Redis: the oldest of a full queue, while Redis
        was unreachable or slower than the publishers."""

    @property
    def dropped(self) -> int:
        """Events not delivered to local subscribers that did not keep up."""
        return self._local.dropped

    @property
    def queued(self) -> int:
        """Events published here and not on Redis yet (queued or in flight)."""
        return len(self._queue) + len(self._batch)

    @property
    def _done(self) -> int:
        """Every event numbered below this one was sent or dropped."""
        if self._batch:
            return self._batch[0][0]
        return self._queue[0][0] if self._queue else self._queued

    # ----------------------------------------------------------------- lifecycle
    async def start(self, exit_stack: AsyncExitStack) -> None:
        """Connect (PING) and start the sender; the exit stack flushes the
        queue (up to ``flush_timeout`` seconds) and stops the sender and the
        listener.

        The sender and the listener are tasks of their own, not of the
        caller's task group: ``start`` and the exit may run in different
        tasks (the blocking :class:`~smartchat_core.SmartChat` enters and
        exits through its portal), and the caller's exceptions pass through
        unchanged.  Events published before ``start`` wait in the queue.
        """
        if self._sender is not None:
            raise RuntimeError("this RedisEventPublisher is already started")
        loop = _asyncio_loop()
        await self.connection.start(exit_stack)
        self._running = True
        self._wake = asyncio.Event()
        self._idle = False
        self._listening = asyncio.Lock()
        self._sender = loop.create_task(self._send(), name=f"smartchat redis sender {self.channel}")
        exit_stack.push_async_callback(self._stop)

    async def _stop(self) -> None:
        self._running = False
        if self.queued and self._sender is not None and not self._sender.done():
            with anyio.move_on_after(self.flush_timeout, shield=True):
                await self._sent_through(self._queued)
            if self.queued:
                logger.warning(
                    "Redis event publisher: %d events not sent within %s s of stopping",
                    self.queued,
                    self.flush_timeout,
                )
        sender, self._sender = self._sender, None
        with anyio.CancelScope(shield=True):
            await _cancel(sender)
            await self._stop_listener()
        self._wake = None
        self._idle = False
        self._listening = None
        self._failing = False
        self._wake_waiters(stopped=True)

    # ----------------------------------------------------------------- listener
    async def _start_listener(self) -> None:
        """Listen to the channel (for this process's first subscription)."""
        assert self._listening is not None
        async with self._listening:
            if self._listener is not None and not self._listener.done():
                return
            pubsub = await self._open_pubsub()
            self.connected = True
            self._listener = _asyncio_loop().create_task(
                self._listen(pubsub), name=f"smartchat redis listener {self.channel}"
            )

    async def _stop_listener(self, *, unless_subscribed: bool = False) -> None:
        """Stop listening (no subscription left here, or the publisher stops)."""
        with anyio.CancelScope(shield=True):
            if self._listening is None:
                return
            async with self._listening:
                if unless_subscribed and self._subscriptions:
                    return
                listener, self._listener = self._listener, None
                await _cancel(listener)
                self._flush_pending()
                self.connected = False

    async def _open_pubsub(self) -> PubSub:
        pubsub = self.connection.client.pubsub()
        try:
            with _backend_errors("SUBSCRIBE"):
                await pubsub.subscribe(self.channel)
                # Wait for the confirmation: what is published from now on
                # reaches this connection.
                with anyio.fail_after(self.subscribe_timeout):
                    while True:
                        message = await pubsub.get_message(timeout=self.subscribe_timeout)
                        if message is not None and message.get("type") == "subscribe":
                            break
        except BaseException:
            await _aclose_quietly(pubsub)
            raise
        return pubsub

    async def _listen(self, pubsub: PubSub | None) -> None:
        delay = 0.05
        try:
            while True:
                if pubsub is None:
                    try:
                        pubsub = await self._open_pubsub()
                    except BackendError as exc:
                        logger.debug("Redis event listener: still disconnected (%s)", exc)
                        await anyio.sleep(delay)
                        delay = min(delay * 2, self.reconnect_max_delay)
                        continue
                    logger.warning("Redis event listener: subscribed again to %s", self.channel)
                    self.connected = True
                    self.reconnects += 1
                    delay = 0.05
                    self._flush_pending()
                try:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                except Exception as exc:
                    logger.warning(
                        "Redis event listener lost its connection (%s); reconnecting", exc
                    )
                    self.connected = False
                    await _aclose_quietly(pubsub)
                    pubsub = None
                    continue
                if message is not None and message.get("type") == "message":
                    await self._on_message(message["data"])
        finally:
            self.connected = False
            if pubsub is not None:
                await _aclose_quietly(pubsub)

    async def _on_message(self, data: object) -> None:
        self._seq += 1
        if isinstance(data, bytes):
            if data.startswith(self._head_bytes):
                return  # our own: delivered when published
        elif isinstance(data, str) and data.startswith(self._head):
            return  # (a client with decode_responses=True)
        try:
            document = json.loads(_text(data))
            if isinstance(document, dict) and "barrier" in document:
                pending = self._pending.get(str(document["barrier"]))
                if pending is not None and not pending.arrived.is_set():
                    pending.seq = self._seq
                    pending.arrived.set()
                return
            event = Event.from_json(document)
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.warning("ignoring a malformed message on %s: %.200r", self.channel, data)
            return
        sequenced = _Sequenced(event.name, event.payload, event.rooms, event.occurred_at, self._seq)
        await self._local.publish(sequenced)

    def _flush_pending(self) -> None:
        """Barriers lost with a connection: let their subscriptions start now."""
        for pending in self._pending.values():
            if not pending.arrived.is_set():
                pending.seq = self._seq
                pending.arrived.set()

    # ------------------------------------------------------------------- sender
    def _enqueue(self, data: bytes) -> None:
        queue = self._queue
        if len(queue) >= self.queue_size:
            queue.popleft()
            self._dropped_oldest(1)
        queue.append((self._queued, data))
        self._queued += 1
        if len(queue) >= self.batch_size or len(queue) >= self.queue_size:
            self._hurry()
        if self._idle:
            self._idle = False
            assert self._wake is not None
            self._wake.set()

    def _dropped_oldest(self, count: int) -> None:
        self.queue_dropped += count
        if not self._overflow_warned:
            self._overflow_warned = True
            logger.warning(
                "Redis event publisher: the queue is full (%d events; Redis unreachable or "
                "too slow): dropping the oldest events (see queue_dropped)",
                self.queue_size,
            )
        if self._waiters:
            self._wake_waiters()

    async def _gather_batch(self) -> None:
        """Let events gather for ``batch_delay`` seconds; cut short by a
        flush or a full batch (see :meth:`_hurry`)."""
        loop = asyncio.get_running_loop()
        gathering = self._gathering = loop.create_future()
        timer = loop.call_later(self.batch_delay, _settle, gathering)
        try:
            await gathering
        finally:
            timer.cancel()
            self._gathering = None

    def _hurry(self) -> None:
        """End the sender's gathering now (someone waits, or a batch is full)."""
        gathering = self._gathering
        if gathering is not None:
            _settle(gathering)

    async def _send(self) -> None:
        """The sender task: the queue to Redis, a pipeline a batch, in order."""
        wake = self._wake
        assert wake is not None
        queue = self._queue
        delay = 0.05
        while True:
            if not queue:
                wake.clear()
                self._idle = True
                await wake.wait()
            if self.batch_delay and len(queue) < self.batch_size and not self._waiters:
                await self._gather_batch()
            batch = self._batch = [queue.popleft() for _ in range(min(len(queue), self.batch_size))]
            self._batch_sent = 0
            try:
                await self._send_batch(batch)
            except Exception as exc:  # RedisError, OSError, or the client is gone
                self.send_errors += 1
                self._requeue(batch)  # what did not go out is sent again, first
                excess = len(queue) - self.queue_size
                if excess > 0:
                    for _ in range(excess):
                        queue.popleft()
                    self._dropped_oldest(excess)
                if not self._failing:
                    self._failing = True
                    logger.warning(
                        "Redis event publisher: PUBLISH failed (%s); events wait in the queue "
                        "(up to %d) and go out when Redis answers",
                        exc,
                        self.queue_size,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_delay)
                continue
            except BaseException:  # cancelled: the rest of the batch stays queued
                self._requeue(batch)
                raise
            self._batch = []
            self.sent += len(batch)
            self.batches += 1
            delay = 0.05
            if self._failing:
                self._failing = False
                logger.warning("Redis event publisher: PUBLISH works again")
            if not queue:
                self._overflow_warned = False
            if self._waiters:
                self._wake_waiters()

    async def _send_batch(self, batch: list[tuple[int, bytes]]) -> None:
        client = self.connection.client
        if _is_cluster(client):
            # A cluster pipeline refuses PUBLISH: one command after the other.
            for _, data in batch:
                await client.publish(self.channel, data)
                self._batch_sent += 1
            return
        if self._script_batches:
            # One EVAL: one reply to parse instead of one per event (a
            # pipeline costs redis-py some 12 µs of CPU an event).
            from redis.exceptions import ResponseError

            try:
                await self.connection.command(
                    "EVAL", _PUBLISH_ALL, 0, self.channel, *[data for _, data in batch]
                )
                return
            except ResponseError as exc:  # scripting refused (ACL...): pipelines from now on
                self._script_batches = False
                logger.warning(
                    "Redis event publisher: EVAL refused (%s); sending pipelines instead", exc
                )
        pipe = client.pipeline(transaction=False)
        for _, data in batch:
            pipe.publish(self.channel, data)
        await pipe.execute()

    def _requeue(self, batch: list[tuple[int, bytes]]) -> None:
        """A batch cut short: count what went out, queue the rest first again."""
        done = self._batch_sent
        self.sent += done
        self._batch = []
        self._queue.extendleft(reversed(batch[done:]))

    def _wake_waiters(self, *, stopped: bool = False) -> None:
        done = self._done
        waiting = []
        for target, future in self._waiters:
            if future.done():
                continue
            if done >= target:
                future.set_result(None)
            elif stopped:
                future.set_exception(RuntimeError("the RedisEventPublisher stopped"))
            else:
                waiting.append((target, future))
        self._waiters = waiting

    async def _sent_through(self, target: int) -> None:
        if self._done >= target:
            return
        if self._sender is None or self._sender.done():
            raise RuntimeError("start the RedisEventPublisher (start the desk) to send its events")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._hurry()
        await future

    async def flush(self) -> None:
        """Wait until every event published so far was sent to Redis (or,
        the queue being full meanwhile, dropped).

        It waits as long as Redis is unreachable: bound it with
        ``anyio.fail_after`` if needed.  Raises :class:`RuntimeError` when
        events wait and the publisher is not started (or stops meanwhile).
        """
        await self._sent_through(self._queued)

    # ----------------------------------------------------------------- the port
    async def publish(self, event: Event) -> None:
        """Deliver to this process's subscribers and queue for Redis; never
        waits for Redis and never raises for it (best-effort, see the class).
        A payload that is not JSON raises :class:`TypeError`."""
        data = self._head_bytes + _encode(event.to_json())[1:]
        if self._subscriptions:
            await self._local.publish(event)
        self._enqueue(data)

    async def _publish_now(self, document: dict[str, Any]) -> None:
        data = _encode(document)
        with _backend_errors("PUBLISH"):
            await self.connection.client.publish(self.channel, data)

    def subscribe(self, rooms: Iterable[str]) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        return self._subscribe(frozenset(rooms))

    @asynccontextmanager
    async def _subscribe(self, rooms: frozenset[str]) -> AsyncIterator[AsyncIterator[Event]]:
        if not self._running:
            raise RuntimeError("start the RedisEventPublisher (start the desk) before subscribing")
        async with self._local.subscribe(rooms) as stream:
            self._subscriptions += 1
            try:
                if rooms:
                    await self._start_listener()
                    after = await self._barrier()
                else:
                    after = self._seq
                yield _Subscription(stream, after)
            finally:
                self._subscriptions -= 1
                if not self._subscriptions:
                    await self._stop_listener(unless_subscribed=True)

    async def _barrier(self) -> int:
        """Send a marker through the channel and wait for it: the position
        from which this process's listener delivers to a new subscription."""
        barrier = uuid.uuid4().hex
        pending = self._pending[barrier] = _Pending()
        try:
            await self._publish_now({"barrier": barrier})
            with anyio.move_on_after(self.subscribe_timeout):
                await pending.arrived.wait()
            if not pending.arrived.is_set():
                raise BackendError(
                    f"Redis: no answer on {self.channel} within {self.subscribe_timeout} s"
                )
            return pending.seq
        finally:
            del self._pending[barrier]


# -------------------------------------------------------------- composition


class RedisPorts(TypedDict):
    """The ports :func:`redis_ports` builds, by their :class:`Ports` names."""

    rotation: RedisRotation
    dedup: RedisAlertDedup
    lock: RedisLock
    publisher: RedisEventPublisher


def redis_ports(
    client_or_url: Redis | str | RedisConnection,
    *,
    settings: Settings,
    clock: Clock,
    prefix: str | None = None,
    dedup_prefix: str = "",
    virtual_time: bool | None = None,
    **client_options: Any,
) -> RedisPorts:
    """Rotation, dedup, lock and publisher on one Redis client (asyncio only),
    ready to go into :class:`~smartchat_core.services.Ports`::

        ports = attrs.evolve(memory_ports(settings, clock, sender),
                             **redis_ports("redis://localhost:6379/0",
                                           settings=settings, clock=clock))

    Args:
        client_or_url: a ``redis.asyncio.Redis`` (kept open: you close it), a
            ``redis://`` / ``rediss://`` / ``unix://`` URL (the client is
            created when the desk starts and closed when it stops), or a
            :class:`RedisConnection`.
        settings: ``redis_prefix`` is the default ``prefix``.
        clock: the desk's clock.
        prefix: key prefix and hash tag of the rotation and lock keys, and
            of the ``{prefix}:events`` channel.
        dedup_prefix: put before the seed's dedup keys (default none).
        virtual_time: whether dedup windows and leases expire on ``clock``
            (scripts comparing the stored expiry with ``clock.now()``) rather
            than on the Redis server's clock (``SET NX PX``).  Default: on
            for any clock but the system clock, so tests and simulations on a
            ``ManualClock`` behave as on the in-memory backend, while
            production uses the server's expiry (immune to clock skew
            between app hosts).
        client_options: for a URL, options of :class:`RedisConnection`
            (``max_connections``, ``pool_timeout``, ``socket_timeout``...).
    """
    connection = (
        client_or_url
        if isinstance(client_or_url, RedisConnection)
        else RedisConnection(client_or_url, **client_options)
    )
    prefix = settings.redis_prefix if prefix is None else prefix
    if virtual_time is None:
        virtual_time = not isinstance(clock, SystemClock)
    expiry_clock = clock if virtual_time else None
    return RedisPorts(
        rotation=RedisRotation(connection, prefix=prefix),
        dedup=RedisAlertDedup(connection, prefix=dedup_prefix, clock=expiry_clock),
        lock=RedisLock(connection, prefix=prefix, clock=expiry_clock),
        publisher=RedisEventPublisher(connection, prefix=prefix),
    )
