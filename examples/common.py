"""What the FastAPI and Flask examples share: bearer tokens to actors, the
desk and settings from the environment, JSON, the HTTP status of each library
error, and the memory of redelivered WhatsApp message ids."""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from smartchat_core import (
    Actor,
    AsyncSmartChat,
    BackendError,
    ConflictError,
    DeliveryError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    Settings,
    SmartChatError,
    to_json,
)
from smartchat_core.whatsapp import WhatsAppCloudSender

__all__ = [
    "ERROR_STATUS",
    "RecentIds",
    "actor_for",
    "async_desk_from_env",
    "bearer",
    "dumps",
    "env_config",
    "error_status",
    "parse_tokens",
    "to_json",
]

logger = logging.getLogger("smartchat_core.examples")


# ------------------------------------------------------------------------- tokens


def parse_tokens(spec: str) -> dict[str, Actor]:
    """``"tok1=supervisor:lead,tok2=executive:e1"`` -> ``{token: Actor}``."""
    tokens: dict[str, Actor] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        token, _, who = item.partition("=")
        role, _, actor_id = who.partition(":")
        if not token or not actor_id or role not in ("supervisor", "executive"):
            raise ValueError(
                f"SMARTCHAT_API_TOKENS: {item!r} is not token=supervisor:ID or token=executive:ID"
            )
        tokens[token] = (
            Actor.supervisor(actor_id) if role == "supervisor" else Actor.executive(actor_id)
        )
    return tokens


def actor_for(tokens: Mapping[str, Actor], token: str | None) -> Actor | None:
    """The actor of a bearer token (every known token compared in constant time)."""
    if not token:
        return None
    found = None
    for known, actor in tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            found = actor
    return found


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


# -------------------------------------------------------------------- environment


def env_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The configuration fields both apps read from ``SMARTCHAT_API_TOKENS``,
    ``WHATSAPP_APP_SECRET``, ``WHATSAPP_VERIFY_TOKEN``,
    ``SMARTCHAT_CUSTOMER_TYPE`` and ``SMARTCHAT_RUN_MONITORS``.  Without
    tokens, one supervisor token is generated (``generated_token``)."""
    env = os.environ if environ is None else environ
    tokens = parse_tokens(env.get("SMARTCHAT_API_TOKENS", ""))
    generated = not tokens
    if generated:
        tokens = {secrets.token_urlsafe(24): Actor.supervisor("admin")}
    return {
        "api_tokens": tokens,
        "whatsapp_app_secret": env.get("WHATSAPP_APP_SECRET") or None,
        "whatsapp_verify_token": env.get("WHATSAPP_VERIFY_TOKEN") or None,
        "customer_type": env.get("SMARTCHAT_CUSTOMER_TYPE") or "retail",
        "run_monitors": env.get("SMARTCHAT_RUN_MONITORS", "1") not in ("0", "false", "no"),
        "generated_token": generated,
    }


def async_desk_from_env(environ: Mapping[str, str] | None = None) -> AsyncSmartChat:
    """The desk the environment asks for (not started).  In-memory unless
    ``SMARTCHAT_MONGODB_URL`` / ``SMARTCHAT_REDIS_URL`` are set; the WhatsApp
    Cloud API sender when ``WHATSAPP_TOKEN`` and ``WHATSAPP_PHONE_NUMBER_ID``
    are set, else the messages are logged."""
    env = os.environ if environ is None else environ
    rating_secret = env.get("SMARTCHAT_RATING_SECRET")
    if not rating_secret:
        rating_secret = secrets.token_urlsafe(32)
        logger.warning(
            "SMARTCHAT_RATING_SECRET unset: rating tokens are valid in this process only"
        )
    settings = Settings(rating_secret=rating_secret).with_env(env)
    sender = WhatsAppCloudSender.from_env(env)
    mongodb_url = env.get("SMARTCHAT_MONGODB_URL") or None
    redis_url = env.get("SMARTCHAT_REDIS_URL") or None
    if mongodb_url or redis_url:
        return AsyncSmartChat.from_urls(
            mongodb_url=mongodb_url, redis_url=redis_url, settings=settings, sender=sender
        )
    return AsyncSmartChat.in_memory(settings=settings, sender=sender)


# ------------------------------------------------------------------- JSON, errors


def dumps(data: object) -> str:
    """Compact JSON text; models, sets, datetimes and enums through the
    library's converter."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=to_json)


ERROR_STATUS: tuple[tuple[type[SmartChatError], int], ...] = (
    (InvalidInputError, 422),
    (NotFoundError, 404),
    (PermissionDeniedError, 403),
    (ConflictError, 409),
    (BackendError, 503),
    (DeliveryError, 502),
)


def error_status(error: SmartChatError) -> int:
    """The HTTP status of a library error."""
    return next((status for kind, status in ERROR_STATUS if isinstance(error, kind)), 400)


# ----------------------------------------------------------------- webhook memory


class RecentIds:
    """The last ``size`` WhatsApp message ids seen (webhooks are redelivered).
    Thread-safe (Flask serves requests in several threads)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, message_id: object) -> bool:
        with self._lock:
            return message_id in self._ids

    def add(self, message_id: str) -> None:
        """Remember ``message_id`` as the newest."""
        with self._lock:
            self._ids[message_id] = None
            self._ids.move_to_end(message_id)
            self._trim()

    def add_if_new(self, message_id: str) -> bool:
        """Remember ``message_id``; ``False`` if it was already there."""
        with self._lock:
            if message_id in self._ids:
                return False
            self._ids[message_id] = None
            self._trim()
            return True

    def _trim(self) -> None:
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)

    def discard(self, message_id: str) -> None:
        with self._lock:
            self._ids.pop(message_id, None)
