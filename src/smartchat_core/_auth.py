"""Who is acting: the actor passed to every operation, and signed rating tokens.

Hosts authenticate people (tokens, sessions: their business) and pass the
library an :class:`Actor`.  The library applies one authorisation rule for
every host:

* :data:`SYSTEM` (the default) is the host itself, trusted: webhooks,
  monitors, scripts.
* A **supervisor** may do everything.
* An **executive** sees "My chats" only, and may read, reply to, tag, untag
  and resolve only chats assigned to it; it may change its own status and
  send its own heartbeats; it may not register executives, change
  capacities, assign or release chats, recount, or rate.
* A **customer** (:meth:`Actor.customer`) may only rate, and only with the
  signed token the resolution message carries
  (:meth:`AsyncSmartChat.rating_token`), so nobody else can rate the chat.
  Customer-facing rating endpoints pass this actor; the token is then
  required.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from datetime import datetime

import attrs

__all__ = ["SYSTEM", "Actor", "Role", "sign_rating", "verify_rating"]


class Role(str, enum.Enum):
    SYSTEM = "system"
    SUPERVISOR = "supervisor"
    EXECUTIVE = "executive"
    CUSTOMER = "customer"


@attrs.frozen
class Actor:
    """Who performs an operation."""

    role: Role
    id: str | None = None

    @classmethod
    def executive(cls, executive_id: str) -> Actor:
        """A support executive, by its id."""
        return cls(Role.EXECUTIVE, executive_id)

    @classmethod
    def supervisor(cls, supervisor_id: str | None = None) -> Actor:
        """A supervisor (may do everything)."""
        return cls(Role.SUPERVISOR, supervisor_id)

    @classmethod
    def customer(cls, customer_id: str | None = None) -> Actor:
        """A customer: may only rate, with the signed rating token."""
        return cls(Role.CUSTOMER, customer_id)

    @property
    def is_executive(self) -> bool:
        return self.role is Role.EXECUTIVE

    @property
    def is_customer(self) -> bool:
        return self.role is Role.CUSTOMER

    @property
    def is_privileged(self) -> bool:
        """System or supervisor."""
        return self.role in (Role.SYSTEM, Role.SUPERVISOR)


SYSTEM = Actor(Role.SYSTEM)
"""The host itself: trusted (webhooks, monitors, scripts)."""


def _message(chat_id: str, resolved_at: datetime) -> bytes:
    return f"rate:{chat_id}:{resolved_at.isoformat()}".encode()


def sign_rating(secret: str, chat_id: str, resolved_at: datetime) -> str:
    """The token that lets the customer rate this resolution of the chat."""
    digest = hmac.new(secret.encode(), _message(chat_id, resolved_at), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode().rstrip("=")


def verify_rating(secret: str, chat_id: str, resolved_at: datetime, token: str) -> bool:
    """Whether ``token`` is the rating token of this resolution (constant time)."""
    return hmac.compare_digest(sign_rating(secret, chat_id, resolved_at), token)
