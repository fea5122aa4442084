"""Message intake: customer messages in, executive messages out."""

from __future__ import annotations

import uuid

from .. import _events as events
from .._errors import ChatResolvedError, NotAssigneeError
from .._models import Chat
from .._validation import identifier, text
from ._base import Service
from .executives import ExecutiveService


class IntakeService(Service):
    def __init__(self, executives: ExecutiveService) -> None:
        super().__init__(executives.ports)
        self.executives = executives

    def _preview(self, message: str) -> str:
        return message[: self.settings.preview_length]

    async def receive_customer_message(
        self, *, customer_id: str, customer_name: str, customer_type: str, text: str
    ) -> Chat:
        """A customer wrote: create the chat (or reopen a resolved one), mark
        the customer as last speaker, remove the awaiting tag, and assign the
        chat if it is unassigned.  Returns the chat after all that."""
        s = self.settings
        customer_id = identifier("customer_id", customer_id, max_length=s.max_id_length)
        customer_name = _text("customer_name", customer_name, s.max_id_length, allow_empty=True)
        customer_type = identifier("customer_type", customer_type, max_length=s.max_id_length)
        message = _text("text", text, s.max_text_length, allow_empty=True)
        now = self.now()
        result = await self.ports.chats.record_incoming(
            new_id=uuid.uuid4().hex,
            customer_id=customer_id,
            customer_name=customer_name or customer_id,
            customer_type=customer_type,
            preview=self._preview(message),
            now=now,
        )
        chat = result.chat
        await self.publish(events.chat_message(chat, "incoming", message, None, now))
        if result.removed_awaiting:
            await self.publish(events.tag_updated(chat, s.awaiting_tag, "removed", now))
        if chat.is_waiting:
            # Assigned as recorded (no second read); if someone resolved or
            # assigned it meanwhile, the chat as it is now comes back.
            chat = await self.executives.assign_waiting_chat(chat)
        return chat

    async def send_executive_message(
        self, chat_id: str, *, executive_id: str, text: str, send: bool = True
    ) -> Chat:
        """The assigned executive replies: the text goes out through the
        message sender (unless ``send=False``, when the host sent it itself),
        then the chat records it and the executive counts as active."""
        chat_id = self.chat_id(chat_id)
        executive_id = self.executive_id(executive_id)
        message = _text("text", text, self.settings.max_text_length, allow_empty=False)
        await self.load_executive(executive_id)
        chat = await self.load_chat(chat_id)
        _check_assignee(chat, executive_id)
        if send:
            await self.ports.sender.send_text(chat.customer_id, message)
        now = self.now()
        change = await self.ports.chats.record_outgoing(
            chat_id, executive_id=executive_id, preview=self._preview(message), now=now
        )
        if not change.changed or change.chat is None:
            _check_assignee(await self.load_chat(chat_id), executive_id)
            raise AssertionError("unreachable")  # pragma: no cover
        await self.ports.executives.touch(executive_id, now=now)
        await self.publish(events.chat_message(change.chat, "outgoing", message, executive_id, now))
        return change.chat


def _text(field: str, value: object, max_length: int, *, allow_empty: bool) -> str:
    return text(field, value, max_length=max_length, allow_empty=allow_empty)


def _check_assignee(chat: Chat, executive_id: str) -> None:
    if chat.is_resolved:
        raise ChatResolvedError(chat.id)
    if chat.assigned_executive_id != executive_id:
        raise NotAssigneeError(chat.id, executive_id)
