"""AsyncSmartChat: the composition root and the async facade."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType

from ._auth import SYSTEM, Actor
from ._errors import InvalidInputError, PermissionDeniedError
from ._events import Event, executive_room
from ._models import (
    Chat,
    ChatPage,
    ChatStatusFilter,
    Executive,
    ExecutiveStatus,
    Interlocutor,
    Rating,
    ResolutionEntry,
)
from ._settings import Settings
from ._validation import text
from .abc import Clock, EventPublisher, MessageSender, Port
from .services import (
    ExecutiveService,
    IntakeService,
    ListingService,
    MonitorService,
    Ports,
    ResolutionService,
    SlaAlert,
    SlaService,
    TaggingService,
)
from .services.authorization import Authorizer, check_actor
from .services.listing import DashboardCounters

__all__ = ["AsyncSmartChat"]


def _scheme(field: str, url: str | None) -> str | None:
    if url is None:
        return None
    if not isinstance(url, str) or "://" not in url:
        raise InvalidInputError(field, "must be a URL such as memory://, mongodb://, redis://")
    return url.split("://", 1)[0].lower()


class AsyncSmartChat:
    """The desk: every operation of the library, on anyio (asyncio or trio).

    Build it with :meth:`in_memory` or from your own :class:`Ports`, then use
    it as an async context manager (which starts and closes the adapters)::

        async with AsyncSmartChat.in_memory() as desk:
            await desk.register_executive("e1", name="Asha", customer_types={"retail"})
    """

    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        self.settings = ports.settings
        self.clock = ports.clock
        self._executives = ExecutiveService(ports)
        self._intake = IntakeService(self._executives)
        self._tagging = TaggingService(ports)
        self._sla = SlaService(ports)
        self._resolution = ResolutionService(self._executives)
        self._listing = ListingService(ports)
        self._monitors = MonitorService(self._executives, self._sla, self._tagging)
        self._auth = Authorizer(ports)
        self._exit_stack: AsyncExitStack | None = None

    @classmethod
    def in_memory(
        cls,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        sender: MessageSender | None = None,
        publisher: EventPublisher | None = None,
    ) -> AsyncSmartChat:
        """A desk on the in-memory backend: no server, one process.

        Args:
            settings: defaults to the seed's :class:`Settings`.
            clock: defaults to the system clock; tests pass a ``ManualClock``.
            sender: outbound WhatsApp; defaults to logging the messages.
            publisher: defaults to in-process fan-out.
        """
        from .adapters.memory import LoggingSender, SystemClock, memory_ports

        clock = clock or SystemClock()
        return cls(
            memory_ports(settings or Settings(), clock, sender or LoggingSender(), publisher)
        )

    @classmethod
    def from_urls(
        cls,
        *,
        mongodb_url: str | None = None,
        redis_url: str | None = None,
        database: str | None = None,
        settings: Settings | None = None,
        clock: Clock | None = None,
        sender: MessageSender | None = None,
        publisher: EventPublisher | None = None,
        mongodb_async: bool = False,
    ) -> AsyncSmartChat:
        """A desk whose backends are chosen by URL scheme; mixing is allowed.

        * ``mongodb_url``: ``mongodb://`` / ``mongodb+srv://`` (pymongo),
          ``mongomock://`` (in-process fake, for tests), or ``memory://`` /
          ``None``.  Chats, executives, ratings and the resolve log live there;
          so do the rotation, dedup keys and locks when there is no Redis.
        * ``redis_url``: ``redis://`` / ``rediss://`` / ``unix://`` (redis-py,
          asyncio only), ``fakeredis://`` (in-process fake), or ``memory://``
          / ``None``.  The rotation, SLA dedup keys, monitor leases and the
          event publisher (pub/sub, so every process sees every event) live
          there.
        * ``database``: the MongoDB database; default the URL's path, else
          ``smartchat``.
        * ``mongodb_async``: use pymongo's ``AsyncMongoClient`` (asyncio only,
          no worker threads) instead of the threaded synchronous client.

        Nothing connects until the desk is entered (``async with``).
        """
        from urllib.parse import urlsplit

        import attrs

        from .adapters.memory import LoggingSender, SystemClock, memory_ports

        settings = settings or Settings()
        clock = clock or SystemClock()
        ports = memory_ports(settings, clock, sender or LoggingSender(), publisher)
        overrides: dict[str, object] = {}
        mongo_scheme = _scheme("mongodb_url", mongodb_url)
        redis_scheme = _scheme("redis_url", redis_url)
        if mongo_scheme in ("mongodb", "mongodb+srv", "mongomock"):
            from .adapters.mongodb import mongo_ports

            assert mongodb_url is not None
            name = database or urlsplit(mongodb_url).path.strip("/") or "smartchat"
            client: object = mongodb_url
            if mongo_scheme == "mongomock":
                import mongomock

                client = mongomock.MongoClient(tz_aware=True)
            overrides.update(
                mongo_ports(
                    client,
                    database=name,
                    settings=settings,
                    clock=clock,
                    async_client=mongodb_async and mongo_scheme != "mongomock",
                )
            )
        elif mongo_scheme not in (None, "memory"):
            raise InvalidInputError("mongodb_url", f"unsupported scheme {mongo_scheme!r}")
        if redis_scheme in ("redis", "rediss", "unix", "fakeredis"):
            from .adapters.redis import redis_ports

            assert redis_url is not None
            redis_client: object = redis_url
            if redis_scheme == "fakeredis":
                import fakeredis

                redis_client = fakeredis.FakeAsyncRedis()
            redis_side = dict(
                redis_ports(redis_client, settings=settings, clock=clock)  # type: ignore[arg-type]
            )
            if publisher is not None:
                del redis_side["publisher"]
            overrides.update(redis_side)
        elif redis_scheme not in (None, "memory"):
            raise InvalidInputError("redis_url", f"unsupported scheme {redis_scheme!r}")
        return cls(attrs.evolve(ports, **overrides))  # type: ignore[arg-type]

    # ----------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> AsyncSmartChat:
        if self._exit_stack is not None:
            raise RuntimeError("this desk is already started")
        async with AsyncExitStack() as stack:
            started: set[int] = set()
            for port in self.ports.all():
                if isinstance(port, Port) and id(port) not in started:
                    started.add(id(port))
                    await port.start(stack)
            self._exit_stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._exit_stack = self._exit_stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    # ---------------------------------------------------------------- executives
    async def register_executive(
        self,
        executive_id: str,
        *,
        name: str,
        customer_types: Collection[str],
        max_open_chats: int | None = None,
        actor: Actor = SYSTEM,
    ) -> Executive:
        """Create an executive (offline) or update its profile.

        Args:
            executive_id: your id for the executive.
            name: display name.
            customer_types: the customer types it serves (non-empty).
            max_open_chats: capacity; ``None`` is unlimited.
        """
        self._auth.require_privileged(actor, "register executives")
        return await self._executives.register_executive(
            executive_id, name=name, customer_types=customer_types, max_open_chats=max_open_chats
        )

    async def get_executive(self, executive_id: str) -> Executive:
        """One executive with its ``open_chats`` and ``awaiting_chats``."""
        return await self._executives.get_executive(executive_id)

    async def list_executives(
        self, *, customer_type: str | None = None, status: str | ExecutiveStatus | None = None
    ) -> list[Executive]:
        """Executives with their counters, by id."""
        return await self._executives.list_executives(customer_type=customer_type, status=status)

    async def set_executive_status(
        self, executive_id: str, status: str | ExecutiveStatus, *, actor: Actor = SYSTEM
    ) -> Executive:
        """``online`` (gets new chats, pulls waiting ones), ``away`` (keeps its
        chats, gets no new ones) or ``offline`` (its chats are reassigned).
        Emits ``executive_status``."""
        self._auth.require_self(actor, executive_id, "set the status")
        return await self._executives.set_executive_status(executive_id, status)

    async def set_executive_capacity(
        self, executive_id: str, max_open_chats: int | None, *, actor: Actor = SYSTEM
    ) -> Executive:
        """Change ``max_open_chats``; more room pulls waiting chats."""
        self._auth.require_privileged(actor, "change capacities")
        return await self._executives.set_executive_capacity(executive_id, max_open_chats)

    async def heartbeat(self, executive_id: str, *, actor: Actor = SYSTEM) -> Executive:
        """Mark the executive active (e.g. on each dashboard ping)."""
        self._auth.require_self(actor, executive_id, "send heartbeats")
        return await self._executives.heartbeat(executive_id)

    async def get_online_executives(self, customer_type: str) -> list[Executive]:
        """Online executives serving ``customer_type``."""
        return await self._executives.get_online_executives(customer_type)

    async def assign_chat_round_robin(self, chat_id: str, *, actor: Actor = SYSTEM) -> Chat:
        """Assign a waiting chat to the next available executive of its type
        (strict rotation, capacity respected); nobody: it keeps waiting."""
        self._auth.require_privileged(actor, "assign chats")
        return await self._executives.assign_chat_round_robin(chat_id)

    async def assign_waiting_chats(
        self, customer_types: Iterable[str] | None = None, *, actor: Actor = SYSTEM
    ) -> list[Chat]:
        """Assign waiting chats (of these customer types; ``None``: every
        type with waiting chats), oldest first, while someone is available;
        returns the chats assigned.

        The desk does this by itself whenever an executive comes online or
        frees capacity; call it after changing executives or the rotation
        behind the desk's back (a script, a restore).  Each assignment is
        made on the chat as the queue query returned it (MongoDB: one
        ``update`` and one read of the executive per chat).
        """
        self._auth.require_privileged(actor, "assign chats")
        return await self._executives.assign_waiting_chats(customer_types)

    async def release_and_reassign_chats(
        self, executive_id: str, *, actor: Actor = SYSTEM
    ) -> list[Chat]:
        """Move the executive's open chats to others (never back to it)."""
        self._auth.require_privileged(actor, "release chats")
        return await self._executives.release_and_reassign_chats(executive_id)

    # ----------------------------------------------------------------- messages
    async def receive_customer_message(
        self,
        *,
        customer_id: str,
        customer_name: str,
        customer_type: str,
        text: str,
        actor: Actor = SYSTEM,
    ) -> Chat:
        """A customer wrote (e.g. from the WhatsApp webhook): creates or reopens
        the chat, removes the awaiting tag, assigns it if unassigned."""
        self._auth.require_privileged(actor, "post customer messages")
        return await self._intake.receive_customer_message(
            customer_id=customer_id,
            customer_name=customer_name,
            customer_type=customer_type,
            text=text,
        )

    async def send_executive_message(
        self,
        chat_id: str,
        *,
        executive_id: str,
        text: str,
        send: bool = True,
        actor: Actor = SYSTEM,
    ) -> Chat:
        """The assigned executive replies; sent through the message sender
        unless ``send=False``."""
        await self._auth.require_chat(actor, chat_id, "reply to")
        self._auth.require_self(actor, executive_id, "reply")
        return await self._intake.send_executive_message(
            chat_id, executive_id=executive_id, text=text, send=send
        )

    # --------------------------------------------------------------------- tags
    async def apply_tag(self, chat_id: str, tag: str, *, actor: Actor = SYSTEM) -> Chat:
        """Add a tag (idempotent); emits ``tag_updated`` if it was new."""
        await self._auth.require_chat(actor, chat_id, "tag")
        return await self._tagging.apply_tag(chat_id, tag)

    async def remove_tag(self, chat_id: str, tag: str, *, actor: Actor = SYSTEM) -> Chat:
        """Remove a tag (idempotent); emits ``tag_updated`` if it was there."""
        await self._auth.require_chat(actor, chat_id, "untag")
        return await self._tagging.remove_tag(chat_id, tag)

    # --------------------------------------------------------------- resolution
    async def resolve_chat(
        self, chat_id: str, *, executive_id: str | None = None, actor: Actor = SYSTEM
    ) -> Chat:
        """Resolve a chat (idempotent).  See :class:`ResolutionService`."""
        await self._auth.require_chat(actor, chat_id, "resolve")
        if actor.is_executive:
            self._auth.require_self(actor, executive_id or str(actor.id), "resolve")
            executive_id = actor.id
        return await self._resolution.resolve_chat(chat_id, executive_id=executive_id)

    async def rate_chat(
        self,
        chat_id: str,
        *,
        score: int,
        comment: str | None = None,
        token: str | None = None,
        actor: Actor = SYSTEM,
    ) -> Rating:
        """Rate the latest resolution of a resolved chat, 1 to 5, once.

        ``token``: the signed rating token the resolution message carried
        (:meth:`rating_token`); when given it must match.  With
        ``actor=Actor.customer()`` (customer-facing rating endpoints) it is
        required.  Executives may not rate.
        """
        if not check_actor(actor).is_customer:
            self._auth.require_privileged(actor, "rate chats")
        return await self._resolution.rate_chat(
            chat_id, score=score, comment=comment, token=token, require_token=actor.is_customer
        )

    async def rating_token(self, chat_id: str, *, actor: Actor = SYSTEM) -> str:
        """The signed token for rating the chat's latest resolution (needs
        ``Settings.rating_secret``); the resolution message can carry it as
        ``{rating_token}``."""
        self._auth.require_privileged(actor, "issue rating tokens")
        return self._resolution.rating_token(await self._listing.get_chat(chat_id))

    # ------------------------------------------------------------------ listing
    async def get_chat(self, chat_id: str, *, actor: Actor = SYSTEM) -> Chat:
        """One chat by id."""
        await self._auth.require_chat(actor, chat_id, "read")
        return await self._listing.get_chat(chat_id)

    async def fetch_all_chats(
        self,
        *,
        status: str | ChatStatusFilter | None = None,
        customer_type: str | None = None,
        search: str | None = None,
        tag: str | None = None,
        sender: str | Interlocutor | None = None,
        assigned_executive_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        actor: Actor = SYSTEM,
    ) -> ChatPage:
        """List chats, latest activity first; see
        :meth:`ListingService.fetch_all_chats` for the filters."""
        assigned_executive_id = self._auth.listing_scope(actor, assigned_executive_id)
        return await self._listing.fetch_all_chats(
            status=status,
            customer_type=customer_type,
            search=search,
            tag=tag,
            sender=sender,
            assigned_executive_id=assigned_executive_id,
            limit=limit,
            offset=offset,
        )

    async def get_counters(self) -> DashboardCounters:
        """Open, unassigned and awaiting chats per customer type."""
        return await self._listing.get_counters()

    async def recount(self, *, actor: Actor = SYSTEM) -> DashboardCounters:
        """Rebuild every counter from the chats."""
        self._auth.require_privileged(actor, "recount")
        return await self._listing.recount()

    async def get_ratings(self, chat_id: str, *, actor: Actor = SYSTEM) -> Sequence[Rating]:
        """Ratings of a chat, oldest first."""
        await self._auth.require_chat(actor, chat_id, "read the ratings of")
        return await self._listing.get_ratings(chat_id)

    async def get_resolutions(
        self,
        *,
        chat_id: str | None = None,
        executive_id: str | None = None,
        limit: int = 100,
        actor: Actor = SYSTEM,
    ) -> Sequence[ResolutionEntry]:
        """The resolve log, newest first."""
        if not check_actor(actor).is_privileged:  # executives: their own; customers: none
            self._auth.require_self(actor, executive_id or str(actor.id), "read the resolve log")
            executive_id = actor.id
        return await self._listing.get_resolutions(
            chat_id=chat_id, executive_id=executive_id, limit=limit
        )

    # ----------------------------------------------------------------- monitors
    async def run_sla_check(self, *, actor: Actor = SYSTEM) -> list[SlaAlert]:
        """Send the SLA alerts due now.  The SLA monitor calls this."""
        self._auth.require_privileged(actor, "run monitors")
        return await self._sla.run_sla_check()

    async def run_awaiting_check(self, *, actor: Actor = SYSTEM) -> list[Chat]:
        """Tag awaiting the chats due now.  The awaiting tagger calls this."""
        self._auth.require_privileged(actor, "run monitors")
        return await self._tagging.run_awaiting_check()

    async def run_inactivity_check(self, *, actor: Actor = SYSTEM) -> list[Executive]:
        """Take inactive executives offline.  The inactivity monitor calls this."""
        self._auth.require_privileged(actor, "run monitors")
        return await self._monitors.run_inactivity_check()

    async def run_monitors(self) -> None:
        """Run the SLA, awaiting and inactivity monitors until cancelled, each
        on its interval and once per interval across processes."""
        await self._monitors.run_monitors()

    @property
    def monitor_ticks(self) -> dict[str, int]:
        """How many ticks of each monitor this desk ran (not the others)."""
        return dict(self._monitors.ticks)

    # ------------------------------------------------------------------- events
    def subscribe(
        self, rooms: Iterable[str] = ("dashboard",), *, actor: Actor = SYSTEM
    ) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """Events for any of ``rooms`` (``dashboard``, ``executive:{id}``,
        ``chat:{id}``), from now until the context exits::

            async with desk.subscribe(rooms={"dashboard"}) as events:
                async for event in events:
                    print(event.name, event.payload)

        An executive may subscribe only to its own room, which receives every
        event about the chats assigned to it.
        """
        check_actor(actor)
        if isinstance(rooms, str):
            rooms = (rooms,)
        if not isinstance(rooms, Iterable):
            raise InvalidInputError("rooms", "must be a collection of room names")
        checked = [text("rooms", room, max_length=256) for room in rooms]
        if actor.is_customer or (
            actor.is_executive and set(checked) - {executive_room(str(actor.id))}
        ):
            raise PermissionDeniedError("an executive may subscribe only to its own room")
        return self.ports.publisher.subscribe(checked)
