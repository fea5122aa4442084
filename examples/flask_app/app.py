"""A complete Flask host for smartchat_core, through the blocking :class:`SmartChat`.

It offers the REST surface of the FastAPI example (``examples/fastapi_app``)
with the same behaviour and error bodies. Live events come as Server-Sent
Events instead of a WebSocket:

* ``GET /webhook``  answers Meta's verification challenge.
  ``POST /webhook`` checks ``X-Hub-Signature-256`` against the app secret and
  passes every customer message to the desk. Status callbacks are ignored, and
  redelivered messages are dropped by their WhatsApp id.
* ``/api/...``      REST for executives, chats, tags, resolve and rate. Bearer
  tokens map to :class:`~smartchat_core.Actor` values, and the actor goes to
  every desk call.
* ``GET /events``   a ``text/event-stream`` of :meth:`Event.to_json` for the
  chosen rooms, with keep-alive comments so that disconnects are noticed.
* The SLA, awaiting and inactivity monitors run in the desk's event loop
  (:meth:`SmartChat.start_monitors`) for the app's lifetime. They stop at
  exit, or on :meth:`SmartChatHost.close`.

Flask has no lifespan, so :func:`create_app` starts what it needs when it is
called and registers its shutdown with :mod:`atexit`::

    flask --app examples.flask_app.app run          # Flask calls create_app()
    gunicorn -w 1 --threads 32 'examples.flask_app.app:create_app()'

Environment: see :meth:`AppConfig.from_env`, :func:`desk_from_env` and the
README next to this file.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from examples.common import (
    RecentIds,
    actor_for,
    async_desk_from_env,
    bearer,
    dumps,
    env_config,
    error_status,
    parse_tokens,
    to_json,
)
from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, InternalServerError

from smartchat_core import (
    SYSTEM,
    Actor,
    ConflictError,
    Event,
    InvalidInputError,
    SmartChat,
    SmartChatError,
    SyncSubscription,
    executive_room,
)
from smartchat_core.whatsapp import (
    SIGNATURE_HEADER,
    InboundMessage,
    parse_webhook,
    verification_challenge,
    verify_signature,
)

__all__ = [
    "AppConfig",
    "SmartChatHost",
    "create_app",
    "desk_from_env",
    "error_status",
    "get_host",
    "parse_tokens",
]

logger = logging.getLogger("smartchat_core.examples.flask_app")

MAX_BODY = 1024 * 1024
"""Bytes accepted in a request body; Meta's webhook bodies are far smaller."""
EXTENSION = "smartchat"
"""The key of the :class:`SmartChatHost` in ``app.extensions``."""

# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class AppConfig:
    """How the app authenticates, where webhook messages go, and its timings.

    Attributes:
        api_tokens: bearer token -> the actor it authenticates.
        whatsapp_app_secret: checks ``X-Hub-Signature-256``. ``None`` refuses
            every webhook POST (503).
        whatsapp_verify_token: for the GET challenge. ``None`` refuses it (503).
        customer_type: customer type given to webhook messages ...
        customer_type_for: ... unless this maps a message to its type.
        run_monitors: run the SLA, awaiting and inactivity monitors while the
            app lives (they tick once per interval across processes anyway).
        sse_keepalive: seconds between keep-alive comments on an idle event
            stream. A disconnected client is noticed at the next write, and
            shutdown waits at most this long for the open streams.
        sse_retry_ms: the reconnection delay the event stream asks browsers for.
        generated_token: the supervisor token was generated (it is logged).
    """

    api_tokens: Mapping[str, Actor] = field(default_factory=dict)
    whatsapp_app_secret: str | None = None
    whatsapp_verify_token: str | None = None
    customer_type: str = "retail"
    customer_type_for: Callable[[InboundMessage], str] | None = None
    run_monitors: bool = True
    sse_keepalive: float = 15.0
    sse_retry_ms: int = 3000
    generated_token: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.sse_keepalive <= 300:
            raise ValueError(f"sse_keepalive must be in (0, 300] seconds, got {self.sse_keepalive}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AppConfig:
        """The configuration from ``SMARTCHAT_API_TOKENS``, ``WHATSAPP_APP_SECRET``,
        ``WHATSAPP_VERIFY_TOKEN``, ``SMARTCHAT_CUSTOMER_TYPE``,
        ``SMARTCHAT_RUN_MONITORS`` and ``SMARTCHAT_SSE_KEEPALIVE``.  Without
        tokens, one supervisor token is generated (and logged by
        :func:`create_app`)."""
        env = os.environ if environ is None else environ
        keepalive = env.get("SMARTCHAT_SSE_KEEPALIVE") or "15"
        try:
            sse_keepalive = float(keepalive)
        except ValueError:
            raise ValueError(f"SMARTCHAT_SSE_KEEPALIVE: {keepalive!r} is not seconds") from None
        return cls(**env_config(env), sse_keepalive=sse_keepalive)

    def actor_for(self, token: str | None) -> Actor | None:
        """The actor of a bearer token (compared in constant time)."""
        return actor_for(self.api_tokens, token)


def desk_from_env(environ: Mapping[str, str] | None = None) -> SmartChat:
    """The blocking desk the environment asks for (not started: :func:`create_app`
    starts it).  In-memory unless ``SMARTCHAT_MONGODB_URL`` /
    ``SMARTCHAT_REDIS_URL`` are set; WhatsApp Cloud API sender when
    ``WHATSAPP_TOKEN`` and ``WHATSAPP_PHONE_NUMBER_ID`` are set, else the
    messages are logged."""
    return SmartChat(async_desk_from_env(environ))


CUSTOMER = Actor.customer()
"""Who calls the rating endpoint: the token is required, nothing else allowed."""

# --------------------------------------------------------------------- JSON forms


def json_response(
    data: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        dumps(data), status=status, headers=dict(headers or {}), mimetype="application/json"
    )


# ------------------------------------------------------------------------ errors


def _status_name(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return "HTTPError"


class RequestError(Exception):
    """A request the app refuses before calling the desk (auth, shape, config).

    Answered as ``{"error": error, "detail": detail}`` (plus ``errors``, the
    list of problems, for invalid requests)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        error: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.error = error or _status_name(status)
        self.headers = dict(headers or {})
        self.errors = errors


def invalid_request(problems: list[tuple[str, str]]) -> RequestError:
    """422 ``InvalidRequest``: the body or query does not have the right shape
    (the library's own checks answer ``InvalidInputError``)."""
    errors = [{"loc": loc, "msg": msg} for loc, msg in problems]
    detail = "; ".join(f"{loc}: {msg}" for loc, msg in problems) or "invalid request"
    return RequestError(422, detail, error="InvalidRequest", errors=errors)


def _error_body(status: int, error: str, detail: str, **extra: Any) -> Response:
    return json_response({"error": error, "detail": detail, **extra}, status)


def _smartchat_error(exc: SmartChatError) -> Response:
    status = error_status(exc)
    if status >= 500:
        logger.warning("%s %s: %s: %s", request.method, request.path, type(exc).__name__, exc)
    return _error_body(status, type(exc).__name__, str(exc))


def _request_error(exc: RequestError) -> Response:
    extra = {"errors": exc.errors} if exc.errors is not None else {}
    response = _error_body(exc.status, exc.error, exc.detail, **extra)
    response.headers.update(exc.headers)
    return response


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    response = _error_body(status, _status_name(status), exc.description or exc.name)
    for key, value in exc.get_headers():
        if key.lower() not in ("content-type", "content-length"):
            response.headers[key] = value
    return response


def _internal_error(exc: InternalServerError) -> Response:
    original = exc.original_exception
    if original is not None:
        logger.error("%s %s failed", request.method, request.path, exc_info=original)
    return _error_body(500, "InternalServerError", "internal error (logged)")


# ---------------------------------------------------------------- request shapes


@dataclass(frozen=True)
class Field:
    """One JSON body field: its kind (``str``, ``int`` or ``list[str]``),
    whether it must be present, and whether ``null`` is allowed."""

    kind: str
    required: bool = True
    nullable: bool = False


_KIND_NAMES = {"str": "a string", "int": "an integer", "list[str]": "a list of strings"}


def _kind_of(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
             dict: "object", type(None): "null"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _fits(kind: str, value: object) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    raise AssertionError(kind)


def json_body(spec: Mapping[str, Field]) -> dict[str, Any]:
    """The request's JSON object, checked against ``spec``: JSON types exactly
    (no ``"5"`` for 5, no ``true`` for 1), no unknown fields."""
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        reason = str(error) if not isinstance(error, RecursionError) else "nested too deeply"
        raise invalid_request([("body", f"malformed JSON ({reason[:200]})")]) from None
    if not isinstance(data, dict):
        raise invalid_request([("body", f"must be a JSON object, got {_kind_of(data)}")])
    problems = [(f"body.{key}", "unknown field") for key in data if key not in spec]
    for name, item in spec.items():
        location = f"body.{name}"
        if name not in data:
            if item.required:
                problems.append((location, "field required"))
            continue
        value = data[name]
        if value is None and item.nullable:
            continue
        if not _fits(item.kind, value):
            expected = _KIND_NAMES[item.kind] + (" or null" if item.nullable else "")
            problems.append((location, f"must be {expected}, got {_kind_of(value)}"))
    if problems:
        raise invalid_request(problems)
    return data


_INTEGER = re.compile(r"[+-]?\d{1,18}")


def int_arg(name: str, default: int | None) -> int | None:
    """An integer query parameter (absent: ``default``)."""
    value = request.args.get(name)
    if value is None:
        return default
    if not _INTEGER.fullmatch(value.strip()):
        raise invalid_request([(f"query.{name}", f"must be an integer, got {value[:40]!r}")])
    return int(value)


def str_arg(name: str) -> str | None:
    return request.args.get(name)


REGISTER = {
    "id": Field("str"),
    "name": Field("str"),
    "customer_types": Field("list[str]"),
    "max_open_chats": Field("int", required=False, nullable=True),
}
STATUS = {"status": Field("str")}
CAPACITY = {"max_open_chats": Field("int", nullable=True)}
REPLY = {"text": Field("str"), "executive_id": Field("str", required=False, nullable=True)}
TAG = {"tag": Field("str")}
RATING = {
    "score": Field("int"),
    "comment": Field("str", required=False, nullable=True),
    "token": Field("str"),
}

# ------------------------------------------------------------------------ state


class StreamClosed(Exception):
    """The event stream is closed: end the response."""


class EventStream:
    """One open ``/events`` response: a desk subscription read with
    :meth:`SyncSubscription.get`.

    :meth:`close` may be called from any thread (the response's close, the
    host's shutdown); it waits for a :meth:`next` in progress, which returns
    within the keep-alive interval."""

    def __init__(self, host: SmartChatHost, rooms: list[str], actor: Actor) -> None:
        self.host = host
        self.rooms = sorted(set(rooms))
        self._lock = threading.Lock()
        self._closed = False
        self._subscription: AbstractContextManager[SyncSubscription] = host.desk.subscribe(
            rooms, actor=actor
        )
        self._events = self._subscription.__enter__()  # a refusal raises here: 403/422

    @property
    def closed(self) -> bool:
        return self._closed

    def next(self, timeout: float) -> Event | None:
        """The next event, ``None`` after ``timeout`` seconds without one.

        Raises:
            StreamClosed: the stream is closed, or the host is shutting down.
        """
        with self._lock:
            if self._closed or self.host.closing:
                raise StreamClosed
            return self._events.get(timeout)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._subscription.__exit__(None, None, None)
            except Exception:  # the desk is gone already: nothing left to release
                logger.debug("closing an event stream", exc_info=True)
            finally:
                self.host._forget(self)


class SmartChatHost:
    """What :func:`create_app` keeps in ``app.extensions["smartchat"]``: the
    desk, the configuration, the open event streams, and the shutdown.

    Attributes:
        desk: the blocking desk every route calls.
        config: the :class:`AppConfig`.
        owns_desk: the app started the desk, so :meth:`close` stops it.
        seen_messages: WhatsApp message ids already processed.
    """

    def __init__(self, desk: SmartChat, config: AppConfig, *, owns_desk: bool) -> None:
        self.desk = desk
        self.config = config
        self.owns_desk = owns_desk
        self.seen_messages = RecentIds()
        self.monitors_started = False
        self._streams: set[EventStream] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    @property
    def open_streams(self) -> int:
        """How many ``/events`` responses hold a subscription now."""
        with self._lock:
            return len(self._streams)

    def open_stream(self, rooms: list[str], actor: Actor) -> EventStream:
        if self.closing:
            raise RequestError(503, "the app is shutting down")
        stream = EventStream(self, rooms, actor)
        with self._lock:
            self._streams.add(stream)
        return stream

    def _forget(self, stream: EventStream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def start_monitors(self) -> None:
        """Run the monitors in the desk's event loop until :meth:`close`."""
        self.desk.start_monitors()
        self.monitors_started = True

    def close(self) -> None:
        """Shut down (idempotent; registered with :mod:`atexit`): end the event
        streams (each within the keep-alive interval), stop the monitors, and
        stop the desk if the app started it.

        Streams go first: a desk cannot stop while a subscription is open."""
        with self._lock:
            if self._closing.is_set():
                return
            self._closing.set()
            streams = list(self._streams)
        atexit.unregister(self.close)
        for stream in streams:
            stream.close()
        if self.monitors_started:
            self.desk.stop_monitors()
            self.monitors_started = False
        if self.owns_desk:
            self.desk.__exit__(None, None, None)


def get_host(app: Flask | None = None) -> SmartChatHost:
    """The :class:`SmartChatHost` of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    host: SmartChatHost = target.extensions[EXTENSION]
    return host


def _started(desk: SmartChat) -> bool:
    try:
        desk.portal  # noqa: B018 - raises RuntimeError until the desk is entered
    except RuntimeError:
        return False
    return True


# ------------------------------------------------------------------------- auth


def authenticate(token: str | None = None) -> Actor:
    """The actor of the request's ``Authorization: Bearer <token>`` (or of
    ``token`` when given, e.g. from the query string of ``/events``)."""
    token = token or bearer(request.headers.get("Authorization"))
    if token is None:
        raise RequestError(
            401, "missing bearer token", headers={"WWW-Authenticate": 'Bearer realm="smartchat"'}
        )
    actor = get_host().config.actor_for(token)
    if actor is None:
        raise RequestError(
            401,
            "unknown bearer token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return actor


# --------------------------------------------------------------------------- app


def create_app(desk: SmartChat | None = None, *, config: AppConfig | None = None) -> Flask:
    """Build the app.

    Args:
        desk: the blocking desk.  Not started (or ``None``: :func:`desk_from_env`):
            the app starts it now and stops it at exit (:meth:`SmartChatHost.close`,
            registered with :mod:`atexit`).  Already started (``with
            SmartChat...(...) as desk: app = create_app(desk)``): the caller
            owns it; call ``get_host(app).close()`` before leaving the ``with``
            if event streams may still be open.
        config: default :meth:`AppConfig.from_env`.

    With ``config.run_monitors`` the monitors start now, in the desk's event
    loop, and run until the host closes.
    """
    config = config if config is not None else AppConfig.from_env()
    desk = desk if desk is not None else desk_from_env()
    owns_desk = not _started(desk)
    if owns_desk:
        desk.__enter__()
    host = SmartChatHost(desk, config, owns_desk=owns_desk)
    try:
        if config.generated_token:
            [token] = config.api_tokens
            logger.warning("no SMARTCHAT_API_TOKENS; generated supervisor token: %s", token)
        if config.run_monitors:
            host.start_monitors()
        app = _build(host)
    except BaseException:
        host.close()
        raise
    atexit.register(host.close)
    return app


def _build(host: SmartChatHost) -> Flask:
    config = host.config
    desk = host.desk
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions[EXTENSION] = host
    app.register_error_handler(SmartChatError, _smartchat_error)
    app.register_error_handler(RequestError, _request_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(InternalServerError, _internal_error)

    # ------------------------------------------------------------------ webhook
    @app.get("/webhook")
    def webhook_challenge() -> Response:
        """Meta's verification request: echo ``hub.challenge`` as plain text."""
        if not config.whatsapp_verify_token:
            raise RequestError(503, "webhook verification is not configured")
        challenge = verification_challenge(request.args, config.whatsapp_verify_token)
        return Response(
            challenge, mimetype="text/plain", headers={"X-Content-Type-Options": "nosniff"}
        )

    @app.post("/webhook")
    def webhook() -> Response:
        """Customer messages from the WhatsApp Cloud API."""
        secret = config.whatsapp_app_secret
        if not secret:
            raise RequestError(503, "the webhook is not configured (WHATSAPP_APP_SECRET)")
        body = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH: 413
        header = request.headers.get(SIGNATURE_HEADER)
        if header is None:
            raise RequestError(401, f"missing {SIGNATURE_HEADER}")
        if not verify_signature(secret, body, header):
            raise RequestError(403, f"{SIGNATURE_HEADER} does not match the body")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as error:
            reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            raise InvalidInputError("body", f"malformed JSON ({reason[:200]})") from None
        seen = host.seen_messages
        chats: list[dict[str, str]] = []
        rejected: list[dict[str, str]] = []
        duplicates = 0
        for message in parse_webhook(payload):
            if not seen.add_if_new(message.message_id):  # a concurrent redelivery included
                duplicates += 1
                continue
            customer_type = (config.customer_type_for or (lambda _: config.customer_type))(message)
            try:
                chat = desk.receive_customer_message(
                    customer_id=message.customer_id,
                    customer_name=message.customer_name,
                    customer_type=customer_type,
                    text=message.text,
                    actor=SYSTEM,
                )
            except InvalidInputError as error:  # redelivering would not help
                rejected.append({"message_id": message.message_id, "detail": str(error)})
                continue
            except BaseException:  # e.g. BackendError (503): Meta redelivers, process it then
                seen.discard(message.message_id)
                raise
            chats.append({"message_id": message.message_id, "chat_id": chat.id})
        return json_response({"received": len(chats), "chats": chats, "duplicates": duplicates,
                              "rejected": rejected})  # fmt: skip

    # --------------------------------------------------------------- executives
    @app.get("/api/me")
    def me() -> Response:
        """Who the token is, and the desk's time."""
        actor = authenticate()
        now = desk.desk.clock.now().isoformat()
        return json_response({"role": actor.role.value, "id": actor.id, "now": now})

    @app.get("/api/executives")
    def list_executives() -> Response:
        authenticate()
        executives = desk.list_executives(
            customer_type=str_arg("customer_type"), status=str_arg("status")
        )
        return json_response({"items": [to_json(e) for e in executives]})

    @app.post("/api/executives")
    def register_executive() -> Response:
        actor = authenticate()
        body = json_body(REGISTER)
        executive = desk.register_executive(
            body["id"],
            name=body["name"],
            customer_types=body["customer_types"],
            max_open_chats=body.get("max_open_chats"),
            actor=actor,
        )
        return json_response(to_json(executive))

    @app.get("/api/executives/<executive_id>")
    def get_executive(executive_id: str) -> Response:
        authenticate()
        return json_response(to_json(desk.get_executive(executive_id)))

    @app.put("/api/executives/<executive_id>/status")
    def set_status(executive_id: str) -> Response:
        actor = authenticate()
        body = json_body(STATUS)
        return json_response(
            to_json(desk.set_executive_status(executive_id, body["status"], actor=actor))
        )

    @app.put("/api/executives/<executive_id>/capacity")
    def set_capacity(executive_id: str) -> Response:
        actor = authenticate()
        body = json_body(CAPACITY)
        executive = desk.set_executive_capacity(executive_id, body["max_open_chats"], actor=actor)
        return json_response(to_json(executive))

    @app.post("/api/executives/<executive_id>/heartbeat")
    def heartbeat(executive_id: str) -> Response:
        actor = authenticate()
        return json_response(to_json(desk.heartbeat(executive_id, actor=actor)))

    # -------------------------------------------------------------------- chats
    @app.get("/api/chats")
    def list_chats() -> Response:
        """Every filter of ``fetch_all_chats``; executives see their own chats."""
        actor = authenticate()
        limit = int_arg("limit", None)
        offset = int_arg("offset", 0)
        assert offset is not None
        page = desk.fetch_all_chats(
            status=str_arg("status"),
            customer_type=str_arg("customer_type"),
            search=str_arg("search"),
            tag=str_arg("tag"),
            sender=str_arg("sender"),
            assigned_executive_id=str_arg("assigned_executive_id"),
            limit=limit,
            offset=offset,
            actor=actor,
        )
        return json_response(
            {
                "items": [to_json(chat) for chat in page.items],
                "total": page.total,
                "limit": page.limit,
                "offset": page.offset,
                "has_more": page.has_more,
            }
        )

    @app.get("/api/chats/<chat_id>")
    def get_chat(chat_id: str) -> Response:
        actor = authenticate()
        return json_response(to_json(desk.get_chat(chat_id, actor=actor)))

    @app.post("/api/chats/<chat_id>/messages")
    def reply(chat_id: str) -> Response:
        """An executive replies; ``executive_id`` defaults to the caller
        (executives) or the assignee (supervisors)."""
        actor = authenticate()
        body = json_body(REPLY)
        executive_id: str | None = body.get("executive_id")
        if executive_id is None:
            if actor.is_executive:
                executive_id = actor.id
            else:
                executive_id = desk.get_chat(chat_id, actor=actor).assigned_executive_id
                if executive_id is None:
                    raise ConflictError(
                        f"chat {chat_id!r} is not assigned: give executive_id to reply as"
                    )
        assert executive_id is not None
        chat = desk.send_executive_message(
            chat_id, executive_id=executive_id, text=body["text"], actor=actor
        )
        return json_response(to_json(chat))

    @app.post("/api/chats/<chat_id>/tags")
    def add_tag(chat_id: str) -> Response:
        actor = authenticate()
        body = json_body(TAG)
        return json_response(to_json(desk.apply_tag(chat_id, body["tag"], actor=actor)))

    @app.delete("/api/chats/<chat_id>/tags/<path:tag>")
    def remove_tag(chat_id: str, tag: str) -> Response:
        actor = authenticate()
        return json_response(to_json(desk.remove_tag(chat_id, tag, actor=actor)))

    @app.post("/api/chats/<chat_id>/resolve")
    def resolve(chat_id: str) -> Response:
        actor = authenticate()
        executive_id = actor.id if actor.is_executive else None
        return json_response(
            to_json(desk.resolve_chat(chat_id, executive_id=executive_id, actor=actor))
        )

    @app.get("/api/chats/<chat_id>/rating-token")
    def rating_token(chat_id: str) -> Response:
        """The token the resolution message carries (supervisors, for links)."""
        actor = authenticate()
        return json_response({"chat_id": chat_id, "token": desk.rating_token(chat_id, actor=actor)})

    @app.post("/api/chats/<chat_id>/rating")
    def rate(chat_id: str) -> Response:
        """The customer rates through the signed token of the resolution
        message: no bearer token, and nobody without the token can rate."""
        body = json_body(RATING)
        rating = desk.rate_chat(
            chat_id,
            score=body["score"],
            comment=body.get("comment"),
            token=body["token"],
            actor=CUSTOMER,
        )
        return json_response(to_json(rating))

    @app.get("/api/chats/<chat_id>/ratings")
    def ratings(chat_id: str) -> Response:
        actor = authenticate()
        return json_response(
            {"items": [to_json(r) for r in desk.get_ratings(chat_id, actor=actor)]}
        )

    # ---------------------------------------------------------------- dashboard
    @app.get("/api/counters")
    def counters() -> Response:
        authenticate()
        return json_response(to_json(desk.get_counters()))

    @app.post("/api/recount")
    def recount() -> Response:
        actor = authenticate()
        return json_response(to_json(desk.recount(actor=actor)))

    @app.get("/api/resolutions")
    def resolutions() -> Response:
        actor = authenticate()
        limit = int_arg("limit", 100)
        assert limit is not None
        if not 1 <= limit <= 1000:
            raise InvalidInputError("limit", f"must be from 1 to 1000, got {limit}")
        entries = desk.get_resolutions(
            chat_id=str_arg("chat_id"),
            executive_id=str_arg("executive_id"),
            limit=limit,
            actor=actor,
        )
        return json_response({"items": [to_json(e) for e in entries]})

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "closing" if host.closing else "ok"})

    # ------------------------------------------------------------------- events
    @app.get("/events")
    def events() -> Response:
        """``/events?rooms=dashboard,chat:ID`` (or ``rooms`` repeated) as
        Server-Sent Events.  The token comes as ``Authorization: Bearer`` or,
        for browsers' ``EventSource``, as ``?token=``.  Default rooms: the
        executive's own room, or ``dashboard``.

        The stream starts with ``{"event": "subscribed", "rooms": [...]}``,
        then carries one ``data:`` line of :meth:`Event.to_json` per event,
        and a ``: keep-alive`` comment after ``sse_keepalive`` idle seconds."""
        actor = authenticate(request.args.get("token"))
        rooms = [
            room.strip()
            for value in request.args.getlist("rooms")
            for room in value.split(",")
            if room.strip()
        ]
        if not rooms:
            rooms = [executive_room(str(actor.id))] if actor.is_executive else ["dashboard"]
        stream = host.open_stream(rooms, actor)  # refused: 403 / 422 before streaming
        response = Response(
            _sse(stream, config),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        response.call_on_close(stream.close)  # also when the body is never iterated
        return response

    return app


def _sse_data(data: object) -> str:
    return f"data: {dumps(data)}\n\n"  # JSON text has no raw newlines: one data line


def _sse(stream: EventStream, config: AppConfig) -> Iterator[str]:
    """The body of an ``/events`` response.  The WSGI server closes it when a
    write fails (the client left, noticed at the latest at the next keep-alive)."""
    try:
        yield f"retry: {config.sse_retry_ms}\n" + _sse_data(
            {"event": "subscribed", "rooms": stream.rooms}
        )
        while True:
            try:
                event = stream.next(config.sse_keepalive)
            except StreamClosed:
                return
            except Exception:  # the desk stopped under us
                logger.debug("event stream ended", exc_info=True)
                return
            yield ": keep-alive\n\n" if event is None else _sse_data(event.to_json())
    finally:
        stream.close()
