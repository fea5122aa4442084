"""AsyncSmartChat: the composition root and the async facade."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType

from ._events import Event
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
from .services.listing import DashboardCounters

__all__ = ["AsyncSmartChat"]


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
    ) -> Executive:
        """Create an executive (offline) or update its profile.

        Args:
            executive_id: your id for the executive.
            name: display name.
            customer_types: the customer types it serves (non-empty).
            max_open_chats: capacity; ``None`` is unlimited.
        """
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
        self, executive_id: str, status: str | ExecutiveStatus
    ) -> Executive:
        """``online`` (gets new chats, pulls waiting ones), ``away`` (keeps its
        chats, gets no new ones) or ``offline`` (its chats are reassigned).
        Emits ``executive_status``."""
        return await self._executives.set_executive_status(executive_id, status)

    async def set_executive_capacity(
        self, executive_id: str, max_open_chats: int | None
    ) -> Executive:
        """Change ``max_open_chats``; more room pulls waiting chats."""
        return await self._executives.set_executive_capacity(executive_id, max_open_chats)

    async def heartbeat(self, executive_id: str) -> Executive:
        """Mark the executive active (e.g. on each dashboard ping)."""
        return await self._executives.heartbeat(executive_id)

    async def get_online_executives(self, customer_type: str) -> list[Executive]:
        """Online executives serving ``customer_type``."""
        return await self._executives.get_online_executives(customer_type)

    async def assign_chat_round_robin(self, chat_id: str) -> Chat:
        """Assign a waiting chat to the next available executive of its type
        (strict rotation, capacity respected); nobody: it keeps waiting."""
        return await self._executives.assign_chat_round_robin(chat_id)

    async def release_and_reassign_chats(self, executive_id: str) -> list[Chat]:
        """Move the executive's open chats to others (never back to it)."""
        return await self._executives.release_and_reassign_chats(executive_id)

    # ----------------------------------------------------------------- messages
    async def receive_customer_message(
        self, *, customer_id: str, customer_name: str, customer_type: str, text: str
    ) -> Chat:
        """A customer wrote (e.g. from the WhatsApp webhook): creates or reopens
        the chat, removes the awaiting tag, assigns it if unassigned."""
        return await self._intake.receive_customer_message(
            customer_id=customer_id,
            customer_name=customer_name,
            customer_type=customer_type,
            text=text,
        )

    async def send_executive_message(
        self, chat_id: str, *, executive_id: str, text: str, send: bool = True
    ) -> Chat:
        """The assigned executive replies; sent through the message sender
        unless ``send=False``."""
        return await self._intake.send_executive_message(
            chat_id, executive_id=executive_id, text=text, send=send
        )

    # --------------------------------------------------------------------- tags
    async def apply_tag(self, chat_id: str, tag: str) -> Chat:
        """Add a tag (idempotent); emits ``tag_updated`` if it was new."""
        return await self._tagging.apply_tag(chat_id, tag)

    async def remove_tag(self, chat_id: str, tag: str) -> Chat:
        """Remove a tag (idempotent); emits ``tag_updated`` if it was there."""
        return await self._tagging.remove_tag(chat_id, tag)

    # --------------------------------------------------------------- resolution
    async def resolve_chat(self, chat_id: str, *, executive_id: str | None = None) -> Chat:
        """Resolve a chat (idempotent).  See :class:`ResolutionService`."""
        return await self._resolution.resolve_chat(chat_id, executive_id=executive_id)

    async def rate_chat(self, chat_id: str, *, score: int, comment: str | None = None) -> Rating:
        """Rate the latest resolution of a resolved chat, 1 to 5, once."""
        return await self._resolution.rate_chat(chat_id, score=score, comment=comment)

    # ------------------------------------------------------------------ listing
    async def get_chat(self, chat_id: str) -> Chat:
        """One chat by id."""
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
    ) -> ChatPage:
        """List chats, latest activity first; see
        :meth:`ListingService.fetch_all_chats` for the filters."""
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

    async def recount(self) -> DashboardCounters:
        """Rebuild every counter from the chats."""
        return await self._listing.recount()

    async def get_ratings(self, chat_id: str) -> Sequence[Rating]:
        """Ratings of a chat, oldest first."""
        return await self._listing.get_ratings(chat_id)

    async def get_resolutions(
        self, *, chat_id: str | None = None, executive_id: str | None = None, limit: int = 100
    ) -> Sequence[ResolutionEntry]:
        """The resolve log, newest first."""
        return await self._listing.get_resolutions(
            chat_id=chat_id, executive_id=executive_id, limit=limit
        )

    # ----------------------------------------------------------------- monitors
    async def run_sla_check(self) -> list[SlaAlert]:
        """Send the SLA alerts due now.  The SLA monitor calls this."""
        return await self._sla.run_sla_check()

    async def run_awaiting_check(self) -> list[Chat]:
        """Tag awaiting the chats due now.  The awaiting tagger calls this."""
        return await self._tagging.run_awaiting_check()

    async def run_inactivity_check(self) -> list[Executive]:
        """Take inactive executives offline.  The inactivity monitor calls this."""
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
        self, rooms: Iterable[str] = ("dashboard",)
    ) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """Events for any of ``rooms`` (``dashboard``, ``executive:{id}``,
        ``chat:{id}``), from now until the context exits::

            async with desk.subscribe(rooms={"dashboard"}) as events:
                async for event in events:
                    print(event.name, event.payload)
        """
        if isinstance(rooms, str):
            rooms = (rooms,)
        checked = [text("rooms", room, max_length=256) for room in rooms]
        return self.ports.publisher.subscribe(checked)
