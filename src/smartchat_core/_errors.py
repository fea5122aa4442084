"""One exception hierarchy for everything the library raises on purpose.

Every error derives from :class:`SmartChatError`, so a host can map the whole
family to HTTP answers in one place.  Errors about what the caller sent also
derive from :class:`ValueError` / :class:`LookupError` so generic handlers keep
working.
"""

from __future__ import annotations

__all__ = [
    "AlreadyRatedError",
    "BackendError",
    "ChatNotFoundError",
    "ChatNotResolvedError",
    "ChatResolvedError",
    "ConflictError",
    "DeliveryError",
    "ExecutiveNotFoundError",
    "InvalidInputError",
    "NotAssigneeError",
    "NotFoundError",
    "PermissionDeniedError",
    "SmartChatError",
]


class SmartChatError(Exception):
    """Base class of every error the library raises on purpose."""


class InvalidInputError(SmartChatError, ValueError):
    """An argument has the wrong type, is empty, too long or out of range.

    Raised before anything is read or written, so state is unchanged.

    Attributes:
        field: the name of the offending argument.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFoundError(SmartChatError, LookupError):
    """Something addressed by id does not exist."""


class ChatNotFoundError(NotFoundError):
    """No chat has this id."""

    def __init__(self, chat_id: str) -> None:
        super().__init__(f"chat {chat_id!r} not found")
        self.chat_id = chat_id


class ExecutiveNotFoundError(NotFoundError):
    """No executive has this id."""

    def __init__(self, executive_id: str) -> None:
        super().__init__(f"executive {executive_id!r} not found")
        self.executive_id = executive_id


class ConflictError(SmartChatError):
    """The operation does not fit the current state of what it addresses."""


class ChatResolvedError(ConflictError):
    """The chat is resolved and the operation needs an open chat."""

    def __init__(self, chat_id: str) -> None:
        super().__init__(f"chat {chat_id!r} is resolved")
        self.chat_id = chat_id


class ChatNotResolvedError(ConflictError):
    """The chat is open and the operation (rating) needs a resolved chat."""

    def __init__(self, chat_id: str) -> None:
        super().__init__(f"chat {chat_id!r} is not resolved")
        self.chat_id = chat_id


class AlreadyRatedError(ConflictError):
    """This resolution of the chat has been rated already."""

    def __init__(self, chat_id: str) -> None:
        super().__init__(f"chat {chat_id!r} has already been rated for this resolution")
        self.chat_id = chat_id


class NotAssigneeError(ConflictError):
    """The executive acts on a chat that is not assigned to it."""

    def __init__(self, chat_id: str, executive_id: str) -> None:
        super().__init__(f"chat {chat_id!r} is not assigned to executive {executive_id!r}")
        self.chat_id = chat_id
        self.executive_id = executive_id


class PermissionDeniedError(SmartChatError, PermissionError):
    """The actor may not perform this operation (see :class:`Actor`)."""


class BackendError(SmartChatError):
    """A storage or messaging backend failed (connection lost, timeout, ...).

    Adapters translate their driver's exceptions into this one; the original
    is kept as ``__cause__``.
    """


class DeliveryError(SmartChatError):
    """An outbound WhatsApp message could not be delivered."""
