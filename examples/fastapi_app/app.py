"""A complete FastAPI host for smartchat_core.

* ``GET /webhook``  answers Meta's verification challenge;
  ``POST /webhook`` checks ``X-Hub-Signature-256`` against the app secret and
  feeds every customer message to the desk (status callbacks are ignored,
  redelivered messages are dropped by their WhatsApp id).
* ``/api/...``      REST for executives, chats, tags, resolve and rate, with
  bearer tokens mapped to :class:`~smartchat_core.Actor` values.
* ``/ws``           a WebSocket streaming :meth:`Event.to_json` for chosen rooms.
* ``/``             the live dashboard page.
* The SLA, awaiting and inactivity monitors run in the lifespan.

Run it::

    SMARTCHAT_API_TOKENS="s3cret=supervisor:lead,e1tok=executive:e1" \\
    WHATSAPP_APP_SECRET=... WHATSAPP_VERIFY_TOKEN=... \\
    uvicorn examples.fastapi_app.app:app

Configuration (environment, read by :meth:`AppConfig.from_env` and
:func:`desk_from_env`):

=============================  ===============================================
``SMARTCHAT_API_TOKENS``       ``token=role:id`` pairs, comma-separated; role is
                               ``supervisor`` or ``executive``.  Unset: one
                               supervisor token is generated and logged.
``WHATSAPP_APP_SECRET``        the Meta app secret (webhook signatures); unset:
                               ``POST /webhook`` answers 503.
``WHATSAPP_VERIFY_TOKEN``      the webhook verify token; unset: ``GET /webhook``
                               answers 503.
``SMARTCHAT_CUSTOMER_TYPE``    customer type of webhook messages (``retail``).
``SMARTCHAT_RUN_MONITORS``     ``0`` to leave the monitors to another process.
``SMARTCHAT_RATING_SECRET``    key of the signed rating tokens (generated per
                               process when unset: set it with several processes).
``SMARTCHAT_MONGODB_URL``,     use MongoDB / Redis through
``SMARTCHAT_REDIS_URL``        ``AsyncSmartChat.from_urls``; unset: in-memory.
``WHATSAPP_TOKEN``,            send through the WhatsApp Cloud API; unset: the
``WHATSAPP_PHONE_NUMBER_ID``   messages are logged.
``SLA_ALERT_GROUP_NUMBER``,    recipients of the two seed SLA tiers.
``SLA_SHIFT_LEAD_NUMBER``
=============================  ===============================================
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import anyio
from examples.common import (
    RecentIds,
    actor_for,
    async_desk_from_env,
    bearer,
    dumps,
    env_config,
    error_status,
    to_json,
)
from fastapi import Depends, FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException
from starlette.websockets import WebSocketDisconnect, WebSocketState

from smartchat_core import (
    SYSTEM,
    Actor,
    AsyncSmartChat,
    ConflictError,
    InvalidInputError,
    PermissionDeniedError,
    SmartChatError,
    executive_room,
)
from smartchat_core.whatsapp import (
    SIGNATURE_HEADER,
    InboundMessage,
    parse_webhook,
    verification_challenge,
    verify_signature,
)

__all__ = ["AppConfig", "app", "create_app", "desk_from_env", "error_status"]

logger = logging.getLogger("uvicorn.error")

DASHBOARD_HTML = Path(__file__).with_name("dashboard.html")
MAX_WEBHOOK_BODY = 1024 * 1024
"""Bytes; Meta's webhook bodies are far smaller."""

# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class AppConfig:
    """How the app authenticates and where webhook messages go.

    Attributes:
        api_tokens: bearer token -> the actor it authenticates.
        whatsapp_app_secret: checks ``X-Hub-Signature-256``; ``None`` refuses
            every webhook POST (503).
        whatsapp_verify_token: for the GET challenge; ``None`` refuses it (503).
        customer_type: customer type given to webhook messages ...
        customer_type_for: ... unless this maps a message to its type.
        run_monitors: start the SLA, awaiting and inactivity monitors in the
            lifespan (they run once per interval across processes anyway).
        generated_token: the supervisor token was generated (it is logged).
    """

    api_tokens: Mapping[str, Actor] = field(default_factory=dict)
    whatsapp_app_secret: str | None = None
    whatsapp_verify_token: str | None = None
    customer_type: str = "retail"
    customer_type_for: Callable[[InboundMessage], str] | None = None
    run_monitors: bool = True
    generated_token: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AppConfig:
        """The configuration from the environment (see :func:`env_config`)."""
        return cls(**env_config(environ))

    def actor_for(self, token: str | None) -> Actor | None:
        """The actor of a bearer token (compared in constant time)."""
        return actor_for(self.api_tokens, token)


def desk_from_env(environ: Mapping[str, str] | None = None) -> AsyncSmartChat:
    """The desk the environment asks for (not started: the lifespan enters it)."""
    return async_desk_from_env(environ)


CUSTOMER = Actor.customer()
"""Who calls the rating endpoint: the token is required, nothing else allowed."""

# --------------------------------------------------------------------- JSON forms


class Body(BaseModel):
    """Request bodies: JSON types exactly (no "5" for 5), no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


class RegisterExecutive(Body):
    id: str
    name: str
    customer_types: list[str]
    max_open_chats: int | None = None


class StatusChange(Body):
    status: str


class CapacityChange(Body):
    max_open_chats: int | None


class Reply(Body):
    text: str
    executive_id: str | None = None
    """Who replies; defaults to the caller (executives) or the assignee."""


class TagBody(Body):
    tag: str


class RatingBody(Body):
    score: int
    comment: str | None = None
    token: str


# ------------------------------------------------------------------------ errors


def error_response(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


async def smartchat_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SmartChatError)
    status = error_status(exc)
    if status >= 500:
        logger.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_response(status, type(exc).__name__, str(exc))


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for item in exc.errors():
        location = ".".join(str(part) for part in item.get("loc", ()))
        message = str(item.get("msg", "invalid"))
        if item.get("type") == "json_invalid":
            message = f"malformed JSON ({item.get('ctx', {}).get('error', 'cannot parse')})"
        errors.append({"loc": location, "msg": message, "type": str(item.get("type", ""))})
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors) or "invalid request"
    return error_response(422, "InvalidRequest", detail, errors=errors)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    try:
        name = HTTPStatus(exc.status_code).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        name = "HTTPError"
    response = error_response(exc.status_code, name, str(exc.detail))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


# ------------------------------------------------------------------ dependencies


def get_desk(request: Request) -> AsyncSmartChat:
    desk: AsyncSmartChat = request.app.state.desk
    return desk


def authenticate(request: Request) -> Actor:
    """The actor of the request's ``Authorization: Bearer <token>``."""
    config: AppConfig = request.app.state.config
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise HTTPException(
            401, "missing bearer token", headers={"WWW-Authenticate": 'Bearer realm="smartchat"'}
        )
    actor = config.actor_for(token)
    if actor is None:
        raise HTTPException(
            401,
            "unknown bearer token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return actor


Desk = Annotated[AsyncSmartChat, Depends(get_desk)]
Caller = Annotated[Actor, Depends(authenticate)]


# --------------------------------------------------------------------------- app


def create_app(
    desk_factory: Callable[[], AsyncSmartChat] | None = None,
    *,
    config: AppConfig | None = None,
    background: Sequence[Callable[[AsyncSmartChat], Any]] = (),
) -> FastAPI:
    """Build the app.

    Args:
        desk_factory: returns the desk (not yet started); the lifespan enters
            it, so it lives as long as the app.  Default: :func:`desk_from_env`.
        config: default :meth:`AppConfig.from_env`.
        background: async callables started with the desk in the lifespan's
            task group (simulators, consumers) and cancelled at shutdown.
    """
    config = config if config is not None else AppConfig.from_env()
    factory = desk_factory or desk_from_env

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with factory() as desk, anyio.create_task_group() as tasks:
            app.state.desk = desk
            if config.generated_token:
                [token] = config.api_tokens
                logger.warning("no SMARTCHAT_API_TOKENS; generated supervisor token: %s", token)
                logger.warning("dashboard: /?token=%s", token)
            if config.run_monitors:
                tasks.start_soon(desk.run_monitors, name="smartchat monitors")
            for job in background:
                tasks.start_soon(_guarded, job, desk)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()

    app = FastAPI(
        title="smartchat_core FastAPI example",
        lifespan=lifespan,
        exception_handlers={
            SmartChatError: smartchat_error,
            RequestValidationError: validation_error,
            HTTPException: http_error,
        },
    )
    app.state.config = config
    app.state.seen_messages = RecentIds()

    # ------------------------------------------------------------------ webhook
    @app.get("/webhook", response_class=PlainTextResponse)
    async def webhook_challenge(request: Request) -> str:
        """Meta's verification request: echo ``hub.challenge``."""
        if not config.whatsapp_verify_token:
            raise HTTPException(503, "webhook verification is not configured")
        return verification_challenge(request.query_params, config.whatsapp_verify_token)

    @app.post("/webhook")
    async def webhook(request: Request, desk: Desk) -> dict[str, Any]:
        """Customer messages from the WhatsApp Cloud API."""
        secret = config.whatsapp_app_secret
        if not secret:
            raise HTTPException(503, "the webhook is not configured (WHATSAPP_APP_SECRET)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_WEBHOOK_BODY:
                raise HTTPException(413, f"webhook body over {MAX_WEBHOOK_BODY} bytes")
        header = request.headers.get(SIGNATURE_HEADER)
        if header is None:
            raise HTTPException(401, f"missing {SIGNATURE_HEADER}")
        if not verify_signature(secret, bytes(body), header):
            raise HTTPException(403, f"{SIGNATURE_HEADER} does not match the body")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as error:
            raise InvalidInputError("body", f"malformed JSON ({error})") from None
        seen: RecentIds = request.app.state.seen_messages
        chats, duplicates, rejected = [], 0, []
        for message in parse_webhook(payload):
            if message.message_id in seen:
                duplicates += 1
                continue
            seen.add(message.message_id)  # before awaiting: a concurrent redelivery is a duplicate
            customer_type = (config.customer_type_for or (lambda _: config.customer_type))(message)
            try:
                chat = await desk.receive_customer_message(
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
        return {"received": len(chats), "chats": chats, "duplicates": duplicates,
                "rejected": rejected}  # fmt: skip

    # --------------------------------------------------------------- executives
    @app.get("/api/me")
    async def me(actor: Caller, desk: Desk) -> dict[str, Any]:
        """Who the token is, and the desk's time (the dashboard's clock)."""
        return {"role": actor.role.value, "id": actor.id, "now": desk.clock.now().isoformat()}

    @app.get("/api/executives")
    async def list_executives(
        actor: Caller, desk: Desk, customer_type: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        executives = await desk.list_executives(customer_type=customer_type, status=status)
        return {"items": [to_json(e) for e in executives]}

    @app.post("/api/executives")
    async def register_executive(body: RegisterExecutive, actor: Caller, desk: Desk) -> Any:
        executive = await desk.register_executive(
            body.id,
            name=body.name,
            customer_types=body.customer_types,
            max_open_chats=body.max_open_chats,
            actor=actor,
        )
        return to_json(executive)

    @app.get("/api/executives/{executive_id}")
    async def get_executive(executive_id: str, actor: Caller, desk: Desk) -> Any:
        return to_json(await desk.get_executive(executive_id))

    @app.put("/api/executives/{executive_id}/status")
    async def set_status(executive_id: str, body: StatusChange, actor: Caller, desk: Desk) -> Any:
        return to_json(await desk.set_executive_status(executive_id, body.status, actor=actor))

    @app.put("/api/executives/{executive_id}/capacity")
    async def set_capacity(
        executive_id: str, body: CapacityChange, actor: Caller, desk: Desk
    ) -> Any:
        executive = await desk.set_executive_capacity(
            executive_id, body.max_open_chats, actor=actor
        )
        return to_json(executive)

    @app.post("/api/executives/{executive_id}/heartbeat")
    async def heartbeat(executive_id: str, actor: Caller, desk: Desk) -> Any:
        return to_json(await desk.heartbeat(executive_id, actor=actor))

    # -------------------------------------------------------------------- chats
    @app.get("/api/chats")
    async def list_chats(
        actor: Caller,
        desk: Desk,
        status: str | None = None,
        customer_type: str | None = None,
        search: str | None = None,
        tag: str | None = None,
        sender: str | None = None,
        assigned_executive_id: str | None = None,
        limit: Annotated[int | None, Query()] = None,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Every filter of ``fetch_all_chats``; executives see their own chats."""
        page = await desk.fetch_all_chats(
            status=status,
            customer_type=customer_type,
            search=search,
            tag=tag,
            sender=sender,
            assigned_executive_id=assigned_executive_id,
            limit=limit,
            offset=offset,
            actor=actor,
        )
        return {
            "items": [to_json(chat) for chat in page.items],
            "total": page.total,
            "limit": page.limit,
            "offset": page.offset,
            "has_more": page.has_more,
        }

    @app.get("/api/chats/{chat_id}")
    async def get_chat(chat_id: str, actor: Caller, desk: Desk) -> Any:
        return to_json(await desk.get_chat(chat_id, actor=actor))

    @app.post("/api/chats/{chat_id}/messages")
    async def reply(chat_id: str, body: Reply, actor: Caller, desk: Desk) -> Any:
        executive_id = body.executive_id
        if executive_id is None:
            if actor.is_executive:
                executive_id = actor.id
            else:
                executive_id = (await desk.get_chat(chat_id, actor=actor)).assigned_executive_id
                if executive_id is None:
                    raise ConflictError(
                        f"chat {chat_id!r} is not assigned: give executive_id to reply as"
                    )
        assert executive_id is not None
        chat = await desk.send_executive_message(
            chat_id, executive_id=executive_id, text=body.text, actor=actor
        )
        return to_json(chat)

    @app.post("/api/chats/{chat_id}/tags")
    async def add_tag(chat_id: str, body: TagBody, actor: Caller, desk: Desk) -> Any:
        return to_json(await desk.apply_tag(chat_id, body.tag, actor=actor))

    @app.delete("/api/chats/{chat_id}/tags/{tag:path}")
    async def remove_tag(chat_id: str, tag: str, actor: Caller, desk: Desk) -> Any:
        return to_json(await desk.remove_tag(chat_id, tag, actor=actor))

    @app.post("/api/chats/{chat_id}/resolve")
    async def resolve(chat_id: str, actor: Caller, desk: Desk) -> Any:
        executive_id = actor.id if actor.is_executive else None
        return to_json(await desk.resolve_chat(chat_id, executive_id=executive_id, actor=actor))

    @app.get("/api/chats/{chat_id}/rating-token")
    async def rating_token(chat_id: str, actor: Caller, desk: Desk) -> dict[str, str]:
        """The token the resolution message carries (supervisors, for links)."""
        return {"chat_id": chat_id, "token": await desk.rating_token(chat_id, actor=actor)}

    @app.post("/api/chats/{chat_id}/rating")
    async def rate(chat_id: str, body: RatingBody, desk: Desk) -> Any:
        """The customer rates through the signed token of the resolution
        message: no bearer token, and nobody without the token can rate."""
        rating = await desk.rate_chat(
            chat_id, score=body.score, comment=body.comment, token=body.token, actor=CUSTOMER
        )
        return to_json(rating)

    @app.get("/api/chats/{chat_id}/ratings")
    async def ratings(chat_id: str, actor: Caller, desk: Desk) -> dict[str, Any]:
        return {"items": [to_json(r) for r in await desk.get_ratings(chat_id, actor=actor)]}

    # ---------------------------------------------------------------- dashboard
    @app.get("/api/counters")
    async def counters(actor: Caller, desk: Desk) -> Any:
        return to_json(await desk.get_counters())

    @app.post("/api/recount")
    async def recount(actor: Caller, desk: Desk) -> Any:
        return to_json(await desk.recount(actor=actor))

    @app.get("/api/resolutions")
    async def resolutions(
        actor: Caller,
        desk: Desk,
        chat_id: str | None = None,
        executive_id: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        if isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise InvalidInputError("limit", f"must be from 1 to 1000, got {limit}")
        entries = await desk.get_resolutions(
            chat_id=chat_id, executive_id=executive_id, limit=limit, actor=actor
        )
        return {"items": [to_json(e) for e in entries]}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(DASHBOARD_HTML.read_text(encoding="utf-8"))

    # ---------------------------------------------------------------- websocket
    @app.websocket("/ws")
    async def events(websocket: WebSocket) -> None:
        """``/ws?rooms=dashboard,chat:ID&token=...`` (or ``rooms`` repeated; the
        token may come as ``Authorization: Bearer``).  Sends
        ``{"event": "subscribed", "rooms": [...]}`` once subscribed, then one
        :meth:`Event.to_json` message per event.  Closes with 4401 (bad token),
        4403 (room not allowed) or 4422 (bad rooms).  Client messages:
        ``{"type": "ping"}`` (answered ``pong``), ``{"type": "heartbeat"}``
        (an executive's activity)."""
        await websocket.accept()
        token = websocket.query_params.get("token") or bearer(
            websocket.headers.get("authorization")
        )
        actor = config.actor_for(token)
        if actor is None:
            await _refuse(websocket, 4401, "Unauthorized", "missing or unknown token")
            return
        rooms = [
            room.strip()
            for value in websocket.query_params.getlist("rooms")
            for room in value.split(",")
            if room.strip()
        ]
        if not rooms:
            rooms = [executive_room(str(actor.id))] if actor.is_executive else ["dashboard"]
        desk: AsyncSmartChat = websocket.app.state.desk
        try:
            subscription = desk.subscribe(rooms, actor=actor)
        except SmartChatError as error:
            code = 4403 if isinstance(error, PermissionDeniedError) else 4422
            await _refuse(websocket, code, type(error).__name__, str(error))
            return
        async with subscription as stream, anyio.create_task_group() as tasks:

            async def forward() -> None:
                try:
                    async for event in stream:
                        await websocket.send_text(dumps(event.to_json()))
                except (WebSocketDisconnect, RuntimeError, OSError):
                    pass  # the client went away
                tasks.cancel_scope.cancel()

            await websocket.send_json({"event": "subscribed", "rooms": sorted(set(rooms))})
            tasks.start_soon(forward)
            await _read_client(websocket, desk, actor)
            tasks.cancel_scope.cancel()

    return app


async def _guarded(job: Callable[[AsyncSmartChat], Any], desk: AsyncSmartChat) -> None:
    """Run a background job; its failure is logged, not fatal to the app."""
    try:
        await job(desk)
    except Exception:
        logger.exception("background job %r failed", job)


async def _refuse(websocket: WebSocket, code: int, error: str, detail: str) -> None:
    await websocket.send_json({"event": "error", "error": error, "detail": detail})
    await websocket.close(code=code, reason=detail[:120])


async def _read_client(websocket: WebSocket, desk: AsyncSmartChat, actor: Actor) -> None:
    """Serve the client's messages until it disconnects."""
    while websocket.client_state is WebSocketState.CONNECTED:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            request = json.loads(message.get("text") or message.get("bytes") or b"")
            kind = request.get("type") if isinstance(request, dict) else None
        except (ValueError, RecursionError):
            kind = None
        if kind == "ping":
            await websocket.send_json({"event": "pong"})
        elif kind == "heartbeat" and actor.is_executive:
            try:
                await desk.heartbeat(str(actor.id), actor=actor)
            except SmartChatError as error:
                await websocket.send_json(
                    {"event": "error", "error": type(error).__name__, "detail": str(error)}
                )
        else:
            await websocket.send_json(
                {"event": "error", "error": "InvalidRequest",
                 "detail": 'send {"type": "ping"} or {"type": "heartbeat"}'}
            )  # fmt: skip


app = create_app()
"""The app for ``uvicorn examples.fastapi_app.app:app`` (configured by env)."""
