"""The authorisation rule of :class:`~smartchat_core.Actor`, applied by the
facade before every operation (see :mod:`smartchat_core._auth`)."""

from __future__ import annotations

from .._auth import Actor
from .._errors import InvalidInputError, PermissionDeniedError
from .._models import Chat
from ._base import Service


def check_actor(actor: object) -> Actor:
    """An :class:`Actor` (never a dict or a role string from a request)."""
    if not isinstance(actor, Actor):
        raise InvalidInputError("actor", f"must be an Actor, got {type(actor).__name__}")
    return actor


class Authorizer(Service):
    def require_privileged(self, actor: Actor, operation: str) -> None:
        """Supervisors and the system only."""
        check_actor(actor)
        if not actor.is_privileged:
            raise PermissionDeniedError(f"{_who(actor)} may not {operation}")

    def require_self(self, actor: Actor, executive_id: str, operation: str) -> None:
        """An executive acts on itself only."""
        check_actor(actor)
        if actor.is_customer:
            raise PermissionDeniedError(f"a customer may not {operation}")
        if actor.is_executive and actor.id != executive_id:
            raise PermissionDeniedError(f"an executive may {operation} only for itself")

    async def require_chat(self, actor: Actor, chat_id: str, operation: str) -> Chat | None:
        """An executive acts only on chats assigned to it.  Returns the chat it
        read (``None`` for privileged actors, who need no read)."""
        check_actor(actor)
        if actor.is_privileged:
            return None
        if actor.is_customer:
            raise PermissionDeniedError(f"a customer may not {operation} chats")
        chat = await self.load_chat(self.chat_id(chat_id))
        if chat.assigned_executive_id != actor.id:
            raise PermissionDeniedError(f"an executive may {operation} only chats assigned to it")
        return chat

    def listing_scope(self, actor: Actor, assigned_executive_id: str | None) -> str | None:
        """Executives see "My chats": the filter is forced to themselves."""
        check_actor(actor)
        if actor.is_privileged:
            return assigned_executive_id
        if actor.is_customer:
            raise PermissionDeniedError("a customer may not list chats")
        if assigned_executive_id not in (None, actor.id):
            raise PermissionDeniedError("an executive sees only its own chats")
        return actor.id


def _who(actor: Actor) -> str:
    return "a customer" if actor.is_customer else "an executive"
