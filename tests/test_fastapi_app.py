"""The FastAPI example (examples/fastapi_app): every endpoint through
TestClient, bad input never a 500 nor a change; end to end under uvicorn on a
loopback port with a WebSocket client; the dashboard in Chromium; the demo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from app_helpers import (
    E1,
    E2,
    SECRET,
    SUP,
    TOKENS,
    VERIFY,
    app_settings,
    auth,
    signed,
    webhook_payload,
)
from smartchat_core import (
    Actor,
    AsyncSmartChat,
    ConflictError,
)
from smartchat_core.testing import ManualClock, RecordingSender
from smartchat_core.whatsapp import SIGNATURE_HEADER, WhatsAppCloudSender

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # examples/ is not installed: import it from the checkout
    sys.path.insert(0, str(ROOT))

from examples.common import error_status, parse_tokens  # noqa: E402
from examples.fastapi_app.app import (  # noqa: E402
    AppConfig,
    create_app,
    desk_from_env,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


# ------------------------------------------------------------------- harness


@dataclass
class Harness:
    client: TestClient
    clock: ManualClock
    sender: RecordingSender
    app: Any

    @property
    def desk(self) -> AsyncSmartChat:
        desk: AsyncSmartChat = self.app.state.desk
        return desk

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a desk coroutine on the app's event loop."""
        return self.client.portal.call(partial(function, *args, **kwargs))  # type: ignore[union-attr]

    def webhook(self, payload: object, **kw: Any) -> Any:
        body = json.dumps(payload).encode()
        return self.client.post("/webhook", content=body, headers=signed(body), **kw)

    def snapshot(self) -> Any:
        """Everything a bad request must leave alone."""
        page = self.call(self.desk.fetch_all_chats, limit=200)
        executives = self.call(self.desk.list_executives)
        counters = self.call(self.desk.get_counters)
        return page.items, executives, counters, list(self.sender.sent)


def make_app(clock: ManualClock, sender: RecordingSender, **config: Any) -> Any:
    options: dict[str, Any] = {
        "api_tokens": TOKENS,
        "whatsapp_app_secret": SECRET,
        "whatsapp_verify_token": VERIFY,
        "run_monitors": False,
    }
    options.update(config)
    return create_app(
        lambda: AsyncSmartChat.in_memory(settings=app_settings(), clock=clock, sender=sender),
        config=AppConfig(**options),
    )


@pytest.fixture
def harness() -> Iterator[Harness]:
    clock, sender = ManualClock(), RecordingSender()
    app = make_app(clock, sender)
    with TestClient(app) as client:
        yield Harness(client, clock, sender, app)


@pytest.fixture
def desk_with_chats(harness: Harness) -> Harness:
    """e1 and e2 (retail) online; customer A's chat is e1's, B's is e2's."""
    c = harness.client
    for executive_id, name in (("e1", "Asha"), ("e2", "Bala")):
        answer = c.post(
            "/api/executives",
            json={"id": executive_id, "name": name, "customer_types": ["retail"]},
            headers=auth(SUP),
        )
        assert answer.status_code == 200, answer.text
        answer = c.put(
            f"/api/executives/{executive_id}/status", json={"status": "online"}, headers=auth(SUP)
        )
        assert answer.status_code == 200, answer.text
    for index, (customer, name) in enumerate((("919800000001", "Anil"), ("919800000002", "Bina"))):
        payload = webhook_payload(
            f"hello from {name}", customer=customer, name=name, message_id=f"wamid.{index}"
        )
        assert harness.webhook(payload).status_code == 200
        harness.clock.advance(timedelta(seconds=10))
    return harness


def chat_of(h: Harness, customer: str) -> dict[str, Any]:
    items = h.client.get("/api/chats", params={"search": customer}, headers=auth(SUP)).json()
    [chat] = items["items"]
    return chat  # type: ignore[no-any-return]


def assert_error(answer: Any, status: int, error: str, detail: str = "") -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == error, body
    assert detail in body["detail"], body
    assert set(body) <= {"error", "detail", "errors"}


# ------------------------------------------------------------------- webhook


def test_webhook_challenge(harness: Harness) -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "987654"}
    answer = harness.client.get("/webhook", params=params)
    assert answer.status_code == 200
    assert answer.text == "987654"
    assert answer.headers["content-type"].startswith("text/plain")
    wrong = harness.client.get("/webhook", params={**params, "hub.verify_token": "guess"})
    assert_error(wrong, 403, "PermissionDeniedError", "verify_token")
    mode = harness.client.get("/webhook", params={**params, "hub.mode": "other"})
    assert_error(mode, 422, "InvalidInputError", "hub.mode")
    assert_error(harness.client.get("/webhook"), 422, "InvalidInputError")


def test_signed_webhook_creates_and_assigns_a_chat(desk_with_chats: Harness) -> None:
    h = desk_with_chats
    anil = chat_of(h, "919800000001")
    assert anil["customer_name"] == "Anil"
    assert anil["customer_type"] == "retail"
    assert anil["assigned_executive_id"] == "e1"
    assert anil["last_interaction_by"] == "Customer"
    assert chat_of(h, "919800000002")["assigned_executive_id"] == "e2"


def test_webhook_answer_lists_the_chats(harness: Harness) -> None:
    answer = harness.webhook(webhook_payload(message_id="wamid.X"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["received"] == 1 and body["duplicates"] == 0 and body["rejected"] == []
    [entry] = body["chats"]
    assert entry["message_id"] == "wamid.X"
    assert harness.call(harness.desk.get_chat, entry["chat_id"]).customer_id == "919800000001"


@pytest.mark.parametrize(
    ("headers", "status", "detail"),
    [
        ({}, 401, "missing X-Hub-Signature-256"),
        ({SIGNATURE_HEADER: "sha256=" + "0" * 64}, 403, "does not match"),
        ({SIGNATURE_HEADER: "garbage"}, 403, "does not match"),
        ({SIGNATURE_HEADER: ""}, 403, "does not match"),
        ("another-secret", 403, "does not match"),
        ("tampered", 403, "does not match"),
    ],
)
def test_unsigned_or_wrongly_signed_webhooks_change_nothing(
    harness: Harness, headers: Any, status: int, detail: str
) -> None:
    body = json.dumps(webhook_payload()).encode()
    if headers == "another-secret":
        headers = signed(body, "another-secret")
    elif headers == "tampered":
        headers = signed(body)
        body = body.replace(b"Ravi", b"Evil")
    before = harness.snapshot()
    answer = harness.client.post("/webhook", content=body, headers=headers)
    assert answer.status_code == status
    assert detail in answer.json()["detail"]
    assert harness.snapshot() == before


def test_status_callbacks_are_ignored(harness: Harness) -> None:
    statuses = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "1", "phone_number_id": "2"},
            "statuses": [{"id": "wamid.9", "status": "read", "timestamp": "1767225600",
                          "recipient_id": "919800000001"}],
        }}]}],
    }  # fmt: skip
    before = harness.snapshot()
    answer = harness.webhook(statuses)
    assert answer.status_code == 200
    assert answer.json()["received"] == 0
    assert harness.snapshot() == before


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{", "malformed JSON"),
        (b"", "malformed JSON"),
        (b"[" * 100_000, "malformed JSON"),
        (b"[]", "payload: must be an object"),
        (b'{"entry": {}}', "entry: must be a list"),
        (b'{"entry": [{"changes": [{"value": {"messages": [{"from": "1"}]}}]}]}',
         "entry[0].changes[0].value.messages[0].type"),
    ],
)  # fmt: skip
def test_malformed_signed_webhooks_are_422(harness: Harness, body: bytes, detail: str) -> None:
    before = harness.snapshot()
    answer = harness.client.post("/webhook", content=body, headers=signed(body))
    assert_error(answer, 422, "InvalidInputError", detail)
    assert harness.snapshot() == before


def test_redelivered_messages_are_dropped(desk_with_chats: Harness) -> None:
    h = desk_with_chats
    before = h.snapshot()
    answer = h.webhook(webhook_payload("hello from Anil", customer="919800000001",
                                       name="Anil", message_id="wamid.0"))  # fmt: skip
    assert answer.json() == {"received": 0, "chats": [], "duplicates": 1, "rejected": []}
    assert h.snapshot() == before


def test_a_backend_failure_is_503_and_the_redelivery_is_processed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smartchat_core import BackendError

    desk = harness.desk
    real = desk.receive_customer_message

    async def down(**kwargs: Any) -> Any:
        raise BackendError("connection to the chat store lost")

    monkeypatch.setattr(desk, "receive_customer_message", down)
    assert_error(harness.webhook(webhook_payload()), 503, "BackendError", "connection")
    monkeypatch.setattr(desk, "receive_customer_message", real)
    answer = harness.webhook(webhook_payload())  # Meta delivers it again
    assert answer.json()["received"] == 1 and answer.json()["duplicates"] == 0


def test_a_message_the_desk_refuses_is_reported_not_retried(harness: Harness) -> None:
    answer = harness.webhook(webhook_payload("x" * 5000))
    assert answer.status_code == 200
    body = answer.json()
    assert body["received"] == 0
    [rejected] = body["rejected"]
    assert rejected["message_id"] == "wamid.1" and "text" in rejected["detail"]


def test_webhook_refuses_when_not_configured() -> None:
    app = make_app(ManualClock(), RecordingSender(), whatsapp_app_secret=None,
                   whatsapp_verify_token=None)  # fmt: skip
    with TestClient(app) as client:
        body = json.dumps(webhook_payload()).encode()
        assert_error(client.post("/webhook", content=body, headers=signed(body)), 503,
                     "ServiceUnavailable", "WHATSAPP_APP_SECRET")  # fmt: skip
        params = {"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "1"}
        assert client.get("/webhook", params=params).status_code == 503


def test_oversized_webhook_bodies_are_refused(harness: Harness) -> None:
    body = b"{" + b" " * (1024 * 1024 + 1) + b"}"
    answer = harness.client.post("/webhook", content=body, headers=signed(body))
    assert answer.status_code == 413
    assert "webhook body over" in answer.json()["detail"]  # the name differs by Python version


def test_customer_type_mapping() -> None:
    clock, sender = ManualClock(), RecordingSender()
    app = make_app(
        clock, sender, customer_type_for=lambda m: "vip" if m.customer_name == "Big" else "retail"
    )
    with TestClient(app) as client:
        body = json.dumps(webhook_payload(name="Big")).encode()
        chat_id = client.post("/webhook", content=body, headers=signed(body)).json()["chats"][0]
        chat = client.get(f"/api/chats/{chat_id['chat_id']}", headers=auth(SUP)).json()
        assert chat["customer_type"] == "vip"


# ---------------------------------------------------------------- auth, misc


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer nope"}, "unknown bearer token"),
        ({"Authorization": f"Basic {SUP}"}, "missing bearer token"),
        ({"Authorization": "Bearer "}, "missing bearer token"),
    ],
)
def test_rest_needs_a_known_bearer_token(harness: Harness, headers: Any, detail: str) -> None:
    for method, path in (("GET", "/api/me"), ("GET", "/api/chats"), ("GET", "/api/executives"),
                         ("POST", "/api/chats/x/resolve"), ("GET", "/api/counters")):  # fmt: skip
        answer = harness.client.request(method, path, headers=headers)
        assert_error(answer, 401, "Unauthorized", detail)
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_me_health_and_unknown_routes(harness: Harness) -> None:
    c = harness.client
    now = harness.clock.now().isoformat()
    assert c.get("/api/me", headers=auth(E1)).json() == {
        "role": "executive",
        "id": "e1",
        "now": now,
    }
    assert c.get("/api/me", headers=auth(SUP)).json() == {
        "role": "supervisor",
        "id": "lead",
        "now": now,
    }
    assert c.get("/healthz").json() == {"status": "ok"}
    assert_error(c.get("/api/nothing", headers=auth(SUP)), 404, "NotFound")
    assert_error(c.delete("/api/me", headers=auth(SUP)), 405, "MethodNotAllowed")


def test_dashboard_page_is_self_contained(harness: Harness) -> None:
    answer = harness.client.get("/")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.text
    assert "smartchat dashboard" in page
    assert "<script src" not in page and "stylesheet" not in page  # no CDN, no build
    assert "innerHTML" not in page  # customer text is never markup
    assert "/ws?rooms=" in page and "/api/chats?status=open" in page


def test_error_status_table() -> None:
    from smartchat_core import (
        BackendError,
        ChatNotFoundError,
        DeliveryError,
        InvalidInputError,
        NotAssigneeError,
        PermissionDeniedError,
    )

    assert error_status(InvalidInputError("f", "bad")) == 422
    assert error_status(ChatNotFoundError("c")) == 404
    assert error_status(PermissionDeniedError("no")) == 403
    assert error_status(NotAssigneeError("c", "e")) == 409
    assert error_status(ConflictError("x")) == 409
    assert error_status(BackendError("down")) == 503
    assert error_status(DeliveryError("lost")) == 502


# ----------------------------------------------------------------- executives


def test_register_list_get_executives(harness: Harness) -> None:
    c = harness.client
    answer = c.post(
        "/api/executives",
        json={"id": "e9", "name": "Nia", "customer_types": ["retail", "vip"], "max_open_chats": 2},
        headers=auth(SUP),
    )
    assert answer.status_code == 200
    assert answer.json() == {
        "id": "e9", "name": "Nia", "customer_types": ["retail", "vip"], "status": "offline",
        "last_active_at": None, "max_open_chats": 2, "open_chats": 0, "awaiting_chats": 0,
    }  # fmt: skip
    assert c.get("/api/executives/e9", headers=auth(E1)).json()["name"] == "Nia"
    listed = c.get("/api/executives", params={"customer_type": "vip"}, headers=auth(SUP)).json()
    assert [e["id"] for e in listed["items"]] == ["e9"]
    offline = c.get("/api/executives", params={"status": "offline"}, headers=auth(SUP)).json()
    assert [e["id"] for e in offline["items"]] == ["e9"]
    assert c.get("/api/executives", params={"status": "online"}, headers=auth(SUP)).json() == {
        "items": []
    }
    assert_error(c.get("/api/executives", params={"status": "asleep"}, headers=auth(SUP)),
                 422, "InvalidInputError", "status")  # fmt: skip
    assert_error(c.get("/api/executives/nobody", headers=auth(SUP)), 404,
                 "ExecutiveNotFoundError", "nobody")  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "error", "detail"),
    [
        ({"id": "e9", "name": "N", "customer_types": "retail"}, 422, "InvalidRequest",
         "body.customer_types"),
        ({"id": "e9", "name": "N", "customer_types": ["retail"], "max_open_chats": "3"}, 422,
         "InvalidRequest", "body.max_open_chats"),
        ({"id": "e9", "name": "N", "customer_types": ["retail"], "max_open_chats": 2.5}, 422,
         "InvalidRequest", "body.max_open_chats"),
        ({"id": 9, "name": "N", "customer_types": ["retail"]}, 422, "InvalidRequest", "body.id"),
        ({"id": {"$ne": None}, "name": "N", "customer_types": ["retail"]}, 422, "InvalidRequest",
         "body.id"),
        ({"id": "e9", "name": "N", "customer_types": ["retail"], "admin": True}, 422,
         "InvalidRequest", "body.admin"),
        ({"name": "N", "customer_types": ["retail"]}, 422, "InvalidRequest", "body.id"),
        ({"id": "e9", "name": "N", "customer_types": []}, 422, "InvalidInputError",
         "customer_types"),
        ({"id": " e9", "name": "N", "customer_types": ["retail"]}, 422, "InvalidInputError",
         "white space"),
        ({"id": "e9", "name": "N", "customer_types": ["retail"], "max_open_chats": -1}, 422,
         "InvalidInputError", "max_open_chats"),
        ([], 422, "InvalidRequest", "body"),
    ],
)  # fmt: skip
def test_register_bad_input(
    harness: Harness, body: Any, status: int, error: str, detail: str
) -> None:
    before = harness.snapshot()
    answer = harness.client.post("/api/executives", json=body, headers=auth(SUP))
    assert_error(answer, status, error, detail)
    assert harness.snapshot() == before


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"{", "malformed JSON"),
        (b'{"id": "e9",', "malformed JSON"),
        (b"[" * 100_000, ""),
        (b"\xff\xfe", ""),
    ],
)
def test_malformed_json_is_a_clear_4xx(harness: Harness, content: bytes, detail: str) -> None:
    before = harness.snapshot()
    answer = harness.client.post(
        "/api/executives",
        content=content,
        headers={**auth(SUP), "Content-Type": "application/json"},
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert detail in answer.json()["detail"]
    assert harness.snapshot() == before


def test_executives_may_not_register(harness: Harness) -> None:
    before = harness.snapshot()
    answer = harness.client.post(
        "/api/executives", json={"id": "e9", "name": "N", "customer_types": ["retail"]},
        headers=auth(E1),
    )  # fmt: skip
    assert_error(answer, 403, "PermissionDeniedError", "register")
    assert harness.snapshot() == before


def test_status_heartbeat_and_capacity(desk_with_chats: Harness) -> None:
    h, c = desk_with_chats, desk_with_chats.client
    h.clock.advance(timedelta(minutes=1))
    beat = c.post("/api/executives/e1/heartbeat", headers=auth(E1))
    assert beat.status_code == 200
    assert beat.json()["last_active_at"] == h.clock.now().isoformat()
    away = c.put("/api/executives/e1/status", json={"status": "away"}, headers=auth(E1))
    assert away.json()["status"] == "away"
    before = h.snapshot()
    assert_error(c.put("/api/executives/e2/status", json={"status": "offline"}, headers=auth(E1)),
                 403, "PermissionDeniedError", "only for itself")  # fmt: skip
    assert_error(c.post("/api/executives/e2/heartbeat", headers=auth(E1)), 403,
                 "PermissionDeniedError")  # fmt: skip
    assert_error(c.put("/api/executives/e1/status", json={"status": "gone"}, headers=auth(E1)),
                 422, "InvalidInputError", "status")  # fmt: skip
    assert_error(c.put("/api/executives/e1/status", json={"status": 1}, headers=auth(E1)),
                 422, "InvalidRequest", "body.status")  # fmt: skip
    assert_error(c.put("/api/executives/zz/status", json={"status": "online"}, headers=auth(SUP)),
                 404, "ExecutiveNotFoundError")  # fmt: skip
    assert_error(c.put("/api/executives/e1/capacity", json={"max_open_chats": 5},
                       headers=auth(E1)), 403, "PermissionDeniedError")  # fmt: skip
    assert_error(c.put("/api/executives/e1/capacity", json={"max_open_chats": "5"},
                       headers=auth(SUP)), 422, "InvalidRequest")  # fmt: skip
    assert h.snapshot() == before
    capacity = c.put("/api/executives/e1/capacity", json={"max_open_chats": 5}, headers=auth(SUP))
    assert capacity.json()["max_open_chats"] == 5
    unlimited = c.put(
        "/api/executives/e1/capacity", json={"max_open_chats": None}, headers=auth(SUP)
    )
    assert unlimited.json()["max_open_chats"] is None


# ---------------------------------------------------------------------- chats


def ids(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [chat["customer_id"] for chat in answer.json()["items"]]


def test_list_chats_with_every_filter(desk_with_chats: Harness) -> None:
    h, c = desk_with_chats, desk_with_chats.client
    a, b = chat_of(h, "919800000001"), chat_of(h, "919800000002")
    c.post(f"/api/chats/{a['id']}/messages", json={"text": "hello Anil"}, headers=auth(E1))
    c.post(f"/api/chats/{b['id']}/tags", json={"tag": "vip"}, headers=auth(E2))
    h.clock.advance(timedelta(seconds=5))
    h.webhook(webhook_payload("(.*) [x]", customer="919800000003", name="Cy", message_id="w3"))
    c.post(f"/api/chats/{chat_of(h, '919800000003')['id']}/resolve", headers=auth(SUP))

    def listed(token: str = SUP, **params: Any) -> list[str]:
        return ids(c.get("/api/chats", params=params, headers=auth(token)))

    assert listed() == ["919800000003", "919800000001", "919800000002"]  # latest first
    assert listed(status="open") == ["919800000001", "919800000002"]
    assert listed(status="resolved") == ["919800000003"]
    assert listed(customer_type="retail", status="open") == ["919800000001", "919800000002"]
    assert listed(customer_type="wholesale") == []
    assert listed(search="(.*) [x]") == ["919800000003"]  # literal, not a pattern
    assert listed(search="^9") == []
    assert listed(search="bina") == ["919800000002"]
    assert listed(tag="vip") == ["919800000002"]
    assert listed(sender="Executive") == ["919800000001"]
    assert listed(sender="Customer", status="open") == ["919800000002"]
    assert listed(assigned_executive_id="e2") == ["919800000002"]
    assert listed(assigned_executive_id="unassigned", status="open") == []
    page = c.get("/api/chats", params={"limit": 2, "offset": 1}, headers=auth(SUP)).json()
    assert [i["customer_id"] for i in page["items"]] == ["919800000001", "919800000002"]
    assert (page["total"], page["limit"], page["offset"], page["has_more"]) == (3, 2, 1, False)
    first = c.get("/api/chats", params={"limit": 1}, headers=auth(SUP)).json()
    assert first["total"] == 3 and first["has_more"] is True
    # "My chats": an executive sees its own, whatever it asks for
    assert listed(E1) == ["919800000003", "919800000001"]  # it held the resolved one
    assert listed(E1, assigned_executive_id="e1", status="open") == ["919800000001"]
    assert listed(E2) == ["919800000002"]
    assert_error(c.get("/api/chats", params={"assigned_executive_id": "e2"}, headers=auth(E1)),
                 403, "PermissionDeniedError", "own chats")  # fmt: skip


@pytest.mark.parametrize(
    ("params", "status", "error", "detail"),
    [
        ({"limit": "ten"}, 422, "InvalidRequest", "query.limit"),
        ({"offset": "1.5"}, 422, "InvalidRequest", "query.offset"),
        ({"limit": 0}, 422, "InvalidInputError", "limit"),
        ({"limit": 100_000}, 422, "InvalidInputError", "limit"),
        ({"offset": -1}, 422, "InvalidInputError", "offset"),
        ({"status": "closed"}, 422, "InvalidInputError", "status"),
        ({"sender": "Bot"}, 422, "InvalidInputError", "sender"),
        ({"search": "x" * 500}, 422, "InvalidInputError", "search"),
        ({"tag": ""}, 422, "InvalidInputError", "tag"),
        ({"assigned_executive_id": ""}, 422, "InvalidInputError", "assigned_executive_id"),
    ],
)
def test_list_chats_bad_queries(
    desk_with_chats: Harness, params: Any, status: int, error: str, detail: str
) -> None:
    answer = desk_with_chats.client.get("/api/chats", params=params, headers=auth(SUP))
    assert_error(answer, status, error, detail)


def test_get_one_chat(desk_with_chats: Harness) -> None:
    h, c = desk_with_chats, desk_with_chats.client
    a, b = chat_of(h, "919800000001"), chat_of(h, "919800000002")
    assert c.get(f"/api/chats/{a['id']}", headers=auth(E1)).json() == a
    assert c.get(f"/api/chats/{a['id']}", headers=auth(SUP)).json() == a
    assert_error(c.get(f"/api/chats/{b['id']}", headers=auth(E1)), 403,
                 "PermissionDeniedError", "only chats assigned to it")  # fmt: skip
    assert_error(c.get("/api/chats/nope", headers=auth(SUP)), 404, "ChatNotFoundError", "nope")


def test_executive_reply(desk_with_chats: Harness) -> None:
    h, c = desk_with_chats, desk_with_chats.client
    a = chat_of(h, "919800000001")
    answer = c.post(f"/api/chats/{a['id']}/messages", json={"text": "Hello Anil"}, headers=auth(E1))
    assert answer.status_code == 200
    assert answer.json()["last_interaction_by"] == "Executive"
    assert answer.json()["last_message"] == "Hello Anil"
    assert h.sender.to("919800000001") == ["Hello Anil"]
    # a supervisor replies as the assignee, or as a named executive
    answer = c.post(f"/api/chats/{a['id']}/messages", json={"text": "(lead)"}, headers=auth(SUP))
    assert answer.status_code == 200
    assert h.sender.to("919800000001") == ["Hello Anil", "(lead)"]


@pytest.mark.parametrize(
    ("token", "body", "status", "error", "detail"),
    [
        (E2, {"text": "mine now"}, 403, "PermissionDeniedError", "only chats assigned to it"),
        (E1, {"text": "as e2", "executive_id": "e2"}, 403, "PermissionDeniedError", "itself"),
        (SUP, {"text": "as e2", "executive_id": "e2"}, 409, "NotAssigneeError", "e2"),
        (SUP, {"text": "as ghost", "executive_id": "ghost"}, 404, "ExecutiveNotFoundError", ""),
        (E1, {"text": ""}, 422, "InvalidInputError", "text"),
        (E1, {"text": "   "}, 422, "InvalidInputError", "text"),
        (E1, {"text": "x" * 5000}, 422, "InvalidInputError", "text"),
        (E1, {"text": 5}, 422, "InvalidRequest", "body.text"),
        (E1, {"text": ["a"]}, 422, "InvalidRequest", "body.text"),
        (E1, {}, 422, "InvalidRequest", "body.text"),
        (E1, {"message": "hi"}, 422, "InvalidRequest", "body"),
    ],
)
def test_reply_bad_requests_change_nothing(
    desk_with_chats: Harness, token: str, body: Any, status: int, error: str, detail: str
) -> None:
    h = desk_with_chats
    a = chat_of(h, "919800000001")
    before = h.snapshot()
    answer = h.client.post(f"/api/chats/{a['id']}/messages", json=body, headers=auth(token))
    assert_error(answer, status, error, detail)
    assert h.snapshot() == before


def test_reply_to_an_unknown_or_unassigned_chat(harness: Harness) -> None:
    c = harness.client
    assert_error(c.post("/api/chats/nope/messages", json={"text": "hi"}, headers=auth(SUP)),
                 404, "ChatNotFoundError")  # fmt: skip
    chat_id = harness.webhook(webhook_payload()).json()["chats"][0]["chat_id"]  # nobody online
    assert_error(c.post(f"/api/chats/{chat_id}/messages", json={"text": "hi"}, headers=auth(SUP)),
                 409, "ConflictError", "not assigned")  # fmt: skip


def test_a_failed_delivery_is_502_and_changes_nothing(desk_with_chats: Harness) -> None:
    h = desk_with_chats
    a = chat_of(h, "919800000001")
    h.sender.fail = True
    before = h.snapshot()
    answer = h.client.post(f"/api/chats/{a['id']}/messages", json={"text": "hi"}, headers=auth(E1))
    assert_error(answer, 502, "DeliveryError", "failed")
    assert h.snapshot() == before


def test_tags(desk_with_chats: Harness) -> None:
    h, c = desk_with_chats, desk_with_chats.client
    a = chat_of(h, "919800000001")
    url = f"/api/chats/{a['id']}/tags"
    assert c.post(url, json={"tag": "vip"}, headers=auth(E1)).json()["tags"] == ["vip"]
    assert c.post(url, json={"tag": "vip"}, headers=auth(E1)).json()["tags"] == ["vip"]
    assert c.post(url, json={"tag": "a/b"}, headers=auth(SUP)).json()["tags"] == ["vip", "a/b"]
    assert c.delete(f"{url}/a/b", headers=auth(E1)).json()["tags"] == ["vip"]
    assert c.delete(f"{url}/vip", headers=auth(E1)).json()["tags"] == []
    assert c.delete(f"{url}/vip", headers=auth(E1)).json()["tags"] == []  # idempotent
    b = chat_of(h, "919800000002")
    before = h.snapshot()
    assert_error(c.post(f"/api/chats/{b['id']}/tags", json={"tag": "x"}, headers=auth(E1)),
                 403, "PermissionDeniedError", "only chats assigned to it")  # fmt: skip
    assert_error(c.delete(f"/api/chats/{b['id']}/tags/x", headers=auth(E1)), 403,
                 "PermissionDeniedError")  # fmt: skip
    assert_error(c.post(url, json={"tag": ""}, headers=auth(E1)), 422, "InvalidInputError", "tag")
    assert_error(c.post(url, json={"tag": "t" * 65}, headers=auth(E1)), 422, "InvalidInputError")
    assert_error(c.post(url, json={"tag": ["vip"]}, headers=auth(E1)), 422, "InvalidRequest")
    assert_error(c.post(url, json={"tag": {"$ne": None}}, headers=auth(E1)), 422,
                 "InvalidRequest")  # fmt: skip
    assert_error(c.post("/api/chats/nope/tags", json={"tag": "x"}, headers=auth(SUP)), 404,
                 "ChatNotFoundError")  # fmt: skip
    assert h.snapshot() == before


def test_resolve_and_rate(desk_with_chats: Harness) -> None:
    h, c = desk_with_chats, desk_with_chats.client
    a, b = chat_of(h, "919800000001"), chat_of(h, "919800000002")
    before = h.snapshot()
    assert_error(c.post(f"/api/chats/{b['id']}/resolve", headers=auth(E1)), 403,
                 "PermissionDeniedError")  # fmt: skip
    assert_error(c.post("/api/chats/nope/resolve", headers=auth(SUP)), 404, "ChatNotFoundError")
    assert_error(c.get(f"/api/chats/{a['id']}/rating-token", headers=auth(SUP)), 409,
                 "ChatNotResolvedError")  # fmt: skip
    assert_error(c.post(f"/api/chats/{a['id']}/rating", json={"score": 5, "token": "x"}), 409,
                 "ChatNotResolvedError")  # fmt: skip
    assert h.snapshot() == before

    resolved = c.post(f"/api/chats/{a['id']}/resolve", headers=auth(E1))
    assert resolved.status_code == 200 and resolved.json()["is_resolved"] is True
    again = c.post(f"/api/chats/{a['id']}/resolve", headers=auth(E1))
    assert again.json() == resolved.json()  # idempotent
    assert c.get("/api/executives/e1", headers=auth(SUP)).json()["open_chats"] == 0

    assert_error(c.get(f"/api/chats/{a['id']}/rating-token", headers=auth(E1)), 403,
                 "PermissionDeniedError")  # fmt: skip
    token = c.get(f"/api/chats/{a['id']}/rating-token", headers=auth(SUP)).json()["token"]
    rate_url = f"/api/chats/{a['id']}/rating"
    before = h.snapshot()
    for body, status, error in (
        ({"score": 5, "token": token + "x"}, 403, "PermissionDeniedError"),
        ({"score": 5, "token": ""}, 403, "PermissionDeniedError"),
        ({"score": 5}, 422, "InvalidRequest"),
        ({"score": 6, "token": token}, 422, "InvalidInputError"),
        ({"score": 0, "token": token}, 422, "InvalidInputError"),
        ({"score": "5", "token": token}, 422, "InvalidRequest"),
        ({"score": True, "token": token}, 422, "InvalidRequest"),
        ({"score": 4.0, "token": token}, 422, "InvalidRequest"),
        ({"score": 5, "token": token, "comment": 7}, 422, "InvalidRequest"),
        ({"score": 5, "token": token, "comment": "c" * 3000}, 422, "InvalidInputError"),
    ):
        assert_error(c.post(rate_url, json=body), status, error)
    assert c.get(f"/api/chats/{a['id']}/ratings", headers=auth(SUP)).json() == {"items": []}
    assert h.snapshot() == before

    rating = c.post(rate_url, json={"score": 5, "comment": "quick", "token": token})
    assert rating.status_code == 200
    assert rating.json()["score"] == 5 and rating.json()["executive_id"] == "e1"
    assert_error(c.post(rate_url, json={"score": 4, "token": token}), 409, "AlreadyRatedError")
    ratings = c.get(f"/api/chats/{a['id']}/ratings", headers=auth(SUP)).json()["items"]
    assert [(r["score"], r["comment"]) for r in ratings] == [(5, "quick")]
    log = c.get("/api/resolutions", headers=auth(E1)).json()["items"]
    assert [(e["chat_id"], e["executive_id"]) for e in log] == [(a["id"], "e1")]
    assert_error(c.get("/api/resolutions", params={"limit": 0}, headers=auth(SUP)), 422,
                 "InvalidInputError")  # fmt: skip
    assert_error(c.get("/api/resolutions", params={"executive_id": "e2"}, headers=auth(E1)),
                 403, "PermissionDeniedError")  # fmt: skip


def test_the_resolution_message_carries_the_rating_token(desk_with_chats: Harness) -> None:
    h, c = desk_with_chats, desk_with_chats.client
    a = chat_of(h, "919800000001")
    c.post(f"/api/chats/{a['id']}/resolve", headers=auth(SUP))
    token = c.get(f"/api/chats/{a['id']}/rating-token", headers=auth(SUP)).json()["token"]
    assert token and h.sender.to("919800000001")  # the resolution message went out


def test_counters_and_recount(desk_with_chats: Harness) -> None:
    c = desk_with_chats.client
    counters = c.get("/api/counters", headers=auth(E1)).json()
    assert counters["open"] == 2 and counters["by_type"]["retail"]["open"] == 2
    assert_error(c.post("/api/recount", headers=auth(E1)), 403, "PermissionDeniedError")
    assert c.post("/api/recount", headers=auth(SUP)).json() == counters


# ------------------------------------------------------------------ websocket


def test_websocket_streams_dashboard_events(desk_with_chats: Harness) -> None:
    h = desk_with_chats
    with h.client.websocket_connect(f"/ws?rooms=dashboard&token={SUP}") as ws:
        assert ws.receive_json() == {"event": "subscribed", "rooms": ["dashboard"]}
        h.webhook(webhook_payload("new here", customer="919800000005", name="Eve",
                                  message_id="w5"))  # fmt: skip
        message, assigned = ws.receive_json(), ws.receive_json()
        assert message["event"] == "chat_message" and message["payload"]["text"] == "new here"
        assert assigned["event"] == "chat_assigned"
        assert assigned["payload"]["executive_id"] == "e1"
        assert "dashboard" in assigned["rooms"] and assigned["occurred_at"]
        h.client.put("/api/executives/e2/status", json={"status": "away"}, headers=auth(E2))
        status = ws.receive_json()
        assert status["event"] == "executive_status"
        assert status["payload"]["executive"]["customer_types"] == ["retail"]
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"event": "pong"}


def test_websocket_rooms_and_refusals(desk_with_chats: Harness) -> None:
    h = desk_with_chats
    a = chat_of(h, "919800000001")
    with h.client.websocket_connect(f"/ws?token={E1}") as ws:  # default: its own room
        assert ws.receive_json() == {"event": "subscribed", "rooms": ["executive:e1"]}
        h.client.post(f"/api/chats/{a['id']}/tags", json={"tag": "vip"}, headers=auth(E1))
        assert ws.receive_json()["event"] == "tag_updated"
        ws.send_text("not json")
        assert ws.receive_json()["error"] == "InvalidRequest"
        h.clock.advance(timedelta(minutes=1))
        ws.send_json({"type": "heartbeat"})
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"event": "pong"}
        executive = h.call(h.desk.get_executive, "e1")
        assert executive.last_active_at == h.clock.now()
    with h.client.websocket_connect(f"/ws?rooms=chat:{a['id']}&rooms=dashboard&token={SUP}") as ws:
        assert ws.receive_json()["rooms"] == [f"chat:{a['id']}", "dashboard"]
    for url, code, error in (
        ("/ws?rooms=dashboard&token=nope", 4401, "Unauthorized"),
        ("/ws?rooms=dashboard", 4401, "Unauthorized"),
        (f"/ws?rooms=dashboard&token={E1}", 4403, "PermissionDeniedError"),
        (f"/ws?rooms=executive:e2&token={E1}", 4403, "PermissionDeniedError"),
        (f"/ws?rooms={'x' * 300}&token={SUP}", 4422, "InvalidInputError"),
    ):
        with h.client.websocket_connect(url) as ws:
            assert ws.receive_json()["error"] == error
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive_json()
            assert info.value.code == code


def test_websocket_bearer_header(desk_with_chats: Harness) -> None:
    with desk_with_chats.client.websocket_connect("/ws?rooms=dashboard", headers=auth(SUP)) as ws:
        assert ws.receive_json()["event"] == "subscribed"


def test_the_app_runs_under_trio() -> None:
    """The app is anyio-clean: lifespan, monitors, routes and WebSocket on trio."""
    clock, sender = ManualClock(), RecordingSender()
    app = make_app(clock, sender, run_monitors=True)
    with TestClient(app, backend="trio") as client:
        executive = {"id": "e1", "name": "Asha", "customer_types": ["retail"]}
        assert client.post("/api/executives", json=executive, headers=auth(SUP)).status_code == 200
        client.put("/api/executives/e1/status", json={"status": "online"}, headers=auth(SUP))
        with client.websocket_connect(f"/ws?token={SUP}") as ws:
            assert ws.receive_json()["event"] == "subscribed"
            body = json.dumps(webhook_payload()).encode()
            assert client.post("/webhook", content=body, headers=signed(body)).status_code == 200
            assert [ws.receive_json()["event"] for _ in range(2)] == [
                "chat_message",
                "chat_assigned",
            ]
            clock.advance(timedelta(minutes=4))
            assert ws.receive_json()["event"] == "sla_alert"


# -------------------------------------------------------------- configuration


def test_parse_tokens() -> None:
    assert parse_tokens("") == {}
    assert parse_tokens(" a=supervisor:lead , b=executive:e1,") == {
        "a": Actor.supervisor("lead"),
        "b": Actor.executive("e1"),
    }
    for bad in ("a", "a=admin:x", "a=executive:", "=executive:e1"):
        with pytest.raises(ValueError, match="SMARTCHAT_API_TOKENS"):
            parse_tokens(bad)


def test_config_from_env() -> None:
    config = AppConfig.from_env(
        {
            "SMARTCHAT_API_TOKENS": "t1=executive:e1",
            "WHATSAPP_APP_SECRET": "s",
            "WHATSAPP_VERIFY_TOKEN": "v",
            "SMARTCHAT_CUSTOMER_TYPE": "wholesale",
            "SMARTCHAT_RUN_MONITORS": "0",
        }
    )
    assert config.actor_for("t1") == Actor.executive("e1")
    assert config.actor_for("t2") is None and config.actor_for(None) is None
    assert (config.whatsapp_app_secret, config.whatsapp_verify_token) == ("s", "v")
    assert config.customer_type == "wholesale" and config.run_monitors is False
    assert not config.generated_token
    generated = AppConfig.from_env({})
    assert generated.generated_token and generated.run_monitors
    [(token, actor)] = generated.api_tokens.items()
    assert len(token) >= 24 and actor.is_privileged
    assert generated.whatsapp_app_secret is None


def test_desk_from_env_in_memory_with_logging_or_cloud_sender() -> None:
    desk = desk_from_env({})
    assert not isinstance(desk.ports.sender, WhatsAppCloudSender)
    assert desk.settings.rating_secret
    desk = desk_from_env(
        {
            "WHATSAPP_TOKEN": "t",
            "WHATSAPP_PHONE_NUMBER_ID": "1",
            "SMARTCHAT_RATING_SECRET": "r",
            "SLA_ALERT_GROUP_NUMBER": "+91",
        }
    )
    assert isinstance(desk.ports.sender, WhatsAppCloudSender)
    assert desk.settings.rating_secret == "r"
    assert desk.settings.sla_tiers[0].recipient == "+91"


def test_desk_from_env_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"SMARTCHAT_REDIS_URL": "redis://127.0.0.1:1/0", "SMARTCHAT_RATING_SECRET": "r"}
    calls: list[dict[str, Any]] = []

    def from_urls(**kwargs: Any) -> AsyncSmartChat:
        calls.append(kwargs)
        return AsyncSmartChat.in_memory(settings=kwargs["settings"])

    monkeypatch.setattr(AsyncSmartChat, "from_urls", from_urls, raising=False)
    desk_from_env({**env, "SMARTCHAT_MONGODB_URL": "mongodb://127.0.0.1:1"})
    [call] = calls
    assert call["mongodb_url"] == "mongodb://127.0.0.1:1"
    assert call["redis_url"] == "redis://127.0.0.1:1/0"
    assert call["settings"].rating_secret == "r"


def test_module_level_app_imports() -> None:
    from examples.fastapi_app import app as module

    assert module.app.state.config.api_tokens
    routes = {getattr(route, "path", None) for route in module.app.routes}
    assert {"/webhook", "/ws", "/", "/api/chats", "/api/executives"} <= routes


# ------------------------------------------------------- end to end, uvicorn


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """The app under uvicorn (lifespan on) on a free loopback port, in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # requests queue here until the lifespan has started
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


class Events:
    """A WebSocket client's view of the event stream."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[str] = []

    def next(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.ws.recv(timeout=15))
        self.seen.append(message["event"])
        return message

    def until(self, name: str) -> dict[str, Any]:
        for _ in range(50):
            message = self.next()
            if message["event"] == name:
                return message
        raise AssertionError(f"no {name} among {self.seen}")


def test_end_to_end_under_uvicorn() -> None:
    from websockets.sync.client import connect

    clock, sender = ManualClock(), RecordingSender()
    app = make_app(clock, sender, run_monitors=True)
    with serve(app) as host, httpx.Client(base_url=f"http://{host}", timeout=15) as http:
        executive = {"id": "e1", "name": "Asha", "customer_types": ["retail"]}
        answer = http.post("/api/executives", headers=auth(SUP), json=executive)
        assert answer.status_code == 200
        with connect(f"ws://{host}/ws?rooms=dashboard&token={SUP}", open_timeout=15) as ws:
            events = Events(ws)
            assert events.next() == {"event": "subscribed", "rooms": ["dashboard"]}
            online = http.put("/api/executives/e1/status", json={"status": "online"},
                              headers=auth(E1))  # fmt: skip
            assert online.status_code == 200
            status = events.until("executive_status")
            assert status["payload"]["status"] == "online"

            body = json.dumps(webhook_payload("where is my parcel?")).encode()
            hook = http.post("/webhook", content=body, headers=signed(body))
            assert hook.status_code == 200, hook.text
            chat_id = hook.json()["chats"][0]["chat_id"]
            assigned = events.until("chat_assigned")
            assert assigned["payload"]["chat_id"] == chat_id
            assert assigned["payload"]["executive_id"] == "e1"
            assert events.seen[-2:] == ["chat_message", "chat_assigned"]

            clock.advance(timedelta(minutes=4))  # the monitors of the lifespan wake up
            alert = events.until("sla_alert")
            assert alert["payload"]["chat_id"] == chat_id
            assert alert["payload"]["alert_type"] == "alert"
            assert sender.to("+910000000001")  # the WhatsApp alert went out too

            reply = http.post(f"/api/chats/{chat_id}/messages", json={"text": "On its way!"},
                              headers=auth(E1))  # fmt: skip
            assert reply.status_code == 200
            outgoing = events.until("chat_message")
            assert outgoing["payload"]["direction"] == "outgoing"
            assert sender.to("919800000001") == ["On its way!"]

            tag = http.post(f"/api/chats/{chat_id}/tags", json={"tag": "delivery"},
                            headers=auth(E1))  # fmt: skip
            assert tag.status_code == 200
            tagged = events.until("tag_updated")
            assert tagged["payload"] == {"chat_id": chat_id, "tag": "delivery", "action": "added",
                                         "tags": ["delivery"]}  # fmt: skip

            resolve = http.post(f"/api/chats/{chat_id}/resolve", headers=auth(E1))
            assert resolve.status_code == 200
            resolved = events.until("chat_resolved")
            assert resolved["payload"]["executive_id"] == "e1"

            token = http.get(f"/api/chats/{chat_id}/rating-token", headers=auth(SUP)).json()
            rate = http.post(f"/api/chats/{chat_id}/rating",
                             json={"score": 4, "token": token["token"]})  # fmt: skip
            assert rate.status_code == 200
            rated = events.until("chat_rated")
            assert rated["payload"]["rating"]["score"] == 4

            # bad input over a real socket is still a clear 4xx
            bad = http.post("/api/executives", content=b"{", headers={
                **auth(SUP), "Content-Type": "application/json"})  # fmt: skip
            assert bad.status_code == 422 and bad.json()["error"] == "InvalidRequest"
            unsigned = http.post("/webhook", content=body)
            assert unsigned.status_code == 401
    assert app.state.desk.monitor_ticks.get("sla", 0) >= 1


# ------------------------------------------------------------------- browser


def require_servers() -> bool:
    return os.environ.get("SMARTCHAT_REQUIRE_SERVERS") == "1"


def test_dashboard_in_chromium(tmp_path: Path) -> None:
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        if require_servers():
            pytest.fail(f"{CHROMIUM} is missing and SMARTCHAT_REQUIRE_SERVERS=1")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if require_servers():
            raise
        pytest.skip("playwright is not installed")

    clock, sender = ManualClock(), RecordingSender()
    app = make_app(clock, sender)
    with serve(app) as host, httpx.Client(base_url=f"http://{host}", timeout=15) as http:
        http.post("/api/executives", headers=auth(SUP),
                  json={"id": "e1", "name": "Asha", "customer_types": ["retail"]})  # fmt: skip
        http.put("/api/executives/e1/status", json={"status": "online"}, headers=auth(SUP))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                problems: list[str] = []
                page.on("pageerror", lambda error: problems.append(str(error)))
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.goto(f"http://{host}/?token={SUP}")
                page.wait_for_selector("#ws-state.live", timeout=15_000)
                assert page.url == f"http://{host}/"  # the token left the address bar
                page.wait_for_selector('#executives tr[data-executive-id="e1"]', timeout=15_000)
                assert "online" in page.inner_text('#executives tr[data-executive-id="e1"]')
                page.evaluate("window.__notReloaded = true")

                body = json.dumps(webhook_payload("my parcel <b>never</b> came",
                                                  name="Browser Customer")).encode()  # fmt: skip
                assert http.post("/webhook", content=body, headers=signed(body)).status_code == 200
                row = page.wait_for_selector(
                    "#chats tr[data-chat-id]:has-text('Browser Customer'):has-text('Asha')",
                    timeout=15_000,
                )
                assert row is not None
                text = row.inner_text()
                assert "Asha" in text and "my parcel <b>never</b> came" in text  # text, not markup
                waiting = row.query_selector(".waiting")
                assert waiting is not None and waiting.inner_text().startswith("0:0")  # desk time
                assert page.evaluate("window.__notReloaded") is True
                page.wait_for_function(
                    "document.querySelector('#counters').textContent.includes('1 open')",
                    timeout=15_000,
                )
                shot = tmp_path / "dashboard.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                assert problems == []
            finally:
                browser.close()


# ---------------------------------------------------------------------- demo


def test_demo_runs_and_stops_by_itself() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.fastapi_app.demo", "--port", "0", "--duration", "4",
         "--seed", "7"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "smartchat demo running: http://127.0.0.1:" in result.stdout
    assert "demo stopped:" in result.stdout
    assert "webhook_posts" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
