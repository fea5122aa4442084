"""MongoDB adapters (pymongo): chats (and the counters computed from them), executives, ratings,
the resolve log, and -- for a MongoDB-only deployment -- the round-robin
rotation, SLA alert dedup and the monitors' lock.

pymongo is imported only inside functions: importing this module needs no
driver and connects nowhere.  Build the ports with :func:`mongo_ports`.

Drivers: one adapter, two facades
=================================

The adapter logic is written once, as coroutines over a tiny internal async
collection facade (:class:`_Db` / :class:`_Coll`) with two implementations:

* :class:`_ThreadedDb` wraps a **synchronous** client (``pymongo.MongoClient``
  or ``mongomock.MongoClient``) and runs each blocking call in a worker thread
  (``anyio.to_thread.run_sync``), so the same code runs under asyncio *and*
  trio, and mongomock runs exactly the code production runs.  Calls are not
  abandoned on cancellation: a write in flight completes, so the adapter
  never loses track of what it wrote.  mongomock is not thread-safe, so its
  calls are serialised by a lock.
* :class:`_AsyncDb` wraps pymongo's native ``AsyncMongoClient`` (asyncio only,
  no thread hop).

A URL given to :func:`mongo_ports` gets a synchronous ``MongoClient`` (works
under both event loops) unless ``async_client=True``.

Documents
=========

Chats (``Settings.chats_collection``, seed: ``v2_chats``) keep the seed's
field names: ``customer_id``, ``customer_name``, ``customer_type``,
``created_at``, ``last_incoming_message``, ``last_outgoing_message``,
``last_interaction_by`` (``"Customer"``/``"Executive"``), ``is_resolved``,
``resolved_at``, ``tags``, ``assigned_executive_id``, ``assigned_at``.  The
``_id`` is the chat id (an old ``ObjectId`` ``_id`` is read as its hex
string and found again by it).  Fields this library adds:

* ``opened_at``, ``last_message`` (preview), ``last_activity_at`` (listing
  sort), ``queued_at`` (set only while the chat waits unassigned);
* ``awaiting_watch_since`` -- derived: ``last_outgoing_message`` while the
  chat is open, the executive spoke last and the awaiting tag is absent,
  else null.  It makes the awaiting tagger's query one index range (a
  ``tags: {$ne: ...}`` condition cannot be served by an index);
* ``_v`` -- a version, incremented by every write (compare-and-set).

A database written by Smart Chat V2 lacks the added fields; reads tolerate
that (they are derived on the fly), but the monitors' and the queue's
queries use them, so run :meth:`MongoChatStore.migrate` once (it backfills
them, then rebuilds the counters).  :meth:`MongoChatStore.ensure_indexes`
(run by ``start`` unless ``ensure_indexes=False``) creates the indexes.

Writes: one document, compare-and-set
=====================================

Every chat write is one document: the store takes the chat as last read or
written by this process (it remembers up to ``cache_size`` of them) or reads
it, computes the new chat in Python (exactly as the in-memory reference
model does, :mod:`smartchat_core.adapters._rules`) and stores it with one
``update_one({_id, _v: <known>}, {$set: <changed fields>, $inc: {_v: 1}})``
(or one ``insert_one``).  The version makes every precondition (open,
assignee, tags, ...) part of the single atomic write: a concurrent change
makes it match nothing and the operation starts over with a fresh read, so
two processes assigning the same chat assign it once.  A remembered document
that is out of date therefore costs one failed write and a read, never a
wrong write; a "nothing to change" decided on a remembered document is
checked against a fresh read before it is returned.

Why not ``find_one_and_update`` with the preconditions in the filter: one
code path computes the new state for every operation (no second,
operator-based rendering of the rules to keep in step), and SecantusDB's
``findAndModify`` scans the whole collection (see below) while its
``update_one`` by ``_id`` is a point write.  The rotation's ``next`` is one
``find_one_and_update``.

So assigning a chat this process has just read (the waiting queue it
drains, the open chats of an executive it releases, the chat a message just
created or updated) is **one** MongoDB command; the service then reads the
executive once to confirm it may keep the chat (two commands per
assignment in all, see ``docs/performance.md``).

Counters: computed from the chats
=================================

The counters (per executive: open and awaiting chats; per customer type:
open, unassigned, awaiting) are not stored: :meth:`MongoChatStore.executive_counters`
and :meth:`MongoChatStore.type_counters` compute them with one ``aggregate``
each over the open chats (the ``open_by_executive`` partial index for
executives, the ``is_resolved`` prefix of ``list_status`` for types), so
their cost follows the open chats, never the history of resolved ones.  They
are exact at every moment, under any concurrency, and a process that dies
mid-operation cannot leave them behind (there is no second document to
update).  ``recount`` has nothing to rebuild.

A chat written by an earlier version of this library may carry a
``_pending`` field; it is ignored and dropped by the next write (and by
``migrate``).

Errors and input
================

``pymongo.errors.PyMongoError`` is raised as :class:`~smartchat_core.BackendError`
(the original is the ``__cause__``).  Ids must be plain ``str`` (never a
dict that would become a query operator): anything else raises
:class:`~smartchat_core.InvalidInputError` before any I/O.  Search text is
``re.escape``\\ d and matched case-insensitively: literal, never a pattern.

Indexes (``ensure_indexes``)
============================

Chats (every name prefixed ``smartchat_``; keys, then the partial filter):

* ``customer``: customer_id, unique (one chat per customer);
* ``sla_due``: last_incoming_message, _id; is_resolved false and
  last_interaction_by Customer;
* ``awaiting_due``: awaiting_watch_since, _id; awaiting_watch_since set;
* ``waiting``: customer_type, queued_at, _id; queued_at set;
* ``open_by_executive``: assigned_executive_id, assigned_at, _id; is_resolved
  false;
* listing, each ``<filter field>, last_activity_at -1, _id``: ``list_all``
  (no filter field), ``list_status`` (is_resolved), ``list_type``
  (customer_type), ``list_assignee`` (assigned_executive_id), ``list_tag``
  (tags, multikey), ``list_sender`` (last_interaction_by);

"Set" is ``{$gte: 0001-01-01}``: partial filters use only equality and
``$gte``, which every MongoDB since 3.2 and SecantusDB can match a query
against.

Executives: ``presence`` (status, last_active_at, _id) for the inactivity
monitor (queried once per status, online and away), ``type_status``
(customer_types, status, _id).  Ratings: ``rating_once`` (chat_id,
resolved_at) unique.  Resolve log: (chat_id, resolved_at -1), (executive_id,
resolved_at -1), (resolved_at -1).  Dedup and lock: a TTL index on
``purge_at`` (clean-up only; expiry is decided on the clock port).

The partial filters use only equality and ``$gte`` (every MongoDB since 3.2
and SecantusDB can use them).  SLA, awaiting, waiting queue, open chats per
executive and the inactivity query are index ranges that cost the result;
listing walks the index of one filter in ``last_activity_at`` order (a
combination of filters walks one of them; ``search`` is an unanchored regex
and filters what the other filters leave).

SecantusDB notes (0.7.0b3)
==========================

Transactions, partial/TTL indexes, ``$expr`` and ``find_one_and_update`` work.
Its ``explain`` reports the plan faithfully but ``executionStats`` are
synthesised (``totalDocsExamined`` = ``nReturned`` = every match, ignoring the
limit, for an index scan).  ``findAndModify`` is O(collection): it re-asserts
the query as ``{_id, $and: [query]}`` and a top-level ``$and`` defeats its
``_id`` point lookup, which is one more reason chats are written with
``update_one``.  A ``$lte`` bound on a compound index field followed by other
key fields (equality prefix, then the range) misses the documents equal to
the bound; the adapters write "at or before" as ``$lt`` bound + 1 ms, which
is the same set of BSON dates on every server.  ``findAndModify`` returning
the document *before* the update can return a stale pre-image under
concurrency (300 concurrent ``$inc``: 238 distinct pre-images); the
post-image is exact, so the rotation reads the post-image.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AsyncExitStack
from datetime import datetime, timedelta, timezone
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread
import attrs

from .._errors import BackendError, InvalidInputError
from .._models import (
    UNASSIGNED,
    Chat,
    ChatPage,
    ChatQuery,
    ChatStatusFilter,
    Executive,
    ExecutiveCounters,
    ExecutiveStatus,
    Interlocutor,
    Rating,
    ResolutionEntry,
    TypeCounters,
)
from .._settings import Settings
from ..abc import (
    AlertDedup,
    AssignOutcome,
    AssignResult,
    ChatChange,
    ChatStore,
    Clock,
    ExecutiveStore,
    IncomingResult,
    Lock,
    RatingStore,
    ResolutionLog,
    Rotation,
    StatusChange,
)
from . import _rules as rules

__all__ = [
    "DEFAULT_DEDUP_COLLECTION",
    "DEFAULT_LOCKS_COLLECTION",
    "DEFAULT_ROTATION_COLLECTION",
    "MongoAlertDedup",
    "MongoChatStore",
    "MongoConnection",
    "MongoExecutiveStore",
    "MongoLock",
    "MongoRatingStore",
    "MongoResolutionLog",
    "MongoRotation",
    "mongo_ports",
]

logger = logging.getLogger("smartchat_core")

Doc = dict[str, Any]
P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_ROTATION_COLLECTION = "v2_rotation"
DEFAULT_DEDUP_COLLECTION = "v2_sla_alerts"
DEFAULT_LOCKS_COLLECTION = "v2_locks"

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_MIN_DATE = datetime(1, 1, 1, tzinfo=_UTC)
"""Lower bound of the partial indexes on optional dates (``$gte`` is the
one operator every server can match a partial filter against)."""
_RETRY_SECONDS = 30.0
"""How long an operation keeps retrying after concurrent changes (many
processes on one chat, or the rotation document of a MongoDB-only
deployment under a burst) before it raises BackendError."""
_INDEX_PREFIX = "smartchat_"

_CHAT_FIELDS = (
    "customer_id",
    "customer_name",
    "customer_type",
    "created_at",
    "opened_at",
    "last_incoming_message",
    "last_outgoing_message",
    "last_interaction_by",
    "last_message",
    "last_activity_at",
    "is_resolved",
    "resolved_at",
    "tags",
    "assigned_executive_id",
    "assigned_at",
    "queued_at",
    "awaiting_watch_since",
)


# ------------------------------------------------------------------- small helpers


def _errors() -> Any:
    import pymongo.errors

    return pymongo.errors


def _is_duplicate(exc: BaseException) -> bool:
    return isinstance(exc, _errors().DuplicateKeyError)


def _translated(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Raise the driver's errors as :class:`BackendError`."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except _errors().PyMongoError as exc:
            raise BackendError(f"MongoDB: {exc}") from exc

    return wrapper


def _plain(field: str, value: object) -> str:
    """An id or name as a plain string: never a dict (query operator)."""
    if not isinstance(value, str):
        raise InvalidInputError(field, f"must be a string, got {type(value).__name__}")
    return value


def _ms(value: datetime) -> datetime:
    """UTC, truncated to BSON's millisecond precision."""
    if value.tzinfo is None:
        raise InvalidInputError("now", "must be timezone-aware")
    value = value.astimezone(_UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _aware(value: object) -> datetime | None:
    """A stored datetime as aware UTC (a client without ``tz_aware`` gives
    naive UTC)."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=_UTC)
    return value.astimezone(_UTC)


def _at_or_before(cutoff: datetime) -> Doc:
    """``<= cutoff`` for stored dates, written as ``< cutoff + 1 ms``: every
    BSON date is a whole number of milliseconds, so the two are the same set,
    and SecantusDB loses the documents *equal* to a ``$lte`` bound on a
    compound index field that is followed by other key fields."""
    return {"$lt": _ms(cutoff) + timedelta(milliseconds=1)}


def _ts(value: datetime | None) -> float:
    return (value - _EPOCH).total_seconds() if value is not None else float("-inf")


def _id_filter(value: str) -> Any:
    """Match an id given as a string, also where an old document has the
    ``ObjectId`` with that hex as its ``_id``."""
    if len(value) == 24:
        from bson import ObjectId

        if ObjectId.is_valid(value):
            return {"$in": [value, ObjectId(value)]}
    return value


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


class _Conflict(Exception):
    """The document changed under us: read again and retry."""


async def _backoff(attempt: int) -> None:
    """Exponential backoff with full jitter (0.5 ms doubling, at most 100 ms);
    the first two retries are immediate."""
    if attempt >= 2:
        await anyio.sleep(random.uniform(0, min(0.1, 0.0005 * 2 ** min(attempt, 12))))


class _Retries:
    """Attempt numbers until a time budget runs out."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.deadline = time.monotonic() + _RETRY_SECONDS

    def __iter__(self) -> Iterator[int]:
        for attempt in itertools.count():
            if attempt and time.monotonic() > self.deadline:
                raise BackendError(
                    f"MongoDB: {self.what} kept conflicting for {_RETRY_SECONDS:.0f} s"
                )
            yield attempt


# ------------------------------------------------------------------------ facade


@attrs.frozen
class _Write:
    matched: int
    modified: int
    upserted: bool


class _Coll(ABC):
    """The async collection operations the adapters use."""

    name: str

    @abstractmethod
    async def find_one(self, filter: Doc) -> Doc | None: ...

    @abstractmethod
    async def find(
        self,
        filter: Doc,
        *,
        sort: Sequence[tuple[str, int]] | None = None,
        skip: int = 0,
        limit: int = 0,
        projection: Doc | None = None,
    ) -> list[Doc]: ...

    @abstractmethod
    async def count(self, filter: Doc) -> int: ...

    @abstractmethod
    async def estimated_count(self) -> int: ...

    @abstractmethod
    async def insert_one(self, doc: Doc) -> None: ...

    @abstractmethod
    async def update_one(self, filter: Doc, update: Doc, *, upsert: bool = False) -> _Write: ...

    @abstractmethod
    async def find_one_and_update(
        self, filter: Doc, update: Doc, *, upsert: bool = False, after: bool = True
    ) -> Doc | None: ...

    @abstractmethod
    async def delete_one(self, filter: Doc) -> int: ...

    @abstractmethod
    async def aggregate(self, pipeline: list[Doc]) -> list[Doc]: ...

    @abstractmethod
    async def create_index(self, keys: list[tuple[str, int]], **options: Any) -> None: ...


class _Db(ABC):
    @abstractmethod
    def collection(self, name: str) -> _Coll: ...

    @abstractmethod
    async def close(self) -> None: ...


def _sort_arg(sort: Sequence[tuple[str, int]] | None) -> list[tuple[str, int]] | None:
    return list(sort) if sort else None


def _write_result(result: Any) -> _Write:
    return _Write(result.matched_count, result.modified_count, result.upserted_id is not None)


class _ThreadedColl(_Coll):
    def __init__(self, db: _ThreadedDb, collection: Any) -> None:
        self._db = db
        self._c = collection
        self.name = str(collection.name)

    async def find_one(self, filter: Doc) -> Doc | None:
        result = await self._db.call(functools.partial(self._c.find_one, filter))
        return None if result is None else dict(result)

    async def find(
        self,
        filter: Doc,
        *,
        sort: Sequence[tuple[str, int]] | None = None,
        skip: int = 0,
        limit: int = 0,
        projection: Doc | None = None,
    ) -> list[Doc]:
        kwargs: Doc = {"skip": skip, "limit": limit}
        if sort:
            kwargs["sort"] = _sort_arg(sort)
        if projection is not None:
            kwargs["projection"] = projection

        def run() -> list[Doc]:
            return [dict(doc) for doc in self._c.find(filter, **kwargs)]

        return await self._db.call(run)

    async def count(self, filter: Doc) -> int:
        return int(await self._db.call(functools.partial(self._c.count_documents, filter)))

    async def estimated_count(self) -> int:
        return int(await self._db.call(self._c.estimated_document_count))

    async def insert_one(self, doc: Doc) -> None:
        await self._db.call(functools.partial(self._c.insert_one, doc))

    async def update_one(self, filter: Doc, update: Doc, *, upsert: bool = False) -> _Write:
        result = await self._db.call(
            functools.partial(self._c.update_one, filter, update, upsert=upsert)
        )
        return _write_result(result)

    async def find_one_and_update(
        self, filter: Doc, update: Doc, *, upsert: bool = False, after: bool = True
    ) -> Doc | None:
        from pymongo import ReturnDocument

        result = await self._db.call(
            functools.partial(
                self._c.find_one_and_update,
                filter,
                update,
                upsert=upsert,
                return_document=ReturnDocument.AFTER if after else ReturnDocument.BEFORE,
            )
        )
        return None if result is None else dict(result)

    async def delete_one(self, filter: Doc) -> int:
        result = await self._db.call(functools.partial(self._c.delete_one, filter))
        return int(result.deleted_count)

    async def aggregate(self, pipeline: list[Doc]) -> list[Doc]:
        def run() -> list[Doc]:
            return [dict(doc) for doc in self._c.aggregate(pipeline)]

        return await self._db.call(run)

    async def create_index(self, keys: list[tuple[str, int]], **options: Any) -> None:
        await self._db.call(functools.partial(self._c.create_index, keys, **options))


class _ThreadedDb(_Db):
    """A synchronous client's database; each call in a worker thread."""

    def __init__(self, database: Any, *, serialize: bool = False) -> None:
        self._database = database
        self._mutex = threading.Lock() if serialize else None
        self._mongomock = type(database).__module__.startswith("mongomock")

    async def call(self, function: Callable[[], T]) -> T:
        mutex = self._mutex
        if mutex is None:
            return await anyio.to_thread.run_sync(function)

        def locked() -> T:
            with mutex:
                return function()

        return await anyio.to_thread.run_sync(locked)

    def collection(self, name: str) -> _Coll:
        return _ThreadedColl(self, self._database[name])

    async def close(self) -> None:
        await self.call(self._database.client.close)


class _AsyncColl(_Coll):
    def __init__(self, collection: Any) -> None:
        self._c = collection
        self.name = str(collection.name)

    async def find_one(self, filter: Doc) -> Doc | None:
        result = await self._c.find_one(filter)
        return None if result is None else dict(result)

    async def find(
        self,
        filter: Doc,
        *,
        sort: Sequence[tuple[str, int]] | None = None,
        skip: int = 0,
        limit: int = 0,
        projection: Doc | None = None,
    ) -> list[Doc]:
        cursor = self._c.find(
            filter,
            projection,
            sort=_sort_arg(sort),
            skip=skip,
            limit=limit,
        )
        return [dict(doc) for doc in await cursor.to_list(None)]

    async def count(self, filter: Doc) -> int:
        return int(await self._c.count_documents(filter))

    async def estimated_count(self) -> int:
        return int(await self._c.estimated_document_count())

    async def insert_one(self, doc: Doc) -> None:
        await self._c.insert_one(doc)

    async def update_one(self, filter: Doc, update: Doc, *, upsert: bool = False) -> _Write:
        return _write_result(await self._c.update_one(filter, update, upsert=upsert))

    async def find_one_and_update(
        self, filter: Doc, update: Doc, *, upsert: bool = False, after: bool = True
    ) -> Doc | None:
        from pymongo import ReturnDocument

        result = await self._c.find_one_and_update(
            filter,
            update,
            upsert=upsert,
            return_document=ReturnDocument.AFTER if after else ReturnDocument.BEFORE,
        )
        return None if result is None else dict(result)

    async def delete_one(self, filter: Doc) -> int:
        return int((await self._c.delete_one(filter)).deleted_count)

    async def aggregate(self, pipeline: list[Doc]) -> list[Doc]:
        cursor = await self._c.aggregate(pipeline)
        return [dict(doc) for doc in await cursor.to_list(None)]

    async def create_index(self, keys: list[tuple[str, int]], **options: Any) -> None:
        await self._c.create_index(keys, **options)


class _AsyncDb(_Db):
    """pymongo's ``AsyncMongoClient`` database (asyncio only)."""

    def __init__(self, database: Any) -> None:
        self._database = database

    def collection(self, name: str) -> _Coll:
        return _AsyncColl(self._database[name])

    async def close(self) -> None:
        await self._database.client.close()


def _is_async_client(client: object) -> bool:
    try:
        from pymongo import AsyncMongoClient
    except ImportError:  # pragma: no cover - pymongo < 4.9
        return False
    return isinstance(client, AsyncMongoClient)


# -------------------------------------------------------------------- connection


class MongoConnection:
    """One client and database shared by the Mongo ports.

    Args:
        client_or_url: a ``mongodb://`` URL, a ``pymongo.MongoClient``, a
            ``mongomock.MongoClient`` or a ``pymongo.AsyncMongoClient``.
        database: the database name.
        async_client: for a URL, create an ``AsyncMongoClient`` (asyncio
            only) instead of a ``MongoClient`` run in worker threads.
        client_options: extra keyword arguments for a client created from a
            URL.

    A client created here from a URL is closed when the first port's exit
    stack closes; a client passed in belongs to the caller.
    """

    def __init__(
        self,
        client_or_url: Any,
        *,
        database: str,
        async_client: bool = False,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._source = client_or_url
        self.database = _plain("database", database)
        self._async_client = async_client
        self._client_options = dict(client_options or {})
        self._db: _Db | None = None
        self._owned = False
        self._close_registered = False
        self._opening = threading.Lock()

    def _build(self) -> _Db:
        source = self._source
        if isinstance(source, str):
            options: Doc = {"tz_aware": True, **self._client_options}
            if self._async_client:
                from pymongo import AsyncMongoClient

                client: Any = AsyncMongoClient(source, **options)
            else:
                from pymongo import MongoClient

                client = MongoClient(source, **options)
            self._owned = True
        else:
            client = source
        if _is_async_client(client):
            return _AsyncDb(client[self.database])
        serialize = type(client).__module__.startswith("mongomock")
        return _ThreadedDb(client[self.database], serialize=serialize)

    def db(self) -> _Db:
        """The database facade (creates the client on first use; no I/O)."""
        with self._opening:
            if self._db is None:
                self._db = self._build()
            return self._db

    async def start(self, exit_stack: AsyncExitStack) -> None:
        self.db()
        if self._owned and not self._close_registered:
            self._close_registered = True
            exit_stack.push_async_callback(self.aclose)

    async def aclose(self) -> None:
        """Close a client this connection created."""
        db, self._db = self._db, None
        if db is not None and self._owned:
            await db.close()


async def _create_indexes(
    coll: _Coll, specs: Iterable[tuple[str, list[tuple[str, int]], Doc]]
) -> None:
    errors = _errors()
    for name, keys, options in specs:
        try:
            await coll.create_index(keys, name=_INDEX_PREFIX + name, **options)
        except errors.OperationFailure as exc:
            # 85/86: an equivalent index exists under another name (e.g. the
            # seed's own), or ours changed options: keep what is there.
            if exc.code in (85, 86):
                logger.warning("index %s on %s not created: %s", name, coll.name, exc)
            else:
                raise


class _MongoPort:
    """Lifecycle shared by the Mongo ports."""

    def __init__(self, connection: MongoConnection, *, ensure_indexes: bool) -> None:
        self.connection = connection
        self._ensure = ensure_indexes

    def _coll(self, name: str) -> _Coll:
        return self.connection.db().collection(name)

    async def start(self, exit_stack: AsyncExitStack) -> None:
        await self.connection.start(exit_stack)
        if self._ensure:
            await self.ensure_indexes()

    async def ensure_indexes(self) -> None:
        """Create this port's indexes (idempotent)."""


class _OneCollectionPort(_MongoPort):
    """A port over one collection: ``collection``, or the class's
    ``default_collection`` when it is ``None``."""

    default_collection: str

    def __init__(
        self,
        connection: MongoConnection,
        *,
        collection: str | None = None,
        ensure_indexes: bool = True,
    ) -> None:
        super().__init__(connection, ensure_indexes=ensure_indexes)
        self.collection = collection or self.default_collection

    @property
    def _c(self) -> _Coll:
        return self._coll(self.collection)


# ------------------------------------------------------------------------- chats


def _watch_since(chat: Chat, awaiting_tag: str) -> datetime | None:
    if (
        chat.is_open
        and chat.last_interaction_by is Interlocutor.EXECUTIVE
        and awaiting_tag not in chat.tags
    ):
        return chat.last_outgoing_message
    return None


def _chat_doc(chat: Chat, awaiting_tag: str) -> Doc:
    """The stored fields of a chat (everything but ``_id``/``_v``)."""
    return {
        "customer_id": chat.customer_id,
        "customer_name": chat.customer_name,
        "customer_type": chat.customer_type,
        "created_at": chat.created_at,
        "opened_at": chat.opened_at,
        "last_incoming_message": chat.last_incoming_message,
        "last_outgoing_message": chat.last_outgoing_message,
        "last_interaction_by": None
        if chat.last_interaction_by is None
        else chat.last_interaction_by.value,
        "last_message": chat.last_message,
        "last_activity_at": chat.last_activity_at,
        "is_resolved": chat.is_resolved,
        "resolved_at": chat.resolved_at,
        "tags": list(chat.tags),
        "assigned_executive_id": chat.assigned_executive_id,
        "assigned_at": chat.assigned_at,
        "queued_at": chat.queued_at,
        "awaiting_watch_since": _watch_since(chat, awaiting_tag),
    }


_SPEAKERS = frozenset(i.value for i in Interlocutor)


def _created_from_id(raw_id: object) -> datetime | None:
    generation_time = getattr(raw_id, "generation_time", None)
    return _aware(generation_time)


def _chat_from_doc(doc: Mapping[str, Any]) -> Chat:
    """A chat from its document, tolerating a Smart Chat V2 document that
    lacks the fields this library added."""
    raw_id = doc["_id"]
    incoming = _aware(doc.get("last_incoming_message"))
    outgoing = _aware(doc.get("last_outgoing_message"))
    created = _aware(doc.get("created_at")) or _created_from_id(raw_id) or incoming or _EPOCH
    activity = _aware(doc.get("last_activity_at"))
    if activity is None:
        activity = max(t for t in (created, incoming, outgoing) if t is not None)
    speaker = doc.get("last_interaction_by")
    interlocutor = Interlocutor(speaker) if speaker in _SPEAKERS else None
    is_resolved = bool(doc.get("is_resolved", False))
    assignee = _str_or_none(doc.get("assigned_executive_id"))
    if "queued_at" in doc:
        queued = _aware(doc.get("queued_at"))
    else:
        queued = (incoming or created) if not is_resolved and assignee is None else None
    raw_tags = doc.get("tags") or ()
    tags = tuple(dict.fromkeys(str(t) for t in raw_tags)) if isinstance(raw_tags, list) else ()
    return Chat(
        id=str(raw_id),
        customer_id=str(doc.get("customer_id") or ""),
        customer_name=str(doc.get("customer_name") or ""),
        customer_type=str(doc.get("customer_type") or ""),
        created_at=created,
        opened_at=_aware(doc.get("opened_at")) or created,
        last_incoming_message=incoming,
        last_outgoing_message=outgoing,
        last_interaction_by=interlocutor,
        last_message=str(doc.get("last_message") or ""),
        last_activity_at=activity,
        is_resolved=is_resolved,
        resolved_at=_aware(doc.get("resolved_at")),
        tags=tags,
        assigned_executive_id=assignee,
        assigned_at=_aware(doc.get("assigned_at")),
        queued_at=queued,
    )


@attrs.frozen
class _Raw:
    """A chat as read: the document and the model."""

    doc: Doc | None
    chat: Chat | None
    recalled: bool = False
    """Taken from the store's memory, not read just now."""


class _Stale(Exception):
    """A decision was taken on a remembered document: read and decide again."""


class MongoChatStore(_MongoPort, ChatStore):
    """Chats in MongoDB; the counters are computed from them.  See the module
    docstring for the write protocol and its guarantees.

    Args:
        connection: the shared :class:`MongoConnection`.
        awaiting_tag: :attr:`Settings.awaiting_tag`.
        chats_collection: :attr:`Settings.chats_collection`.
        cache_size: how many chat documents this store remembers (as last
            read or written by this process) to compare-and-set against
            without reading them again; 0 turns it off.  A remembered
            document that is out of date only costs a failed write and a
            fresh read.
        ensure_indexes: create the indexes in ``start``.
    """

    def __init__(
        self,
        connection: MongoConnection,
        *,
        awaiting_tag: str = "awaiting",
        chats_collection: str = "v2_chats",
        cache_size: int = 10_000,
        ensure_indexes: bool = True,
    ) -> None:
        super().__init__(connection, ensure_indexes=ensure_indexes)
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        self.awaiting_tag = awaiting_tag
        self.chats_collection = chats_collection
        self.cache_size = cache_size
        self._cache: OrderedDict[str, _Raw] = OrderedDict()

    @property
    def _chats(self) -> _Coll:
        return self._coll(self.chats_collection)

    # ----------------------------------------------------------------- indexes
    @_translated
    async def ensure_indexes(self) -> None:
        """Create every index the hot queries need (idempotent)."""
        no_sort = (("last_activity_at", -1), ("_id", 1))
        await _create_indexes(
            self._chats,
            [
                ("customer", [("customer_id", 1)], {"unique": True}),
                (
                    "sla_due",
                    [("last_incoming_message", 1), ("_id", 1)],
                    {
                        "partialFilterExpression": {
                            "is_resolved": False,
                            "last_interaction_by": Interlocutor.CUSTOMER.value,
                        }
                    },
                ),
                (
                    "awaiting_due",
                    [("awaiting_watch_since", 1), ("_id", 1)],
                    {"partialFilterExpression": {"awaiting_watch_since": {"$gte": _MIN_DATE}}},
                ),
                (
                    "waiting",
                    [("customer_type", 1), ("queued_at", 1), ("_id", 1)],
                    {"partialFilterExpression": {"queued_at": {"$gte": _MIN_DATE}}},
                ),
                (
                    "open_by_executive",
                    [("assigned_executive_id", 1), ("assigned_at", 1), ("_id", 1)],
                    {"partialFilterExpression": {"is_resolved": False}},
                ),
                ("list_all", list(no_sort), {}),
                ("list_status", [("is_resolved", 1), *no_sort], {}),
                ("list_type", [("customer_type", 1), *no_sort], {}),
                ("list_assignee", [("assigned_executive_id", 1), *no_sort], {}),
                ("list_tag", [("tags", 1), *no_sort], {}),
                ("list_sender", [("last_interaction_by", 1), *no_sort], {}),
            ],
        )

    # -------------------------------------------------------------- hot queries
    # Each returns (filter, sort): the tests explain exactly these.
    def sla_due_query(self, cutoff: datetime) -> tuple[Doc, list[tuple[str, int]]]:
        return (
            {
                "is_resolved": False,
                "last_interaction_by": Interlocutor.CUSTOMER.value,
                "last_incoming_message": _at_or_before(cutoff),
            },
            [("last_incoming_message", 1), ("_id", 1)],
        )

    def awaiting_due_query(self, cutoff: datetime) -> tuple[Doc, list[tuple[str, int]]]:
        return (
            {"awaiting_watch_since": {"$gte": _MIN_DATE, **_at_or_before(cutoff)}},
            [("awaiting_watch_since", 1), ("_id", 1)],
        )

    def waiting_query(self, customer_type: str) -> tuple[Doc, list[tuple[str, int]]]:
        return (
            {"customer_type": customer_type, "queued_at": {"$gte": _MIN_DATE}},
            [("queued_at", 1), ("_id", 1)],
        )

    def open_chats_query(self, executive_id: str) -> tuple[Doc, list[tuple[str, int]]]:
        return (
            {"assigned_executive_id": executive_id, "is_resolved": False},
            [("assigned_at", 1), ("_id", 1)],
        )

    def listing_query(self, query: ChatQuery) -> tuple[Doc, list[tuple[str, int]]]:
        filter: Doc = {}
        if query.status is ChatStatusFilter.OPEN:
            filter["is_resolved"] = False
        elif query.status is ChatStatusFilter.RESOLVED:
            filter["is_resolved"] = True
        if query.customer_type is not None:
            filter["customer_type"] = _plain("customer_type", query.customer_type)
        if query.assigned_executive_id is not None:
            assignee = _plain("assigned_executive_id", query.assigned_executive_id)
            filter["assigned_executive_id"] = None if assignee == UNASSIGNED else assignee
        if query.tag is not None:
            filter["tags"] = _plain("tag", query.tag)
        if query.sender is not None:
            filter["last_interaction_by"] = Interlocutor(query.sender).value
        if query.search:
            pattern = {"$regex": re.escape(_plain("search", query.search)), "$options": "i"}
            filter["$or"] = [
                {"customer_name": pattern},
                {"customer_id": pattern},
                {"last_message": pattern},
            ]
        return filter, [("last_activity_at", -1), ("_id", 1)]

    # ------------------------------------------------------------------- reads
    async def _find_chats(
        self, query: tuple[Doc, list[tuple[str, int]]], *, limit: int = 0, skip: int = 0
    ) -> list[Chat]:
        filter, sort = query
        docs = await self._chats.find(filter, sort=sort, limit=limit, skip=skip)
        return [self._remember(doc).chat for doc in docs]  # type: ignore[misc]

    @_translated
    async def get(self, chat_id: str) -> Chat | None:
        doc = await self._chats.find_one({"_id": _id_filter(_plain("chat_id", chat_id))})
        return self._remember(doc).chat

    @_translated
    async def sla_due(self, cutoff: datetime, *, limit: int) -> Sequence[Chat]:
        if limit <= 0:
            return []
        return await self._find_chats(self.sla_due_query(_ms(cutoff)), limit=limit)

    @_translated
    async def awaiting_due(self, cutoff: datetime, *, limit: int) -> Sequence[Chat]:
        if limit <= 0:
            return []
        return await self._find_chats(self.awaiting_due_query(_ms(cutoff)), limit=limit)

    @_translated
    async def waiting(self, customer_type: str, *, limit: int) -> Sequence[Chat]:
        if limit <= 0:
            return []
        query = self.waiting_query(_plain("customer_type", customer_type))
        return await self._find_chats(query, limit=limit)

    @_translated
    async def open_chats_of(self, executive_id: str) -> Sequence[Chat]:
        return await self._find_chats(self.open_chats_query(_plain("executive_id", executive_id)))

    @_translated
    async def query(self, query: ChatQuery) -> ChatPage:
        filter, sort = self.listing_query(query)
        items = await self._find_chats((filter, sort), limit=query.limit, skip=query.offset)
        total = await self._chats.count(filter) if filter else await self._chats.estimated_count()
        return ChatPage(items=tuple(items), total=total, limit=query.limit, offset=query.offset)

    def _awaiting(self) -> Doc:
        return {"$cond": [{"$in": [self.awaiting_tag, {"$ifNull": ["$tags", []]}]}, 1, 0]}

    @_translated
    async def executive_counters(
        self, executive_ids: Iterable[str]
    ) -> dict[str, ExecutiveCounters]:
        ids = list(dict.fromkeys(_plain("executive_id", e) for e in executive_ids))
        result = {e: ExecutiveCounters() for e in ids}
        if not ids:
            return result
        # One command over the open-chats-by-executive index: it costs the
        # open chats of these executives, never the history.
        groups = await self._chats.aggregate(
            [
                {
                    "$match": {
                        "assigned_executive_id": ids[0] if len(ids) == 1 else {"$in": ids},
                        "is_resolved": False,
                    }
                },
                {
                    "$group": {
                        "_id": "$assigned_executive_id",
                        "n": {"$sum": 1},
                        "aw": {"$sum": self._awaiting()},
                    }
                },
            ]
        )
        for group in groups:
            key = group["_id"]
            if key in result:
                result[key] = ExecutiveCounters(int(group["n"]), int(group["aw"]))
        return result

    @_translated
    async def type_counters(self) -> dict[str, TypeCounters]:
        # One command over the open chats (the is_resolved index): never the
        # history of resolved chats.
        groups = await self._chats.aggregate(
            [
                {"$match": {"is_resolved": False}},
                {
                    "$group": {
                        "_id": "$customer_type",
                        "n": {"$sum": 1},
                        "un": {
                            "$sum": {
                                "$cond": [
                                    {"$eq": [{"$ifNull": ["$assigned_executive_id", None]}, None]},
                                    1,
                                    0,
                                ]
                            }
                        },
                        "aw": {"$sum": self._awaiting()},
                    }
                },
            ]
        )
        return {
            str(group["_id"]): TypeCounters(int(group["n"]), int(group["un"]), int(group["aw"]))
            for group in sorted(groups, key=lambda g: str(g["_id"]))
            if isinstance(group.get("_id"), str)
        }

    # ------------------------------------------------------------ write engine
    def _remember(self, doc: Doc | None, chat: Chat | None = None) -> _Raw:
        """The model of ``doc`` (``chat`` when the caller has it already),
        remembered as this process last saw it."""
        if doc is None:
            return _Raw(None, None)
        if chat is None:
            chat = _chat_from_doc(doc)
        if self.cache_size:
            self._cache[chat.id] = _Raw(doc, chat, recalled=True)
            self._cache.move_to_end(chat.id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return _Raw(doc, chat)

    async def _read(self, chat_id: str, *, fresh: bool) -> _Raw:
        """A chat to write against: as remembered, unless ``fresh``."""
        if not fresh:
            remembered = self._cache.get(chat_id)
            if remembered is not None:
                return remembered
        return self._remember(await self._chats.find_one({"_id": _id_filter(chat_id)}))

    async def _run(self, attempt: Callable[[bool], Awaitable[T]]) -> T:
        """Run ``attempt`` until it does not hit a concurrent change; the
        first try may write against the remembered document, later ones read
        the chat again."""
        fresh = False
        for number in _Retries("a chat write"):
            try:
                return await attempt(fresh)
            except _Stale:
                pass
            except _Conflict:
                if fresh:
                    await _backoff(number)
            fresh = True
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write(self, raw: _Raw, new: Chat) -> None:
        """Store ``new`` in place of ``raw``: one insert, or one
        ``update_one`` of the changed fields compare-and-set on the version.
        Raises :class:`_Conflict` when the chat changed since ``raw``."""
        fields = _chat_doc(new, self.awaiting_tag)
        try:
            if raw.doc is None:
                doc: Doc = {"_id": new.id, **fields, "_v": 1}
                try:
                    await self._chats.insert_one(doc)
                except _errors().DuplicateKeyError as exc:
                    raise _Conflict from exc
            else:
                changed = {k: v for k, v in fields.items() if k not in raw.doc or raw.doc[k] != v}
                if not changed:
                    if raw.recalled:
                        raise _Stale  # decided on memory: check against the server
                    return
                update: Doc = {"$set": changed, "$inc": {"_v": 1}}
                if "_pending" in raw.doc:  # left by a version that had markers
                    update["$unset"] = {"_pending": ""}
                result = await self._chats.update_one(
                    {"_id": raw.doc["_id"], "_v": raw.doc.get("_v")}, update
                )
                if not result.matched:
                    raise _Stale if raw.recalled else _Conflict
                doc = {**raw.doc, **changed, "_v": int(raw.doc.get("_v") or 0) + 1}
                doc.pop("_pending", None)
        except BaseException:
            self._cache.pop(new.id, None)
            raise
        self._remember(doc, new)

    # ------------------------------------------------------------------ writes
    @_translated
    async def record_incoming(
        self,
        *,
        new_id: str,
        customer_id: str,
        customer_name: str,
        customer_type: str,
        preview: str,
        now: datetime,
    ) -> IncomingResult:
        new_id = _plain("new_id", new_id)
        customer_id = _plain("customer_id", customer_id)
        customer_name = _plain("customer_name", customer_name)
        customer_type = _plain("customer_type", customer_type)
        preview = _plain("preview", preview)
        now = _ms(now)

        async def attempt(fresh: bool) -> IncomingResult:
            raw = self._remember(await self._chats.find_one({"customer_id": customer_id}))
            old = raw.chat
            new, reopened, removed = rules.incoming(
                old,
                new_id=new_id,
                customer_id=customer_id,
                customer_name=customer_name,
                customer_type=customer_type,
                preview=preview,
                now=now,
                awaiting_tag=self.awaiting_tag,
            )
            try:
                await self._write(raw, new)
            except _Conflict:
                if old is None and (
                    await self._chats.find_one({"customer_id": customer_id}) is None
                    and await self._chats.find_one({"_id": new_id}) is not None
                ):
                    raise ValueError(f"chat id {new_id!r} exists already") from None
                raise
            return IncomingResult(new, old is None, reopened, removed)

        return await self._run(attempt)

    async def _change(
        self, chat_id: str, transition: Callable[[Chat | None], Chat | None]
    ) -> ChatChange:
        """Read (or recall), apply ``transition``, compare-and-set."""

        async def attempt(fresh: bool) -> ChatChange:
            raw = await self._read(chat_id, fresh=fresh)
            new = transition(raw.chat)
            if new is None:
                if raw.recalled:
                    raise _Stale
                return ChatChange(raw.chat, False)
            await self._write(raw, new)
            return ChatChange(new, True)

        return await self._run(attempt)

    @_translated
    async def record_outgoing(
        self, chat_id: str, *, executive_id: str, preview: str, now: datetime
    ) -> ChatChange:
        chat_id = _plain("chat_id", chat_id)
        executive_id = _plain("executive_id", executive_id)
        preview = _plain("preview", preview)
        now = _ms(now)
        return await self._change(
            chat_id,
            lambda old: rules.outgoing(old, executive_id=executive_id, preview=preview, now=now),
        )

    @_translated
    async def assign(
        self,
        chat_id: str,
        executive_id: str,
        *,
        expected_from: str | None,
        now: datetime,
    ) -> AssignResult:
        chat_id = _plain("chat_id", chat_id)
        executive_id = _plain("executive_id", executive_id)
        if expected_from is not None:
            expected_from = _plain("expected_from", expected_from)
        now = _ms(now)

        async def attempt(fresh: bool) -> AssignResult:
            raw = await self._read(chat_id, fresh=fresh)
            old = raw.chat
            new = rules.assigned(old, executive_id, expected_from=expected_from, now=now)
            if new is None:
                if raw.recalled:
                    raise _Stale
                return AssignResult(AssignOutcome.CHAT_CHANGED, old)
            await self._write(raw, new)
            return AssignResult(AssignOutcome.ASSIGNED, new, old)

        return await self._run(attempt)

    @_translated
    async def undo_assign(self, assigned: Chat, previous: Chat) -> ChatChange:
        chat_id = _plain("chat_id", assigned.id)
        return await self._change(
            chat_id, lambda old: rules.unassigned_back(old, assigned, previous)
        )

    @_translated
    async def unassign(self, chat_id: str, *, expected_from: str, now: datetime) -> ChatChange:
        chat_id = _plain("chat_id", chat_id)
        expected_from = _plain("expected_from", expected_from)
        now = _ms(now)
        return await self._change(
            chat_id, lambda old: rules.unassigned(old, expected_from=expected_from, now=now)
        )

    async def _retag(self, chat_id: str, tag: str, *, add: bool) -> ChatChange:
        chat_id = _plain("chat_id", chat_id)
        tag = _plain("tag", tag)
        return await self._change(chat_id, lambda old: rules.retagged(old, tag, add=add))

    @_translated
    async def add_tag(self, chat_id: str, tag: str) -> ChatChange:
        return await self._retag(chat_id, tag, add=True)

    @_translated
    async def remove_tag(self, chat_id: str, tag: str) -> ChatChange:
        return await self._retag(chat_id, tag, add=False)

    @_translated
    async def resolve(self, chat_id: str, *, now: datetime) -> ChatChange:
        chat_id = _plain("chat_id", chat_id)
        now = _ms(now)
        return await self._change(chat_id, lambda old: rules.resolved(old, now=now))

    # ------------------------------------------------------------- maintenance
    @_translated
    async def recount(self) -> None:
        """Nothing to rebuild: the counters are computed from the chats
        whenever they are read (see :meth:`executive_counters`)."""

    @_translated
    async def migrate(self) -> int:
        """One-off upgrade of a Smart Chat V2 collection: backfill
        ``opened_at``, ``last_message``, ``last_activity_at``, ``queued_at``,
        ``awaiting_watch_since`` (and normalise ``tags``) on every chat that
        lacks or disagrees with them, then rebuild the counters.  Idempotent;
        returns how many chats it changed.  Run it with the app stopped (or
        at least once after the last old-version writer stopped)."""
        changed = 0
        # Page by _id within each BSON type (a range on _id never crosses types).
        for id_type in ("string", "objectId", "int", "long", "double"):
            last_id: Any = None
            while True:
                page: Doc = {"$type": id_type}
                if last_id is not None:
                    page["$gt"] = last_id
                docs = await self._chats.find({"_id": page}, sort=[("_id", 1)], limit=500)
                if not docs:
                    break
                for doc in docs:
                    fields = _chat_doc(_chat_from_doc(doc), self.awaiting_tag)
                    update = {k: v for k, v in fields.items() if k not in doc or doc[k] != v}
                    if update or "_pending" in doc:
                        change: Doc = {"$inc": {"_v": 1}}
                        if update:
                            change["$set"] = update
                        if "_pending" in doc:  # a marker of an earlier version
                            change["$unset"] = {"_pending": ""}
                        result = await self._chats.update_one(
                            {"_id": doc["_id"], "_v": doc.get("_v")}, change
                        )
                        changed += result.modified
                last_id = docs[-1]["_id"]
        self._cache.clear()
        return changed


# -------------------------------------------------------------------- executives


def _executive_from_doc(doc: Mapping[str, Any]) -> Executive:
    types = doc.get("customer_types")
    if types is None and doc.get("customer_type") is not None:
        types = [doc["customer_type"]]
    status = doc.get("status")
    capacity = doc.get("max_open_chats")
    return Executive(
        id=str(doc["_id"]),
        name=str(doc.get("name") or ""),
        customer_types=frozenset(str(t) for t in (types or ())),
        status=ExecutiveStatus(status)
        if status in {s.value for s in ExecutiveStatus}
        else ExecutiveStatus.OFFLINE,
        last_active_at=_aware(doc.get("last_active_at")),
        max_open_chats=None if capacity is None else int(capacity),
    )


class MongoExecutiveStore(_OneCollectionPort, ExecutiveStore):
    """Executives (``Settings.executives_collection``): ``_id``, ``name``,
    ``customer_types`` (array), ``status``, ``last_active_at``,
    ``max_open_chats``; written by compare-and-set on ``_v``."""

    default_collection = "v2_executives"

    @_translated
    async def ensure_indexes(self) -> None:
        await _create_indexes(
            self._c,
            [
                ("presence", [("status", 1), ("last_active_at", 1), ("_id", 1)], {}),
                ("type_status", [("customer_types", 1), ("status", 1), ("_id", 1)], {}),
            ],
        )

    def inactive_queries(self, cutoff: datetime) -> list[tuple[Doc, list[tuple[str, int]]]]:
        sort = [("last_active_at", 1), ("_id", 1)]
        return [
            ({"status": status.value, "last_active_at": _at_or_before(cutoff)}, sort)
            for status in (ExecutiveStatus.ONLINE, ExecutiveStatus.AWAY)
        ]

    async def _cas(self, doc: Doc, changes: Doc) -> None:
        result = await self._c.update_one(
            {"_id": doc["_id"], "_v": doc.get("_v")}, {"$set": changes, "$inc": {"_v": 1}}
        )
        if not result.matched:
            raise _Conflict

    async def _run(self, attempt: Callable[[], Awaitable[T]]) -> T:
        for number in _Retries("an executive write"):
            try:
                return await attempt()
            except _Conflict:
                await _backoff(number)
        raise AssertionError("unreachable")  # pragma: no cover

    @_translated
    async def upsert(
        self,
        executive_id: str,
        *,
        name: str,
        customer_types: frozenset[str],
        max_open_chats: int | None,
    ) -> tuple[Executive | None, Executive]:
        executive_id = _plain("executive_id", executive_id)
        name = _plain("name", name)
        types = sorted(_plain("customer_types", t) for t in customer_types)
        profile = {"name": name, "customer_types": types, "max_open_chats": max_open_chats}

        async def attempt() -> tuple[Executive | None, Executive]:
            doc = await self._c.find_one({"_id": _id_filter(executive_id)})
            if doc is None:
                new = {
                    "_id": executive_id,
                    **profile,
                    "status": ExecutiveStatus.OFFLINE.value,
                    "last_active_at": None,
                    "_v": 1,
                }
                try:
                    await self._c.insert_one(new)
                except _errors().DuplicateKeyError as exc:
                    raise _Conflict from exc
                return None, _executive_from_doc(new)
            before = _executive_from_doc(doc)
            await self._cas(doc, profile)
            return before, _executive_from_doc({**doc, **profile})

        return await self._run(attempt)

    @_translated
    async def get(self, executive_id: str) -> Executive | None:
        doc = await self._c.find_one({"_id": _id_filter(_plain("executive_id", executive_id))})
        return None if doc is None else _executive_from_doc(doc)

    @_translated
    async def list(
        self, *, customer_type: str | None = None, status: ExecutiveStatus | None = None
    ) -> Sequence[Executive]:
        filter: Doc = {}
        if customer_type is not None:
            filter["customer_types"] = _plain("customer_type", customer_type)
        if status is not None:
            filter["status"] = ExecutiveStatus(status).value
        docs = await self._c.find(filter, sort=[("_id", 1)])
        executives = [_executive_from_doc(doc) for doc in docs]
        return sorted(executives, key=lambda e: e.id)

    @_translated
    async def set_status(
        self, executive_id: str, status: ExecutiveStatus, *, now: datetime
    ) -> StatusChange | None:
        executive_id = _plain("executive_id", executive_id)
        status = ExecutiveStatus(status)
        now = _ms(now)

        async def attempt() -> StatusChange | None:
            doc = await self._c.find_one({"_id": _id_filter(executive_id)})
            if doc is None:
                return None
            before = _executive_from_doc(doc)
            last = max(now, before.last_active_at) if before.last_active_at else now
            changes = {"status": status.value, "last_active_at": last}
            await self._cas(doc, changes)
            return StatusChange(before, _executive_from_doc({**doc, **changes}))

        return await self._run(attempt)

    @_translated
    async def touch(self, executive_id: str, *, now: datetime) -> Executive | None:
        executive_id = _plain("executive_id", executive_id)
        now = _ms(now)

        async def attempt() -> Executive | None:
            doc = await self._c.find_one({"_id": _id_filter(executive_id)})
            if doc is None:
                return None
            before = _executive_from_doc(doc)
            if before.last_active_at is not None and before.last_active_at >= now:
                return before
            await self._cas(doc, {"last_active_at": now})
            return attrs.evolve(before, last_active_at=now)

        return await self._run(attempt)

    @_translated
    async def inactive(self, cutoff: datetime, *, limit: int) -> Sequence[Executive]:
        if limit <= 0:
            return []
        found: list[Executive] = []
        for filter, sort in self.inactive_queries(_ms(cutoff)):
            docs = await self._c.find(filter, sort=sort, limit=limit)
            found.extend(_executive_from_doc(doc) for doc in docs)
        found.sort(key=lambda e: (_ts(e.last_active_at), e.id))
        return found[:limit]


# ------------------------------------------------------------------------ rotation


class MongoRotation(_OneCollectionPort, Rotation):
    """One document per customer type: ``{_id: type, members: [...], cursor,
    v}``.  The ring is ``members`` rotated left by ``cursor``; :meth:`next` is
    one ``find_one_and_update`` (``$inc`` of the cursor; the head is the
    member at the cursor it moved past) -- atomic, O(1).  ``add``/``remove``/``replace`` rewrite
    the ring head first (cursor 0) by compare-and-set on ``v`` and ``cursor``.
    """

    default_collection = DEFAULT_ROTATION_COLLECTION

    @staticmethod
    def _ring(doc: Mapping[str, Any] | None) -> list[str]:
        if doc is None:
            return []
        members = [str(m) for m in doc.get("members") or ()]
        if not members:
            return []
        start = int(doc.get("cursor", 0)) % len(members)
        return members[start:] + members[:start]

    async def _rewrite(
        self, customer_type: str, change: Callable[[list[str]], list[str] | None]
    ) -> None:
        for number in _Retries("a rotation change"):
            doc = await self._c.find_one({"_id": customer_type})
            ring = self._ring(doc)
            new = change(ring)
            if new is None:
                return
            if doc is None:
                try:
                    await self._c.insert_one(
                        {"_id": customer_type, "members": new, "cursor": 0, "v": 1}
                    )
                    return
                except _errors().DuplicateKeyError:
                    continue
            result = await self._c.update_one(
                {"_id": customer_type, "v": doc.get("v"), "cursor": doc.get("cursor")},
                {"$set": {"members": new, "cursor": 0}, "$inc": {"v": 1}},
            )
            if result.matched:
                return
            await _backoff(number)
        raise AssertionError("unreachable")  # pragma: no cover

    @_translated
    async def add(self, customer_type: str, executive_id: str) -> None:
        customer_type = _plain("customer_type", customer_type)
        executive_id = _plain("executive_id", executive_id)
        await self._rewrite(
            customer_type, lambda ring: None if executive_id in ring else [*ring, executive_id]
        )

    @_translated
    async def remove(self, customer_type: str, executive_id: str) -> None:
        customer_type = _plain("customer_type", customer_type)
        executive_id = _plain("executive_id", executive_id)
        await self._rewrite(
            customer_type,
            lambda ring: [e for e in ring if e != executive_id] if executive_id in ring else None,
        )

    @_translated
    async def give_back(self, customer_type: str, executive_id: str) -> None:
        customer_type = _plain("customer_type", customer_type)
        executive_id = _plain("executive_id", executive_id)
        await self._rewrite(
            customer_type,
            lambda ring: (
                [executive_id, *(e for e in ring if e != executive_id)]
                if executive_id in ring
                else None
            ),
        )

    @_translated
    async def next(self, customer_type: str) -> str | None:
        customer_type = _plain("customer_type", customer_type)
        # The head is read from the post-image (the cursor this call moved
        # past): SecantusDB returns a stale pre-image under concurrency.
        doc = await self._c.find_one_and_update(
            {"_id": customer_type, "members.0": {"$exists": True}},
            {"$inc": {"cursor": 1}},
            after=True,
        )
        if doc is None:
            return None
        members = [str(m) for m in doc["members"]]
        return members[(int(doc["cursor"]) - 1) % len(members)]

    @_translated
    async def members(self, customer_type: str) -> Sequence[str]:
        return self._ring(await self._c.find_one({"_id": _plain("customer_type", customer_type)}))

    @_translated
    async def replace(self, customer_type: str, executive_ids: Sequence[str]) -> None:
        customer_type = _plain("customer_type", customer_type)
        members = list(dict.fromkeys(_plain("executive_id", e) for e in executive_ids))
        await self._c.update_one(
            {"_id": customer_type},
            {"$set": {"members": members, "cursor": 0}, "$inc": {"v": 1}},
            upsert=True,
        )


# --------------------------------------------------------------------- dedup, lock


class _Leases(_OneCollectionPort):
    """Documents ``{_id: key, token, expires_at, purge_at}``.

    Expiry is decided on the clock port (``expires_at``); a TTL index on
    ``purge_at`` (wall clock, ``purge_margin`` after the expiry) only removes
    old documents, so virtual time in tests and simulations is never cut
    short by the server's TTL monitor.

    Args:
        connection: the shared :class:`MongoConnection`.
        clock: the desk's clock (expiry is decided on it).
        collection: the collection; ``None``: the adapter's default.
        purge_margin: how long after expiry the TTL index removes a document.
        ensure_indexes: create the TTL index in ``start``.
    """

    def __init__(
        self,
        connection: MongoConnection,
        *,
        clock: Clock,
        collection: str | None = None,
        purge_margin: timedelta = timedelta(hours=1),
        ensure_indexes: bool = True,
    ) -> None:
        super().__init__(connection, collection=collection, ensure_indexes=ensure_indexes)
        self.clock = clock
        self.purge_margin = purge_margin

    @_translated
    async def ensure_indexes(self) -> None:
        await _create_indexes(self._c, [("purge", [("purge_at", 1)], {"expireAfterSeconds": 0})])

    async def _claim(self, key: str, token: str, ttl: timedelta) -> bool:
        now = _ms(self.clock.now())
        wall = datetime.now(_UTC)
        try:
            await self._c.update_one(
                {"_id": key, "expires_at": {"$lte": now}},
                {
                    "$set": {
                        "token": token,
                        "expires_at": now + ttl,
                        "purge_at": wall + ttl + self.purge_margin,
                    }
                },
                upsert=True,
            )
        except _errors().DuplicateKeyError:
            return False  # someone holds it and it has not expired
        return True


class MongoAlertDedup(_Leases, AlertDedup):
    """SLA alert dedup keys: a claim is one upsert-if-expired."""

    default_collection = DEFAULT_DEDUP_COLLECTION

    @_translated
    async def claim(self, key: str, ttl: timedelta) -> bool:
        return await self._claim(_plain("key", key), "1", ttl)

    @_translated
    async def release(self, key: str) -> None:
        await self._c.delete_one({"_id": _plain("key", key)})


class MongoLock(_Leases, Lock):
    """Named leases: acquire is one upsert-if-expired, release deletes only
    the holder's unexpired lease."""

    default_collection = DEFAULT_LOCKS_COLLECTION

    @_translated
    async def acquire(self, name: str, token: str, ttl: timedelta) -> bool:
        return await self._claim(_plain("name", name), _plain("token", token), ttl)

    @_translated
    async def release(self, name: str, token: str) -> bool:
        now = _ms(self.clock.now())
        deleted = await self._c.delete_one(
            {
                "_id": _plain("name", name),
                "token": _plain("token", token),
                "expires_at": {"$gt": now},
            }
        )
        return deleted > 0


# ---------------------------------------------------------------- ratings and log


def _rating_from_doc(doc: Mapping[str, Any]) -> Rating:
    resolved = _aware(doc.get("resolved_at"))
    rated = _aware(doc.get("rated_at"))
    assert resolved is not None and rated is not None
    return Rating(
        chat_id=str(doc["chat_id"]),
        score=int(doc["score"]),
        comment=doc.get("comment"),
        executive_id=_str_or_none(doc.get("executive_id")),
        customer_id=str(doc.get("customer_id") or ""),
        resolved_at=resolved,
        rated_at=rated,
    )


class MongoRatingStore(_OneCollectionPort, RatingStore):
    """Ratings (``Settings.ratings_collection``, seed: ``v2_chat_ratings``);
    a unique index on (chat_id, resolved_at) makes ``add`` atomic."""

    default_collection = "v2_chat_ratings"

    @_translated
    async def ensure_indexes(self) -> None:
        await _create_indexes(
            self._c, [("rating_once", [("chat_id", 1), ("resolved_at", 1)], {"unique": True})]
        )

    @_translated
    async def add(self, rating: Rating) -> bool:
        doc = {
            "chat_id": _plain("chat_id", rating.chat_id),
            "score": rating.score,
            "comment": rating.comment,
            "executive_id": rating.executive_id,
            "customer_id": rating.customer_id,
            "resolved_at": _ms(rating.resolved_at),
            "rated_at": _ms(rating.rated_at),
        }
        try:
            await self._c.insert_one(doc)
        except _errors().DuplicateKeyError:
            return False
        return True

    @_translated
    async def for_chat(self, chat_id: str) -> Sequence[Rating]:
        docs = await self._c.find(
            {"chat_id": _plain("chat_id", chat_id)}, sort=[("rated_at", 1), ("_id", 1)]
        )
        return [_rating_from_doc(doc) for doc in docs]


def _entry_from_doc(doc: Mapping[str, Any]) -> ResolutionEntry:
    opened = _aware(doc.get("opened_at"))
    resolved = _aware(doc.get("resolved_at"))
    assert resolved is not None
    return ResolutionEntry(
        chat_id=str(doc["chat_id"]),
        executive_id=_str_or_none(doc.get("executive_id")),
        customer_id=str(doc.get("customer_id") or ""),
        customer_type=str(doc.get("customer_type") or ""),
        opened_at=opened or resolved,
        resolved_at=resolved,
        tags=tuple(str(t) for t in doc.get("tags") or ()),
    )


class MongoResolutionLog(_OneCollectionPort, ResolutionLog):
    """The resolve log (``Settings.resolutions_collection``), newest first."""

    default_collection = "v2_chat_resolve_log"

    @_translated
    async def ensure_indexes(self) -> None:
        newest = [("resolved_at", -1), ("_id", -1)]
        await _create_indexes(
            self._c,
            [
                ("by_chat", [("chat_id", 1), *newest], {}),
                ("by_executive", [("executive_id", 1), *newest], {}),
                ("newest", list(newest), {}),
            ],
        )

    @_translated
    async def append(self, entry: ResolutionEntry) -> None:
        await self._c.insert_one(
            {
                "chat_id": _plain("chat_id", entry.chat_id),
                "executive_id": entry.executive_id,
                "customer_id": entry.customer_id,
                "customer_type": entry.customer_type,
                "opened_at": _ms(entry.opened_at),
                "resolved_at": _ms(entry.resolved_at),
                "tags": list(entry.tags),
            }
        )

    @_translated
    async def entries(
        self, *, chat_id: str | None = None, executive_id: str | None = None, limit: int = 100
    ) -> Sequence[ResolutionEntry]:
        filter: Doc = {}
        if chat_id is not None:
            filter["chat_id"] = _plain("chat_id", chat_id)
        if executive_id is not None:
            filter["executive_id"] = _plain("executive_id", executive_id)
        if limit <= 0:
            return []
        docs = await self._c.find(filter, sort=[("resolved_at", -1), ("_id", -1)], limit=limit)
        return [_entry_from_doc(doc) for doc in docs]


# -------------------------------------------------------------------- composition


def mongo_ports(
    client_or_url: Any,
    *,
    database: str,
    settings: Settings,
    clock: Clock,
    rotation_collection: str | None = None,
    dedup_collection: str | None = None,
    locks_collection: str | None = None,
    async_client: bool = False,
    ensure_indexes: bool = True,
    cache_size: int = 10_000,
    client_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Mongo adapters over one client, by port name: ``chats``,
    ``executives``, ``ratings``, ``resolutions``, ``rotation``, ``dedup``,
    ``lock`` (take the last three from Redis instead if you have it).

    Nothing connects until a port's ``start`` (or first use).  See
    :class:`MongoConnection` for ``client_or_url`` and ``async_client``,
    :class:`MongoChatStore` for ``cache_size``.  Collection names default to the ``Settings`` ones.
    """
    rotation_collection = rotation_collection or settings.rotation_collection
    dedup_collection = dedup_collection or settings.dedup_collection
    locks_collection = locks_collection or settings.locks_collection
    connection = MongoConnection(
        client_or_url,
        database=database,
        async_client=async_client,
        client_options=client_options,
    )
    return {
        "chats": MongoChatStore(
            connection,
            awaiting_tag=settings.awaiting_tag,
            chats_collection=settings.chats_collection,
            cache_size=cache_size,
            ensure_indexes=ensure_indexes,
        ),
        "executives": MongoExecutiveStore(
            connection, collection=settings.executives_collection, ensure_indexes=ensure_indexes
        ),
        "ratings": MongoRatingStore(
            connection, collection=settings.ratings_collection, ensure_indexes=ensure_indexes
        ),
        "resolutions": MongoResolutionLog(
            connection, collection=settings.resolutions_collection, ensure_indexes=ensure_indexes
        ),
        "rotation": MongoRotation(
            connection, collection=rotation_collection, ensure_indexes=ensure_indexes
        ),
        "dedup": MongoAlertDedup(
            connection, clock=clock, collection=dedup_collection, ensure_indexes=ensure_indexes
        ),
        "lock": MongoLock(
            connection, clock=clock, collection=locks_collection, ensure_indexes=ensure_indexes
        ),
    }
