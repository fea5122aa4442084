"""WhatsApp Cloud API pieces for host apps: webhook checks and parsing, and an
outbound :class:`~smartchat_core.abc.MessageSender` over HTTP.

Everything here is framework-free, so a FastAPI, Flask or any other host uses
the same four names:

* :func:`verify_signature` checks the ``X-Hub-Signature-256`` header of a
  webhook POST against your app secret (do it on the raw body, before parsing);
* :func:`verification_challenge` answers Meta's GET verification request;
* :func:`parse_webhook` turns the webhook JSON into :class:`InboundMessage`
  values, ready for :meth:`AsyncSmartChat.receive_customer_message`;
* :class:`WhatsAppCloudSender` sends text messages, retrying on 429, 5xx and
  transport errors with exponential backoff and jitter.

A FastAPI webhook, in full::

    @app.post("/webhook")
    async def webhook(request: Request) -> dict[str, int]:
        body = await request.body()
        if not verify_signature(APP_SECRET, body, request.headers.get("X-Hub-Signature-256")):
            raise HTTPException(401, "bad signature")
        messages = parse_webhook(json.loads(body))
        for m in messages:
            await desk.receive_customer_message(customer_id=m.customer_id,
                customer_name=m.customer_name, customer_type="retail", text=m.text)
        return {"received": len(messages)}

The sender needs ``httpx`` (the ``whatsapp`` extra:
``pip install smartchat-core[whatsapp]``); the rest of this module needs
nothing beyond the standard library.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import logging
import math
import os
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from ._errors import DeliveryError, InvalidInputError, PermissionDeniedError
from .abc import MessageSender

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "SIGNATURE_HEADER",
    "InboundMessage",
    "WhatsAppCloudSender",
    "WhatsAppDeliveryError",
    "parse_webhook",
    "sign_body",
    "verification_challenge",
    "verify_signature",
]

logger = logging.getLogger("smartchat_core.whatsapp")

SIGNATURE_HEADER = "X-Hub-Signature-256"
"""The header Meta signs webhook POST bodies in: ``sha256=<hex HMAC>``."""
DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v21.0"

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")


# ------------------------------------------------------------------ webhook: checks


def verify_signature(
    app_secret: str, body: bytes | bytearray | memoryview, header: str | None
) -> bool:
    """Whether ``header`` (the ``X-Hub-Signature-256`` value) is the
    HMAC-SHA256 of the raw ``body`` under ``app_secret``.

    A missing or malformed header is refused (``False``); the comparison runs
    in constant time.  Check the raw bytes as received, before any JSON
    parsing.

    Raises:
        InvalidInputError: ``app_secret`` is empty (a configuration mistake
            that would otherwise accept forged bodies), or ``body`` is not bytes.
    """
    if not isinstance(app_secret, str) or not app_secret:
        raise InvalidInputError("app_secret", "must be a non-empty string")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise InvalidInputError("body", f"must be bytes, got {type(body).__name__}")
    if not isinstance(header, str):
        return False
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        return False
    expected = hmac.new(app_secret.encode(), bytes(body), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(1).lower())


def sign_body(app_secret: str, body: bytes | bytearray | memoryview) -> str:
    """The ``X-Hub-Signature-256`` value Meta would send for ``body`` (for
    tests, simulators and demos that post to your webhook)."""
    if not isinstance(app_secret, str) or not app_secret:
        raise InvalidInputError("app_secret", "must be a non-empty string")
    return "sha256=" + hmac.new(app_secret.encode(), bytes(body), hashlib.sha256).hexdigest()


def verification_challenge(params: Mapping[str, str], verify_token: str) -> str:
    """Answer Meta's webhook verification GET: return ``hub.challenge`` (send
    it back as the plain-text body, status 200).

    Args:
        params: the query parameters (``hub.mode``, ``hub.verify_token``,
            ``hub.challenge``).
        verify_token: the token you entered in the app dashboard.

    Raises:
        InvalidInputError: ``hub.mode`` is not ``subscribe`` or
            ``hub.challenge`` is missing (answer 400/422).
        PermissionDeniedError: the verify token is missing or wrong (answer 403).
    """
    if not isinstance(verify_token, str) or not verify_token:
        raise InvalidInputError("verify_token", "must be a non-empty string")
    mode = params.get("hub.mode")
    if mode != "subscribe":
        raise InvalidInputError("hub.mode", f"must be 'subscribe', got {mode!r}")
    given = params.get("hub.verify_token")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), verify_token.encode()):
        raise PermissionDeniedError("hub.verify_token does not match")
    challenge = params.get("hub.challenge")
    if not isinstance(challenge, str) or not challenge:
        raise InvalidInputError("hub.challenge", "is missing")
    if len(challenge) > 256:
        raise InvalidInputError("hub.challenge", "must be at most 256 characters")
    return challenge


# ----------------------------------------------------------------- webhook: parsing


@attrs.frozen(kw_only=True)
class InboundMessage:
    """One customer message from a WhatsApp Cloud API webhook.

    Attributes:
        message_id: WhatsApp's id (``wamid...``); webhooks may be delivered more
            than once, so hosts can use it to drop duplicates.
        customer_id: the sender's WhatsApp number as the API gives it (digits,
            country code first, no ``+``); reply to it as is.
        customer_name: the profile name from ``contacts[]``, or the number
            when there is none.
        text: the text; for other message types a placeholder such as
            ``"[image]"``, followed by the caption when there is one.
        message_type: the API's ``type`` (``text``, ``image``, ``button``, ...).
        timestamp: when WhatsApp received it (UTC), if given.
        phone_number_id: the business number the message was sent to.
    """

    message_id: str
    customer_id: str
    customer_name: str
    text: str
    message_type: str
    timestamp: datetime | None = None
    phone_number_id: str | None = None


def parse_webhook(payload: object) -> list[InboundMessage]:
    """The customer messages in a Cloud API webhook body (already JSON-decoded).

    Reads ``entry[].changes[].value.messages[]`` with the profile names of
    ``value.contacts[]``.  Status callbacks (``value.statuses``: sent,
    delivered, read, failed) and changes of other fields carry no customer
    message and are skipped.  Text messages give their body; other types give
    a placeholder (``"[image]"``, ``"[image] the caption"``, the title of a
    button or list reply, ...).

    Raises:
        InvalidInputError: the payload does not have the Cloud API's shape
            (never ``KeyError`` or ``TypeError``); ``field`` names the path,
            e.g. ``entry[0].changes[1].value.messages[0].from``.
    """
    root = _obj(payload, "payload")
    kind = root.get("object")
    if kind is not None and kind != "whatsapp_business_account":
        raise InvalidInputError("object", f"must be 'whatsapp_business_account', got {kind!r}")
    messages: list[InboundMessage] = []
    for e, entry in enumerate(_list(root.get("entry"), "entry")):
        entry_path = f"entry[{e}]"
        entry_obj = _obj(entry, entry_path)
        for c, change in enumerate(_list(entry_obj.get("changes", []), f"{entry_path}.changes")):
            change_path = f"{entry_path}.changes[{c}]"
            change_obj = _obj(change, change_path)
            if change_obj.get("field", "messages") != "messages":
                continue
            value = _obj(change_obj.get("value"), f"{change_path}.value")
            messages.extend(_messages(value, f"{change_path}.value"))
    return messages


def _messages(value: dict[str, Any], path: str) -> list[InboundMessage]:
    raw_messages = value.get("messages")
    if raw_messages is None:
        return []  # statuses, errors: nothing a customer wrote
    metadata = value.get("metadata")
    phone_number_id = None
    if metadata is not None:
        phone_number_id = _opt_str(
            _obj(metadata, f"{path}.metadata").get("phone_number_id"),
            f"{path}.metadata.phone_number_id",
        )
    names: dict[str, str] = {}
    for i, contact in enumerate(_list(value.get("contacts", []), f"{path}.contacts")):
        contact_path = f"{path}.contacts[{i}]"
        contact_obj = _obj(contact, contact_path)
        wa_id = _opt_str(contact_obj.get("wa_id"), f"{contact_path}.wa_id")
        profile = contact_obj.get("profile")
        if wa_id is None or profile is None:
            continue
        name = _opt_str(
            _obj(profile, f"{contact_path}.profile").get("name"), f"{contact_path}.name"
        )
        if name and name.strip():
            names[wa_id] = name.strip()
    result = []
    for i, message in enumerate(_list(raw_messages, f"{path}.messages")):
        message_path = f"{path}.messages[{i}]"
        message_obj = _obj(message, message_path)
        sender = _str(message_obj.get("from"), f"{message_path}.from")
        message_type = _str(message_obj.get("type"), f"{message_path}.type")
        result.append(
            InboundMessage(
                message_id=_str(message_obj.get("id"), f"{message_path}.id"),
                customer_id=sender,
                customer_name=names.get(sender, sender),
                text=_message_text(message_obj, message_type, message_path),
                message_type=message_type,
                timestamp=_timestamp(message_obj.get("timestamp"), f"{message_path}.timestamp"),
                phone_number_id=phone_number_id,
            )
        )
    return result


_CAPTIONED = frozenset({"image", "video", "document"})


def _message_text(message: dict[str, Any], message_type: str, path: str) -> str:
    if message_type == "text":
        body = _obj(message.get("text"), f"{path}.text").get("body")
        return _str(body, f"{path}.text.body", allow_empty=True)
    part = message.get(message_type)
    detail: str | None = None
    if isinstance(part, dict):
        if message_type in _CAPTIONED:
            detail = _opt_str(part.get("caption"), f"{path}.{message_type}.caption")
            if detail is None and message_type == "document":
                detail = _opt_str(part.get("filename"), f"{path}.document.filename")
        elif message_type == "button":
            return _str(part.get("text"), f"{path}.button.text", allow_empty=True)
        elif message_type == "interactive":
            for reply in ("button_reply", "list_reply"):
                if isinstance(part.get(reply), dict):
                    title = part[reply].get("title")
                    return _str(title, f"{path}.interactive.{reply}.title", allow_empty=True)
        elif message_type == "reaction":
            detail = _opt_str(part.get("emoji"), f"{path}.reaction.emoji")
        elif message_type == "location":
            detail = _opt_str(part.get("name"), f"{path}.location.name") or _coordinates(part)
    placeholder = f"[{message_type}]"
    return f"{placeholder} {detail}" if detail else placeholder


def _coordinates(location: dict[str, Any]) -> str | None:
    lat, lng = location.get("latitude"), location.get("longitude")
    if isinstance(lat, (int, float)) and isinstance(lng, (int, float)):
        return f"{lat},{lng}"
    return None


def _timestamp(value: object, path: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        seconds = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        raise InvalidInputError(path, f"must be Unix seconds, got {value!r}")
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError) as error:
        raise InvalidInputError(path, f"is out of range: {value!r}") from error


def _obj(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(path, f"must be an object, got {_kind(value)}")
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInputError(path, f"must be a list, got {_kind(value)}")
    return value


def _str(value: object, path: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(path, f"must be a string, got {_kind(value)}")
    if not allow_empty and not value.strip():
        raise InvalidInputError(path, "must not be empty")
    return value


def _opt_str(value: object, path: str) -> str | None:
    return None if value is None else _str(value, path, allow_empty=True)


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


# ------------------------------------------------------------------------- sending


class WhatsAppDeliveryError(DeliveryError):
    """The Cloud API refused or never accepted a message.

    Attributes:
        status_code: the last HTTP status, or ``None`` after transport errors.
        api_message: the API's ``error.message`` (with ``error_data.details``).
        api_code: the API's numeric ``error.code``, if any.
        attempts: how many requests were made.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        api_message: str | None = None,
        api_code: int | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.api_message = api_message
        self.api_code = api_code
        self.attempts = attempts


class _Retry(Exception):
    def __init__(self, reason: str, status_code: int | None, delay: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code
        self.delay = delay


class WhatsAppCloudSender(MessageSender):
    """Sends text messages through the WhatsApp Cloud API.

    Each message is a ``POST {base_url}/{api_version}/{phone_number_id}/messages``
    with the bearer token.  A 429, a 5xx or a transport error (connection
    refused or reset, timeout) is retried up to ``max_attempts`` requests in
    all, waiting ``Retry-After`` when the API sends it and otherwise an
    exponential backoff (``backoff_base * 2**n``, capped at ``backoff_max``)
    with jitter.  Any other failure, or the last retry failing, raises
    :class:`WhatsAppDeliveryError` (a :class:`~smartchat_core.DeliveryError`)
    carrying the status and the API's error message.

    Note that a retry after a timeout may deliver a message twice: the Cloud
    API has no idempotency key.

    Pass it to the desk (``AsyncSmartChat.in_memory(sender=...)``), which
    starts it, or use it alone as an async context manager::

        async with WhatsAppCloudSender(access_token=..., phone_number_id=...) as s:
            await s.send_text("919800000001", "hello")

    Args:
        access_token: a system-user or temporary access token.
        phone_number_id: the business phone number's id (not the number).
        api_version: Graph API version, e.g. ``"v21.0"``.
        base_url: the Graph API root; tests point it at a local fake.
        timeout: seconds for each request.
        max_attempts: requests per message, at least 1.
        backoff_base: first backoff in seconds.
        backoff_max: longest backoff in seconds.
        max_retry_after: a ``Retry-After`` longer than this (seconds) is not
            waited for: the message fails at once, so a desk operation never
            blocks for minutes.
        sleep: ``await sleep(seconds)`` between attempts; defaults to
            :func:`anyio.sleep` (tests pass a recorder that does not wait).
        jitter: returns a float in ``[0, 1)``; the backoff is scaled by
            ``0.5 + jitter() / 2``.  Defaults to :func:`random.random`.
        transport: an ``httpx.AsyncBaseTransport`` (tests: ``MockTransport``).
        preview_url: ask WhatsApp to render link previews.
    """

    def __init__(
        self,
        *,
        access_token: str,
        phone_number_id: str,
        api_version: str = DEFAULT_API_VERSION,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        jitter: Callable[[], float] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        preview_url: bool = False,
    ) -> None:
        for name, value in (
            ("access_token", access_token),
            ("phone_number_id", phone_number_id),
            ("api_version", api_version),
            ("base_url", base_url),
        ):
            if not isinstance(value, str) or not value.strip():
                raise InvalidInputError(name, "must be a non-empty string")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise InvalidInputError("max_attempts", "must be an integer >= 1")
        for name, number in (
            ("timeout", timeout),
            ("backoff_base", backoff_base),
            ("backoff_max", backoff_max),
            ("max_retry_after", max_retry_after),
        ):
            if not isinstance(number, (int, float)) or not math.isfinite(number) or number < 0:
                raise InvalidInputError(name, "must be a finite number >= 0")
        self._token = access_token
        self.phone_number_id = phone_number_id
        self.api_version = api_version.strip("/")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.max_attempts = max_attempts
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.max_retry_after = float(max_retry_after)
        self.preview_url = preview_url
        self._sleep = sleep or anyio.sleep
        self._jitter = jitter or random.random
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._own_stack: AsyncExitStack | None = None

    def __repr__(self) -> str:  # never show the token
        return (
            f"WhatsAppCloudSender(phone_number_id={self.phone_number_id!r}, "
            f"url={self.messages_url!r})"
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **kwargs: Any
    ) -> WhatsAppCloudSender | None:
        """A sender from ``WHATSAPP_TOKEN`` and ``WHATSAPP_PHONE_NUMBER_ID``
        (plus optional ``WHATSAPP_API_VERSION`` and ``WHATSAPP_API_BASE_URL``),
        or ``None`` when either of the first two is unset.  ``kwargs`` go to
        the constructor."""
        env = os.environ if environ is None else environ
        token, number = env.get("WHATSAPP_TOKEN"), env.get("WHATSAPP_PHONE_NUMBER_ID")
        if not token or not number:
            return None
        if env.get("WHATSAPP_API_VERSION"):
            kwargs.setdefault("api_version", env["WHATSAPP_API_VERSION"])
        if env.get("WHATSAPP_API_BASE_URL"):
            kwargs.setdefault("base_url", env["WHATSAPP_API_BASE_URL"])
        return cls(access_token=token, phone_number_id=number, **kwargs)

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/{self.api_version}/{self.phone_number_id}/messages"

    # ------------------------------------------------------------------ lifecycle
    async def start(self, exit_stack: AsyncExitStack) -> None:
        """Create the HTTP client; its close is registered on ``exit_stack``."""
        import httpx

        if self._client is not None:
            raise RuntimeError("this sender is already started")
        client = httpx.AsyncClient(
            timeout=self.timeout,
            transport=self._transport,
            headers={"Authorization": f"Bearer {self._token}"},
        )
        self._client = client

        async def close() -> None:
            self._client = None
            await client.aclose()

        exit_stack.push_async_callback(close)

    async def __aenter__(self) -> WhatsAppCloudSender:
        async with AsyncExitStack() as stack:
            await self.start(stack)
            self._own_stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._own_stack = self._own_stack, None
        if stack is not None:
            await stack.aclose()

    # -------------------------------------------------------------------- sending
    async def send_text(self, to: str, text: str) -> None:
        """Send ``text`` to the WhatsApp number ``to``; raise
        :class:`WhatsAppDeliveryError` if it cannot be sent."""
        await self.send_text_message(to, text)

    async def send_text_message(self, to: str, text: str) -> str:
        """Like :meth:`send_text`, and return WhatsApp's message id
        (``wamid...``; empty if the API returned none)."""
        if not isinstance(to, str) or not to.strip():
            raise InvalidInputError("to", "must be a non-empty string")
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("text", "must be a non-empty string")
        client = self._client
        if client is None:
            raise RuntimeError(
                "WhatsAppCloudSender is not started (use it in a desk or async with)"
            )
        payload = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to.strip(),
            "type": "text",
            "text": {"preview_url": self.preview_url, "body": text},
        }
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(client, payload, attempt)
            except _Retry as retry:
                if attempt >= self.max_attempts:
                    raise WhatsAppDeliveryError(
                        f"WhatsApp Cloud API: {retry.reason} after {attempt} attempts",
                        status_code=retry.status_code,
                        attempts=attempt,
                    ) from retry.__cause__
                delay = retry.delay if retry.delay is not None else self._backoff(attempt)
                if delay > self.max_retry_after:
                    raise WhatsAppDeliveryError(
                        f"WhatsApp Cloud API: {retry.reason}; asked to retry after "
                        f"{delay:g} s, more than max_retry_after={self.max_retry_after:g} s",
                        status_code=retry.status_code,
                        attempts=attempt,
                    ) from retry.__cause__
                logger.warning(
                    "WhatsApp Cloud API: %s (attempt %d/%d); retrying in %.2f s",
                    retry.reason,
                    attempt,
                    self.max_attempts,
                    delay,
                )
                await self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        return delay * (0.5 + min(max(self._jitter(), 0.0), 1.0) / 2)

    async def _attempt(
        self, client: httpx.AsyncClient, payload: dict[str, Any], attempt: int
    ) -> str:
        import httpx

        try:
            response = await client.post(self.messages_url, json=payload)
        except httpx.TransportError as error:
            raise _Retry(f"{type(error).__name__}: {error}", None, None) from error
        status = response.status_code
        if 200 <= status < 300:
            return _message_id(response)
        api_message, api_code = _api_error(response)
        reason = f"HTTP {status}" + (f": {api_message}" if api_message else "")
        if status == 429 or status >= 500:
            raise _Retry(reason, status, _retry_after(response.headers.get("Retry-After")))
        raise WhatsAppDeliveryError(
            f"WhatsApp Cloud API refused the message: {reason}",
            status_code=status,
            api_message=api_message,
            api_code=api_code,
            attempts=attempt,
        )


def _message_id(response: httpx.Response) -> str:
    try:
        data = response.json()
        message_id = data["messages"][0]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    return message_id if isinstance(message_id, str) else ""


def _api_error(response: httpx.Response) -> tuple[str | None, int | None]:
    """The Graph API's ``{"error": {"message", "code", "error_data": {"details"}}}``."""
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        text = response.text.strip()[:300]
        return (text or None), None
    message = error.get("message") if isinstance(error.get("message"), str) else None
    details = error.get("error_data", {})
    if isinstance(details, dict) and isinstance(details.get("details"), str):
        message = f"{message} ({details['details']})" if message else details["details"]
    code = error.get("code")
    return message, code if isinstance(code, int) and not isinstance(code, bool) else None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
