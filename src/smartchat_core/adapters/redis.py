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
    <P>:events                         channel  every event, as JSON (pub/sub)

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
  ``LRANGE``, ``replace`` a script (``DEL`` + ``RPUSH``).  A ring that Redis
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
* Events: ``publish`` is one ``PUBLISH`` of :meth:`Event.to_json` on
  ``<P>:events``.  Each publisher runs one background listener (a task of
  its own, started by ``start`` and cancelled on exit) subscribed to the
  channel, which fans events out to this process's subscribers with room
  filtering, so a WebSocket served by any process sees every process's
  events.  A new subscription sees exactly what Redis received after it (a
  barrier message through the channel).  The listener reconnects by itself
  after a connection loss (events published meanwhile are lost: pub/sub
  does not store them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
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


@contextmanager
def _backend_errors(what: str) -> Iterator[None]:
    """Translate driver failures into :class:`BackendError`."""
    from redis.exceptions import RedisError

    try:
        yield
    except (RedisError, OSError) as exc:
        raise BackendError(f"Redis {what} failed: {exc}") from exc


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

    A client built from a URL uses a ``BlockingConnectionPool`` of
    ``max_connections`` connections: a burst of concurrent commands waits
    up to ``pool_timeout`` seconds for a free connection instead of failing
    (redis-py's default pool raises "Too many connections" beyond its size;
    give a ready-made client a blocking pool too).  ``client_options`` go to
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
            from redis.asyncio import BlockingConnectionPool, Redis

            assert self._url is not None
            pool = BlockingConnectionPool.from_url(
                self._url,
                max_connections=self._max_connections,
                timeout=self._pool_timeout,
                **self._options,
            )
            client = Redis.from_pool(pool)
            self._client = client

            async def close() -> None:
                self._client = None
                await client.aclose()

            exit_stack.push_async_callback(close)
        with _backend_errors("PING"):
            await self.client.ping()
        self._started = True
        exit_stack.callback(setattr, self, "_started", False)


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

    async def add(self, customer_type: str, executive_id: str) -> None:
        with _backend_errors("rotation add"):
            await self._script(_ROTATION_ADD, [self.keys.rotation(customer_type)], [executive_id])

    async def remove(self, customer_type: str, executive_id: str) -> None:
        with _backend_errors("rotation remove"):
            await self.client.lrem(self.keys.rotation(customer_type), 0, executive_id)

    async def next(self, customer_type: str) -> str | None:
        key = self.keys.rotation(customer_type)
        with _backend_errors("rotation next"):
            head = await self.client.lmove(key, key, "LEFT", "RIGHT")
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
                return event
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


async def _aclose_quietly(pubsub: PubSub) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        except Exception:  # the connection is being dropped anyway
            logger.debug("closing the Redis pub/sub connection failed", exc_info=True)


class RedisEventPublisher(EventPublisher):
    """Events over Redis pub/sub (asyncio only), so a subscriber in any
    process sees every process's events.

    ``publish`` sends the event as JSON on the channel ``{prefix}:events``.
    One background listener per publisher (an asyncio task started by
    :meth:`start`, cancelled when its exit stack closes) receives the channel and fans the
    events out to local subscribers with room filtering (a
    :class:`~smartchat_core.adapters.memory.MemoryEventPublisher`: each
    subscriber has a buffer of ``buffer_size`` events; a subscriber that does
    not keep up loses events, counted in :attr:`dropped`, instead of slowing
    anyone down).

    Entering :meth:`subscribe` costs one round trip through the channel (a
    barrier message): the subscription sees exactly the events that Redis
    received after it, from every process.  While the listener is
    disconnected it retries with a growing delay (up to
    ``reconnect_max_delay`` seconds); events published meanwhile are lost.
    """

    def __init__(
        self,
        client: Redis | str | RedisConnection,
        *,
        prefix: str = DEFAULT_PREFIX,
        buffer_size: int = 1000,
        subscribe_timeout: float = 10.0,
        reconnect_max_delay: float = 2.0,
    ) -> None:
        self.connection = _connection(client)
        self.channel = RedisKeys(prefix).events
        self.subscribe_timeout = subscribe_timeout
        self.reconnect_max_delay = reconnect_max_delay
        self._local = MemoryEventPublisher(buffer_size=buffer_size)
        self._pending: dict[str, _Pending] = {}
        self._seq = 0
        self._running = False
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        """Whether the listener is subscribed right now."""
        self.reconnects = 0
        """How many times the listener re-subscribed after losing its connection."""

    @property
    def dropped(self) -> int:
        """Events not delivered to local subscribers that did not keep up."""
        return self._local.dropped

    # ----------------------------------------------------------------- lifecycle
    async def start(self, exit_stack: AsyncExitStack) -> None:
        """Connect, subscribe (the channel is listened to when this returns)
        and start the listener; the exit stack stops it.

        The listener is a task of its own, not one of the caller's task
        group: ``start`` and the exit may run in different tasks (the
        blocking :class:`~smartchat_core.SmartChat` enters and exits through
        its portal), and the caller's exceptions pass through unchanged.
        """
        if self._task is not None:
            raise RuntimeError("this RedisEventPublisher is already started")
        loop = _asyncio_loop()
        await self.connection.start(exit_stack)
        pubsub = await self._open_pubsub()
        self._running = True
        self.connected = True
        self._task = loop.create_task(
            self._listen(pubsub), name=f"smartchat redis listener {self.channel}"
        )
        exit_stack.push_async_callback(self._stop)

    async def _stop(self) -> None:
        task, self._task = self._task, None
        self._running = False
        self._flush_pending()
        if task is None:
            return
        with anyio.CancelScope(shield=True):
            while not task.done():
                # Repeated: a driver's asyncio.wait_for (Python < 3.12) can
                # swallow a cancellation that races with a wake-up.
                task.cancel()
                await asyncio.wait([task], timeout=0.1)
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover
            logger.error("the Redis event listener failed", exc_info=task.exception())
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

    # ----------------------------------------------------------------- the port
    async def publish(self, event: Event) -> None:
        await self._publish(event.to_json())

    async def _publish(self, document: dict[str, Any]) -> None:
        data = json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=_json)
        with _backend_errors("PUBLISH"):
            await self.connection.client.publish(self.channel, data)

    def subscribe(self, rooms: Iterable[str]) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        return self._subscribe(frozenset(rooms))

    @asynccontextmanager
    async def _subscribe(self, rooms: frozenset[str]) -> AsyncIterator[AsyncIterator[Event]]:
        if not self._running:
            raise RuntimeError("start the RedisEventPublisher (start the desk) before subscribing")
        async with self._local.subscribe(rooms) as stream:
            after = await self._barrier() if rooms else self._seq
            yield _Subscription(stream, after)

    async def _barrier(self) -> int:
        """Send a marker through the channel and wait for it: the position
        from which this process's listener delivers to a new subscription."""
        barrier = uuid.uuid4().hex
        pending = self._pending[barrier] = _Pending()
        try:
            await self._publish({"barrier": barrier})
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
