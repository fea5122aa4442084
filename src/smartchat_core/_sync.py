"""SmartChat: the blocking twin of AsyncSmartChat for sync hosts (Flask,
scripts, Django views), over an anyio blocking portal running the event loop
in a thread of its own."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._auth import SYSTEM, Actor
from ._desk import AsyncSmartChat
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
from .abc import Clock, EventPublisher, MessageSender
from .services import SlaAlert
from .services.listing import DashboardCounters

__all__ = ["SmartChat", "SyncSubscription"]


T = TypeVar("T")


class SyncSubscription:
    """Blocking iterator over a subscription's events."""

    def __init__(self, portal: BlockingPortal, events: Any) -> None:
        self._portal = portal
        self._events = events

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        try:
            event: Event = self._portal.call(self._events.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None
        return event

    def get(self, timeout: float) -> Event | None:
        """The next event, or ``None`` if none comes within ``timeout`` seconds."""
        import anyio

        async def receive() -> Event | None:
            with anyio.move_on_after(timeout):
                event: Event = await self._events.__anext__()
                return event
            return None

        return self._portal.call(receive)


class SmartChat:
    """Every operation of :class:`AsyncSmartChat`, as blocking calls::

        with SmartChat.in_memory() as desk:
            desk.register_executive("e1", name="Asha", customer_types={"retail"})
            desk.set_executive_status("e1", "online")

    The event loop (asyncio by default, or trio) runs in a portal thread
    started on ``__enter__``.  The methods may be called from any thread.
    """

    def __init__(self, desk: AsyncSmartChat, *, backend: str = "asyncio") -> None:
        self.desk = desk
        self.backend = backend
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._monitors: Future[None] | None = None

    @classmethod
    def in_memory(
        cls,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        sender: MessageSender | None = None,
        publisher: EventPublisher | None = None,
        backend: str = "asyncio",
    ) -> SmartChat:
        """A blocking desk on the in-memory backend (see
        :meth:`AsyncSmartChat.in_memory`)."""
        desk = AsyncSmartChat.in_memory(
            settings=settings, clock=clock, sender=sender, publisher=publisher
        )
        return cls(desk, backend=backend)

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
        backend: str = "asyncio",
    ) -> SmartChat:
        """A blocking desk with backends chosen by URL (see
        :meth:`AsyncSmartChat.from_urls`).  Redis needs ``backend="asyncio"``."""
        desk = AsyncSmartChat.from_urls(
            mongodb_url=mongodb_url,
            redis_url=redis_url,
            database=database,
            settings=settings,
            clock=clock,
            sender=sender,
            publisher=publisher,
            mongodb_async=mongodb_async,
        )
        return cls(desk, backend=backend)

    def __enter__(self) -> SmartChat:
        if self._portal is not None:
            raise RuntimeError("this desk is already started")
        self._portal_cm = start_blocking_portal(self.backend)
        self._portal = self._portal_cm.__enter__()
        try:
            self._portal.call(self.desk.__aenter__)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            self._portal = self._portal_cm = None
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        portal, portal_cm = self._portal, self._portal_cm
        if portal is None or portal_cm is None:
            return
        try:
            self.stop_monitors()
            portal.call(self.desk.__aexit__, exc_type, exc, tb)
            # Cancel what is left (e.g. a subscription still open in another
            # thread), or the portal would wait for it forever.
            portal.call(portal.stop, True)
        finally:
            self._portal = self._portal_cm = None
            portal_cm.__exit__(exc_type, exc, tb)

    @property
    def portal(self) -> BlockingPortal:
        if self._portal is None:
            raise RuntimeError("use the desk inside 'with SmartChat...(...) as desk:'")
        return self._portal

    def _run(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        return self.portal.call(functools.partial(func, *args, **kwargs))

    # -------------------------------------------------------------- monitors
    def start_monitors(self) -> None:
        """Run the monitors in the portal's event loop until
        :meth:`stop_monitors` or the end of the ``with`` block."""
        if self._monitors is None or self._monitors.done():
            self._monitors = self.portal.start_task_soon(self.desk.run_monitors)

    def stop_monitors(self) -> None:
        future, self._monitors = self._monitors, None
        if future is not None and not future.done():
            future.cancel()

    # ---------------------------------------------------------------- events
    @contextmanager
    def subscribe(
        self, rooms: Iterable[str] = ("dashboard",), *, actor: Actor = SYSTEM
    ) -> Iterator[SyncSubscription]:
        """Blocking subscription: ``for event in events`` or ``events.get(timeout)``."""
        subscription = self.desk.subscribe(rooms, actor=actor)
        with self.portal.wrap_async_context_manager(subscription) as events:
            yield SyncSubscription(self.portal, events)

    # ------------------------------------------------------------ operations
    def register_executive(
        self,
        executive_id: str,
        *,
        name: str,
        customer_types: Collection[str],
        max_open_chats: int | None = None,
        actor: Actor = SYSTEM,
    ) -> Executive:
        """See :meth:`AsyncSmartChat.register_executive`."""
        return self._run(
            self.desk.register_executive,
            executive_id,
            name=name,
            customer_types=customer_types,
            max_open_chats=max_open_chats,
            actor=actor,
        )

    def get_executive(self, executive_id: str) -> Executive:
        """See :meth:`AsyncSmartChat.get_executive`."""
        return self._run(self.desk.get_executive, executive_id)

    def list_executives(
        self, *, customer_type: str | None = None, status: str | ExecutiveStatus | None = None
    ) -> list[Executive]:
        """See :meth:`AsyncSmartChat.list_executives`."""
        return self._run(self.desk.list_executives, customer_type=customer_type, status=status)

    def set_executive_status(
        self, executive_id: str, status: str | ExecutiveStatus, *, actor: Actor = SYSTEM
    ) -> Executive:
        """See :meth:`AsyncSmartChat.set_executive_status`."""
        return self._run(self.desk.set_executive_status, executive_id, status, actor=actor)

    def set_executive_capacity(
        self, executive_id: str, max_open_chats: int | None, *, actor: Actor = SYSTEM
    ) -> Executive:
        """See :meth:`AsyncSmartChat.set_executive_capacity`."""
        return self._run(
            self.desk.set_executive_capacity, executive_id, max_open_chats, actor=actor
        )

    def heartbeat(self, executive_id: str, *, actor: Actor = SYSTEM) -> Executive:
        """See :meth:`AsyncSmartChat.heartbeat`."""
        return self._run(self.desk.heartbeat, executive_id, actor=actor)

    def get_online_executives(self, customer_type: str) -> list[Executive]:
        """See :meth:`AsyncSmartChat.get_online_executives`."""
        return self._run(self.desk.get_online_executives, customer_type)

    def assign_chat_round_robin(self, chat_id: str, *, actor: Actor = SYSTEM) -> Chat:
        """See :meth:`AsyncSmartChat.assign_chat_round_robin`."""
        return self._run(self.desk.assign_chat_round_robin, chat_id, actor=actor)

    def assign_waiting_chats(
        self, customer_types: Iterable[str] | None = None, *, actor: Actor = SYSTEM
    ) -> list[Chat]:
        """See :meth:`AsyncSmartChat.assign_waiting_chats`."""
        return self._run(self.desk.assign_waiting_chats, customer_types, actor=actor)

    def release_and_reassign_chats(self, executive_id: str, *, actor: Actor = SYSTEM) -> list[Chat]:
        """See :meth:`AsyncSmartChat.release_and_reassign_chats`."""
        return self._run(self.desk.release_and_reassign_chats, executive_id, actor=actor)

    def receive_customer_message(
        self,
        *,
        customer_id: str,
        customer_name: str,
        customer_type: str,
        text: str,
        actor: Actor = SYSTEM,
    ) -> Chat:
        """See :meth:`AsyncSmartChat.receive_customer_message`."""
        return self._run(
            self.desk.receive_customer_message,
            customer_id=customer_id,
            customer_name=customer_name,
            customer_type=customer_type,
            text=text,
            actor=actor,
        )

    def send_executive_message(
        self,
        chat_id: str,
        *,
        executive_id: str,
        text: str,
        send: bool = True,
        actor: Actor = SYSTEM,
    ) -> Chat:
        """See :meth:`AsyncSmartChat.send_executive_message`."""
        return self._run(
            self.desk.send_executive_message,
            chat_id,
            executive_id=executive_id,
            text=text,
            send=send,
            actor=actor,
        )

    def apply_tag(self, chat_id: str, tag: str, *, actor: Actor = SYSTEM) -> Chat:
        """See :meth:`AsyncSmartChat.apply_tag`."""
        return self._run(self.desk.apply_tag, chat_id, tag, actor=actor)

    def remove_tag(self, chat_id: str, tag: str, *, actor: Actor = SYSTEM) -> Chat:
        """See :meth:`AsyncSmartChat.remove_tag`."""
        return self._run(self.desk.remove_tag, chat_id, tag, actor=actor)

    def resolve_chat(
        self, chat_id: str, *, executive_id: str | None = None, actor: Actor = SYSTEM
    ) -> Chat:
        """See :meth:`AsyncSmartChat.resolve_chat`."""
        return self._run(self.desk.resolve_chat, chat_id, executive_id=executive_id, actor=actor)

    def rate_chat(
        self,
        chat_id: str,
        *,
        score: int,
        comment: str | None = None,
        token: str | None = None,
        actor: Actor = SYSTEM,
    ) -> Rating:
        """See :meth:`AsyncSmartChat.rate_chat`."""
        return self._run(
            self.desk.rate_chat, chat_id, score=score, comment=comment, token=token, actor=actor
        )

    def rating_token(self, chat_id: str, *, actor: Actor = SYSTEM) -> str:
        """See :meth:`AsyncSmartChat.rating_token`."""
        return self._run(self.desk.rating_token, chat_id, actor=actor)

    def get_chat(self, chat_id: str, *, actor: Actor = SYSTEM) -> Chat:
        """See :meth:`AsyncSmartChat.get_chat`."""
        return self._run(self.desk.get_chat, chat_id, actor=actor)

    def fetch_all_chats(
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
        """See :meth:`AsyncSmartChat.fetch_all_chats`."""
        return self._run(
            self.desk.fetch_all_chats,
            status=status,
            customer_type=customer_type,
            search=search,
            tag=tag,
            sender=sender,
            assigned_executive_id=assigned_executive_id,
            limit=limit,
            offset=offset,
            actor=actor,
        )

    def get_counters(self) -> DashboardCounters:
        """See :meth:`AsyncSmartChat.get_counters`."""
        return self._run(self.desk.get_counters)

    def recount(self, *, actor: Actor = SYSTEM) -> DashboardCounters:
        """See :meth:`AsyncSmartChat.recount`."""
        return self._run(self.desk.recount, actor=actor)

    def get_ratings(self, chat_id: str, *, actor: Actor = SYSTEM) -> Sequence[Rating]:
        """See :meth:`AsyncSmartChat.get_ratings`."""
        return self._run(self.desk.get_ratings, chat_id, actor=actor)

    def get_resolutions(
        self,
        *,
        chat_id: str | None = None,
        executive_id: str | None = None,
        limit: int = 100,
        actor: Actor = SYSTEM,
    ) -> Sequence[ResolutionEntry]:
        """See :meth:`AsyncSmartChat.get_resolutions`."""
        return self._run(
            self.desk.get_resolutions,
            chat_id=chat_id,
            executive_id=executive_id,
            limit=limit,
            actor=actor,
        )

    def run_sla_check(self, *, actor: Actor = SYSTEM) -> list[SlaAlert]:
        """See :meth:`AsyncSmartChat.run_sla_check`."""
        return self._run(self.desk.run_sla_check, actor=actor)

    def run_awaiting_check(self, *, actor: Actor = SYSTEM) -> list[Chat]:
        """See :meth:`AsyncSmartChat.run_awaiting_check`."""
        return self._run(self.desk.run_awaiting_check, actor=actor)

    def run_inactivity_check(self, *, actor: Actor = SYSTEM) -> list[Executive]:
        """See :meth:`AsyncSmartChat.run_inactivity_check`."""
        return self._run(self.desk.run_inactivity_check, actor=actor)
