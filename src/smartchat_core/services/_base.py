from __future__ import annotations

import logging
from datetime import datetime
from typing import TypeVar

import attrs

from .._errors import ChatNotFoundError, ExecutiveNotFoundError
from .._events import Event
from .._models import Chat, Executive
from .._settings import Settings
from .._validation import identifier
from ..abc import (
    AlertDedup,
    ChatStore,
    Clock,
    EventPublisher,
    ExecutiveStore,
    Lock,
    MessageSender,
    RatingStore,
    ResolutionLog,
    Rotation,
)

logger = logging.getLogger("smartchat_core")

_T = TypeVar("_T")
_IN_PROCESS: set[type] = set()


def in_process_port(cls: type[_T]) -> type[_T]:
    """Mark a port class whose methods complete without suspending (they
    await nothing, as the in-memory adapters): no cancellation can land
    inside a call, so the services need no cancellation shield around it.

    Only that exact class is marked: a subclass, or a wrapper around an
    instance, is not (it may await), and gets the shield.
    """
    _IN_PROCESS.add(cls)
    return cls


def in_process(*ports: object) -> bool:
    """Whether every one of these ports is of a class marked with
    :func:`in_process_port`."""
    return all(type(port) in _IN_PROCESS for port in ports)


@attrs.frozen(kw_only=True)
class Ports:
    """Everything the services need: one adapter per port, and the settings."""

    settings: Settings
    clock: Clock
    chats: ChatStore
    executives: ExecutiveStore
    rotation: Rotation
    dedup: AlertDedup
    lock: Lock
    publisher: EventPublisher
    sender: MessageSender
    ratings: RatingStore
    resolutions: ResolutionLog

    def all(self) -> tuple[object, ...]:
        return (
            self.chats,
            self.executives,
            self.rotation,
            self.dedup,
            self.lock,
            self.publisher,
            self.sender,
            self.ratings,
            self.resolutions,
        )


def render(template: str, **fields: object) -> str:
    """``template.format(**fields)``, except that a template with an unknown or
    malformed field is used as it is (and logged) instead of failing an
    operation half-way (after its writes)."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as error:
        logger.error("message template %r cannot be filled (%r): sent as it is", template, error)
        return template


class Service:
    """Base of the services: the ports, the time, and small shared helpers."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        self.settings = ports.settings

    def now(self) -> datetime:
        return self.ports.clock.now()

    async def publish(self, event: Event) -> None:
        await self.ports.publisher.publish(event)

    def chat_id(self, value: object) -> str:
        return identifier("chat_id", value, max_length=self.settings.max_id_length)

    def executive_id(self, value: object) -> str:
        return identifier("executive_id", value, max_length=self.settings.max_id_length)

    async def load_chat(self, chat_id: str) -> Chat:
        chat = await self.ports.chats.get(chat_id)
        if chat is None:
            raise ChatNotFoundError(chat_id)
        return chat

    async def with_counters(self, executive: Executive) -> Executive:
        counters = (await self.ports.chats.executive_counters([executive.id]))[executive.id]
        return attrs.evolve(
            executive, open_chats=counters.open_chats, awaiting_chats=counters.awaiting_chats
        )

    async def load_executive(self, executive_id: str) -> Executive:
        executive = await self.ports.executives.get(executive_id)
        if executive is None:
            raise ExecutiveNotFoundError(executive_id)
        return executive
