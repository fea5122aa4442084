"""Tags with set semantics, and the awaiting tagger (``tagging_service.py``)."""

from __future__ import annotations

from .. import _events as events
from .._errors import ChatNotFoundError, ChatResolvedError
from .._models import Chat
from .._validation import text
from ..abc import ChatChange
from ._base import Service

_AWAITING_BATCH = 1000


class TaggingService(Service):
    def tag(self, value: object) -> str:
        return text("tag", value, max_length=self.settings.max_tag_length)

    async def apply_tag(self, chat_id: str, tag: str) -> Chat:
        """Add a tag to an open chat.  Idempotent; emits ``tag_updated`` only
        when the tag was not there."""
        chat_id, tag = self.chat_id(chat_id), self.tag(tag)
        change = await self.ports.chats.add_tag(chat_id, tag)
        return await self._finish(chat_id, tag, change, "added")

    async def remove_tag(self, chat_id: str, tag: str) -> Chat:
        """Remove a tag from an open chat.  Idempotent; emits ``tag_updated``
        only when the tag was there."""
        chat_id, tag = self.chat_id(chat_id), self.tag(tag)
        change = await self.ports.chats.remove_tag(chat_id, tag)
        return await self._finish(chat_id, tag, change, "removed")

    async def _finish(self, chat_id: str, tag: str, change: ChatChange, action: str) -> Chat:
        chat = change.chat
        if chat is None:
            raise ChatNotFoundError(chat_id)
        if chat.is_resolved:
            raise ChatResolvedError(chat_id)
        if change.changed:
            await self.publish(events.tag_updated(chat, tag, action, self.now()))
        return chat

    async def run_awaiting_check(self) -> list[Chat]:
        """Tag ``awaiting`` every open chat whose executive spoke last at least
        ``awaiting_after`` ago (the customer has not answered).  Costs the due
        chats only.  Returns the chats tagged."""
        tagged: list[Chat] = []
        cutoff = self.now() - self.settings.awaiting_after
        awaiting_tag = self.settings.awaiting_tag
        while True:
            due = await self.ports.chats.awaiting_due(cutoff, limit=_AWAITING_BATCH)
            progressed = False
            for chat in due:
                change = await self.ports.chats.add_tag(chat.id, awaiting_tag)
                if change.changed and change.chat is not None:
                    progressed = True
                    tagged.append(change.chat)
                    await self.publish(
                        events.tag_updated(change.chat, awaiting_tag, "added", self.now())
                    )
            if len(due) < _AWAITING_BATCH or not progressed:
                return tagged
