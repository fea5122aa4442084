"""Resolution and rating (the seed had it inline in ``events.py``; the audit
asked for its own module)."""

from __future__ import annotations

from .. import _events as events
from .._auth import sign_rating, verify_rating
from .._errors import (
    AlreadyRatedError,
    ChatNotResolvedError,
    DeliveryError,
    InvalidInputError,
    NotAssigneeError,
    PermissionDeniedError,
)
from .._models import Chat, Rating, ResolutionEntry
from .._validation import integer, text
from ._base import Service, logger, render
from .executives import ExecutiveService


class ResolutionService(Service):
    def __init__(self, executives: ExecutiveService) -> None:
        super().__init__(executives.ports)
        self.executives = executives

    async def resolve_chat(self, chat_id: str, *, executive_id: str | None = None) -> Chat:
        """Resolve a chat: ``is_resolved``, counters down, tags cleared, a
        resolve log entry, the resolution message to the customer, and
        ``chat_resolved``.  Resolving a resolved chat changes nothing.

        ``executive_id``, when given, must be the chat's assignee (an
        executive resolves its own chats); without it the caller acts as a
        supervisor.
        """
        chat_id = self.chat_id(chat_id)
        if executive_id is not None:
            executive_id = self.executive_id(executive_id)
            await self.load_executive(executive_id)
        chat = await self.load_chat(chat_id)
        if chat.is_resolved:
            return chat
        if executive_id is not None and chat.assigned_executive_id != executive_id:
            raise NotAssigneeError(chat_id, executive_id)
        now = self.now()
        change = await self.ports.chats.resolve(chat_id, now=now)
        resolved = change.chat
        if not change.changed or resolved is None:
            return resolved if resolved is not None else chat
        holder = resolved.assigned_executive_id
        await self.ports.resolutions.append(
            ResolutionEntry(
                chat_id=chat_id,
                executive_id=holder,
                customer_id=resolved.customer_id,
                customer_type=resolved.customer_type,
                opened_at=chat.opened_at,
                resolved_at=now,
                tags=chat.tags,
            )
        )
        if executive_id is not None:
            await self.ports.executives.touch(executive_id, now=now)
        if self.settings.resolution_message:
            try:
                await self.ports.sender.send_text(
                    resolved.customer_id, self.resolution_text(resolved)
                )
            except DeliveryError:
                logger.exception("resolution message for chat %s not delivered", chat_id)
        await self.publish(events.chat_resolved(resolved, holder, now))
        if holder is not None:
            # Capacity freed: the holder may take a waiting chat.
            holder_executive = await self.ports.executives.get(holder)
            if holder_executive is not None and holder_executive.max_open_chats is not None:
                await self.executives.drain_waiting(holder_executive.customer_types)
        return resolved

    def rating_token(self, chat: Chat) -> str:
        """The signed token that lets the customer rate this resolution."""
        secret = self.settings.rating_secret
        if not secret:
            raise InvalidInputError("rating_secret", "is not configured in Settings")
        if chat.resolved_at is None:
            raise ChatNotResolvedError(chat.id)
        return sign_rating(secret, chat.id, chat.resolved_at)

    def resolution_text(self, chat: Chat) -> str:
        template = self.settings.resolution_message or ""
        token = self.rating_token(chat) if self.settings.rating_secret else ""
        return render(
            template, chat_id=chat.id, customer_name=chat.customer_name, rating_token=token
        )

    async def rate_chat(
        self,
        chat_id: str,
        *,
        score: int,
        comment: str | None = None,
        token: str | None = None,
        require_token: bool = False,
    ) -> Rating:
        """Store the customer's rating (1-5) of the chat's latest resolution;
        once per resolution.  Emits ``chat_rated``.

        With ``require_token`` (customers rating through a link), ``token``
        must be the chat's signed rating token for its latest resolution.
        """
        chat_id = self.chat_id(chat_id)
        score = integer("score", score, minimum=1, maximum=5)
        if comment is not None:
            comment = (
                text(
                    "comment",
                    comment,
                    max_length=self.settings.max_comment_length,
                    allow_empty=True,
                )
                or None
            )
        if token is not None and not isinstance(token, str):
            raise InvalidInputError("token", "must be a string")
        chat = await self.load_chat(chat_id)
        if not chat.is_resolved or chat.resolved_at is None:
            raise ChatNotResolvedError(chat_id)
        if require_token or token is not None:
            secret = self.settings.rating_secret
            if (
                not secret
                or token is None
                or not verify_rating(secret, chat_id, chat.resolved_at, token)
            ):
                raise PermissionDeniedError("invalid or expired rating token")
        now = self.now()
        rating = Rating(
            chat_id=chat_id,
            score=score,
            comment=comment,
            executive_id=chat.assigned_executive_id,
            customer_id=chat.customer_id,
            resolved_at=chat.resolved_at,
            rated_at=now,
        )
        if not await self.ports.ratings.add(rating):
            raise AlreadyRatedError(chat_id)
        await self.publish(events.chat_rated(rating, now))
        return rating
