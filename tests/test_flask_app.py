"""The Flask example (examples/flask_app) through the blocking SmartChat: every
endpoint through Flask's test client, bad input never a 500 nor a change; the
Server-Sent Events stream read incrementally; the monitors ticking in the
background on a ManualClock advanced from the test thread; end to end under
Werkzeug's threaded server on a loopback port; the app factory from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

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
    ConflictError,
    SmartChat,
)
from smartchat_core.testing import ManualClock, RecordingPublisher, RecordingSender
from smartchat_core.whatsapp import SIGNATURE_HEADER, WhatsAppCloudSender

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # examples/ is not installed: import it from the checkout
    sys.path.insert(0, str(ROOT))

from examples.common import error_status, parse_tokens  # noqa: E402
from examples.flask_app.app import (  # noqa: E402
    AppConfig,
    SmartChatHost,
    create_app,
    desk_from_env,
    get_host,
)

KEEPALIVE = 0.05
"""Seconds between keep-alive comments in tests: every read of a stream
returns within it, so a reading loop can keep to its deadline."""
WAIT = 10.0
"""The longest any test waits for something another thread does."""


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    """Poll ``condition`` (another thread makes it true) until ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


# ------------------------------------------------------------------- harness


def make_config(**options: Any) -> AppConfig:
    values: dict[str, Any] = {
        "api_tokens": TOKENS,
        "whatsapp_app_secret": SECRET,
        "whatsapp_verify_token": VERIFY,
        "run_monitors": False,
        "sse_keepalive": KEEPALIVE,
    }
    values.update(options)
    return AppConfig(**values)


@dataclass
class Harness:
    app: Flask
    client: Any
    """A ``FlaskClient`` (typed ``Any``: its answers' ``.json`` are indexed freely)."""
    desk: SmartChat
    clock: ManualClock
    sender: RecordingSender
    publisher: RecordingPublisher

    @property
    def host(self) -> SmartChatHost:
        return get_host(self.app)

    def webhook(self, payload: object) -> Any:
        body = json.dumps(payload).encode()
        return self.client.post("/webhook", data=body, headers=signed(body))

    def snapshot(self) -> Any:
        """Everything a bad request must leave alone."""
        page = self.desk.fetch_all_chats(limit=200)
        return (
            page.items,
            self.desk.list_executives(),
            self.desk.get_counters(),
            list(self.sender.sent),
        )


@contextmanager
def running(**options: Any) -> Iterator[Harness]:
    """The app over a started in-memory SmartChat on a ManualClock; the host is
    closed (streams ended, monitors stopped) before the desk stops."""
    clock, sender, publisher = ManualClock(), RecordingSender(), RecordingPublisher()
    with SmartChat.in_memory(
        settings=app_settings(), clock=clock, sender=sender, publisher=publisher
    ) as desk:
        app = create_app(desk, config=make_config(**options))
        try:
            yield Harness(app, app.test_client(), desk, clock, sender, publisher)
        finally:
            get_host(app).close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    with running() as h:
        yield h


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
    answer = h.client.get("/api/chats", query_string={"search": customer}, headers=auth(SUP))
    [chat] = answer.json["items"]
    return chat  # type: ignore[no-any-return]


def assert_error(answer: Any, status: int, error: str, detail: str = "") -> None:
    assert answer.status_code == status, answer.text
    assert answer.mimetype == "application/json", answer.text
    body = answer.json
    assert body["error"] == error, body
    assert detail in body["detail"], body
    assert set(body) <= {"error", "detail", "errors"}


# ------------------------------------------------------------------- webhook


def test_webhook_challenge(harness: Harness) -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "987654"}
    answer = harness.client.get("/webhook", query_string=params)
    assert answer.status_code == 200
    assert answer.text == "987654"
    assert answer.mimetype == "text/plain"
    wrong = harness.client.get("/webhook", query_string={**params, "hub.verify_token": "guess"})
    assert_error(wrong, 403, "PermissionDeniedError", "verify_token")
    mode = harness.client.get("/webhook", query_string={**params, "hub.mode": "other"})
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
    body = answer.json
    assert body["received"] == 1 and body["duplicates"] == 0 and body["rejected"] == []
    [entry] = body["chats"]
    assert entry["message_id"] == "wamid.X"
    assert harness.desk.get_chat(entry["chat_id"]).customer_id == "919800000001"


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
    answer = harness.client.post("/webhook", data=body, headers=headers)
    assert answer.status_code == status
    assert detail in answer.json["detail"]
    assert harness.snapshot() == before
    assert harness.publisher.events == []


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
    assert answer.json == {"received": 0, "chats": [], "duplicates": 0, "rejected": []}
    assert harness.snapshot() == before


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{", "malformed JSON"),
        (b"", "malformed JSON"),
        (b"[" * 100_000, "malformed JSON"),
        (b"\xff\xfe\x00", "malformed JSON"),
        (b"[]", "payload: must be an object"),
        (b'{"entry": {}}', "entry: must be a list"),
        (b'{"entry": [{"changes": [{"value": {"messages": [{"from": "1"}]}}]}]}',
         "entry[0].changes[0].value.messages[0].type"),
    ],
)  # fmt: skip
def test_malformed_signed_webhooks_are_422(harness: Harness, body: bytes, detail: str) -> None:
    before = harness.snapshot()
    answer = harness.client.post("/webhook", data=body, headers=signed(body))
    assert_error(answer, 422, "InvalidInputError", detail)
    assert harness.snapshot() == before


def test_redelivered_messages_are_dropped(desk_with_chats: Harness) -> None:
    h = desk_with_chats
    before = h.snapshot()
    answer = h.webhook(webhook_payload("hello from Anil", customer="919800000001",
                                       name="Anil", message_id="wamid.0"))  # fmt: skip
    assert answer.json == {"received": 0, "chats": [], "duplicates": 1, "rejected": []}
    assert h.snapshot() == before


def test_a_backend_failure_is_503_and_the_redelivery_is_processed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smartchat_core import BackendError

    def down(**kwargs: Any) -> Any:
        raise BackendError("connection to the chat store lost")

    monkeypatch.setattr(harness.desk, "receive_customer_message", down)
    assert_error(harness.webhook(webhook_payload()), 503, "BackendError", "connection")
    monkeypatch.undo()
    answer = harness.webhook(webhook_payload())  # Meta delivers it again
    assert answer.json["received"] == 1 and answer.json["duplicates"] == 0


def test_a_message_the_desk_refuses_is_reported_not_retried(harness: Harness) -> None:
    answer = harness.webhook(webhook_payload("x" * 5000))
    assert answer.status_code == 200
    body = answer.json
    assert body["received"] == 0
    [rejected] = body["rejected"]
    assert rejected["message_id"] == "wamid.1" and "text" in rejected["detail"]


def test_webhook_refuses_when_not_configured() -> None:
    with running(whatsapp_app_secret=None, whatsapp_verify_token=None) as h:
        body = json.dumps(webhook_payload()).encode()
        assert_error(h.client.post("/webhook", data=body, headers=signed(body)), 503,
                     "ServiceUnavailable", "WHATSAPP_APP_SECRET")  # fmt: skip
        params = {"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "1"}
        assert_error(h.client.get("/webhook", query_string=params), 503, "ServiceUnavailable",
                     "not configured")  # fmt: skip


def test_oversized_bodies_are_413(harness: Harness) -> None:
    body = b"{" + b" " * (1024 * 1024 + 1) + b"}"
    answer = harness.client.post("/webhook", data=body, headers=signed(body))
    assert answer.status_code == 413
    assert answer.json["detail"]
    big = harness.client.post("/api/executives", data=body, headers={
        **auth(SUP), "Content-Type": "application/json"})  # fmt: skip
    assert big.status_code == 413


def test_customer_type_mapping() -> None:
    with running(customer_type_for=lambda m: "vip" if m.customer_name == "Big" else "x") as h:
        chat_id = h.webhook(webhook_payload(name="Big")).json["chats"][0]["chat_id"]
        chat = h.client.get(f"/api/chats/{chat_id}", headers=auth(SUP)).json
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
    before = harness.snapshot()
    for method, path in (("GET", "/api/me"), ("GET", "/api/chats"), ("GET", "/api/executives"),
                         ("POST", "/api/chats/x/resolve"), ("GET", "/api/counters"),
                         ("POST", "/api/recount"), ("GET", "/events"),
                         ("POST", "/api/executives/e1/heartbeat")):  # fmt: skip
        answer = harness.client.open(path, method=method, headers=headers)
        assert_error(answer, 401, "Unauthorized", detail)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert harness.snapshot() == before


def test_me_health_and_unknown_routes(harness: Harness) -> None:
    c = harness.client
    now = harness.clock.now().isoformat()
    assert c.get("/api/me", headers=auth(E1)).json == {"role": "executive", "id": "e1", "now": now}
    assert c.get("/api/me", headers=auth(SUP)).json == {
        "role": "supervisor",
        "id": "lead",
        "now": now,
    }
    assert c.get("/healthz").json == {"status": "ok"}
    assert_error(c.get("/api/nothing", headers=auth(SUP)), 404, "NotFound")
    assert_error(c.delete("/api/me", headers=auth(SUP)), 405, "MethodNotAllowed")


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


def test_an_unexpected_error_is_a_json_500_and_logged(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(harness.desk, "list_executives", broken)
    answer = harness.client.get("/api/executives", headers=auth(SUP))
    assert_error(answer, 500, "InternalServerError", "logged")
    assert "a bug" not in answer.text
    assert any(record.exc_info for record in caplog.records)


# ----------------------------------------------------------------- executives


def test_register_list_get_executives(harness: Harness) -> None:
    c = harness.client
    answer = c.post(
        "/api/executives",
        json={"id": "e9", "name": "Nia", "customer_types": ["retail", "vip"], "max_open_chats": 2},
        headers=auth(SUP),
    )
    assert answer.status_code == 200
    assert answer.json == {
        "id": "e9", "name": "Nia", "customer_types": ["retail", "vip"], "status": "offline",
        "last_active_at": None, "max_open_chats": 2, "open_chats": 0, "awaiting_chats": 0,
    }  # fmt: skip
    assert c.get("/api/executives/e9", headers=auth(E1)).json["name"] == "Nia"
    listed = c.get("/api/executives", query_string={"customer_type": "vip"}, headers=auth(SUP))
    assert [e["id"] for e in listed.json["items"]] == ["e9"]
    offline = c.get("/api/executives", query_string={"status": "offline"}, headers=auth(SUP))
    assert [e["id"] for e in offline.json["items"]] == ["e9"]
    online = c.get("/api/executives", query_string={"status": "online"}, headers=auth(SUP))
    assert online.json == {"items": []}
    assert_error(c.get("/api/executives", query_string={"status": "asleep"}, headers=auth(SUP)),
                 422, "InvalidInputError", "status")  # fmt: skip
    assert_error(c.get("/api/executives/nobody", headers=auth(SUP)), 404,
                 "ExecutiveNotFoundError", "nobody")  # fmt: skip


@pytest.mark.parametrize(
    ("body", "error", "detail"),
    [
        ({"id": "e9", "name": "N", "customer_types": "retail"}, "InvalidRequest",
         "body.customer_types: must be a list of strings, got string"),
        ({"id": "e9", "name": "N", "customer_types": ["retail", 5]}, "InvalidRequest",
         "body.customer_types"),
        ({"id": "e9", "name": "N", "customer_types": ["retail"], "max_open_chats": "3"},
         "InvalidRequest", "body.max_open_chats: must be an integer or null, got string"),
        ({"id": "e9", "name": "N", "customer_types": ["retail"], "max_open_chats": 2.5},
         "InvalidRequest", "body.max_open_chats"),
        ({"id": "e9", "name": "N", "customer_types": ["retail"], "max_open_chats": True},
         "InvalidRequest", "body.max_open_chats: must be an integer or null, got boolean"),
        ({"id": 9, "name": "N", "customer_types": ["retail"]}, "InvalidRequest", "body.id"),
        ({"id": {"$ne": None}, "name": "N", "customer_types": ["retail"]}, "InvalidRequest",
         "body.id: must be a string, got object"),
        ({"id": None, "name": "N", "customer_types": ["retail"]}, "InvalidRequest", "body.id"),
        ({"id": "e9", "name": "N", "customer_types": ["retail"], "admin": True},
         "InvalidRequest", "body.admin: unknown field"),
        ({"name": "N", "customer_types": ["retail"]}, "InvalidRequest", "body.id: field required"),
        ({"id": "e9", "name": "N", "customer_types": []}, "InvalidInputError", "customer_types"),
        ({"id": " e9", "name": "N", "customer_types": ["retail"]}, "InvalidInputError",
         "white space"),
        ({"id": "e9", "name": "N", "customer_types": ["retail"], "max_open_chats": -1},
         "InvalidInputError", "max_open_chats"),
        ([], "InvalidRequest", "body: must be a JSON object, got list"),
        ("e9", "InvalidRequest", "body: must be a JSON object, got string"),
    ],
)  # fmt: skip
def test_register_bad_input(harness: Harness, body: Any, error: str, detail: str) -> None:
    before = harness.snapshot()
    answer = harness.client.post("/api/executives", json=body, headers=auth(SUP))
    assert_error(answer, 422, error, detail)
    assert harness.snapshot() == before


def test_an_invalid_request_lists_every_problem(harness: Harness) -> None:
    answer = harness.client.post("/api/executives", json={"id": 1, "extra": 2}, headers=auth(SUP))
    assert_error(answer, 422, "InvalidRequest")
    locations = sorted(problem["loc"] for problem in answer.json["errors"])
    assert locations == ["body.customer_types", "body.extra", "body.id", "body.name"]


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"{", "malformed JSON"),
        (b'{"id": "e9",', "malformed JSON"),
        (b"[" * 100_000, "malformed JSON (nested too deeply)"),
        (b"\xff\xfe", "malformed JSON"),
        (b"\xc3\x28", "malformed JSON"),
        (b"", "malformed JSON"),
        (b'{"id": NaN}', "body.id"),
    ],
)
@pytest.mark.parametrize(
    "path",
    [
        "/api/executives",
        "/api/executives/e1/status",
        "/api/executives/e1/capacity",
        "/api/chats/c1/messages",
        "/api/chats/c1/tags",
        "/api/chats/c1/rating",
    ],
)
def test_malformed_json_is_a_clear_4xx(
    harness: Harness, path: str, content: bytes, detail: str
) -> None:
    method = "PUT" if path.endswith(("status", "capacity")) else "POST"
    before = harness.snapshot()
    answer = harness.client.open(
        path, method=method, data=content,
        headers={**auth(SUP), "Content-Type": "application/json"},
    )  # fmt: skip
    assert_error(answer, 422, "InvalidRequest", detail)
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
    assert beat.json["last_active_at"] == h.clock.now().isoformat()
    away = c.put("/api/executives/e1/status", json={"status": "away"}, headers=auth(E1))
    assert away.json["status"] == "away"
    before = h.snapshot()
    assert_error(c.put("/api/executives/e2/status", json={"status": "offline"}, headers=auth(E1)),
                 403, "PermissionDeniedError", "only for itself")  # fmt: skip
    assert_error(c.post("/api/executives/e2/heartbeat", headers=auth(E1)), 403,
                 "PermissionDeniedError")  # fmt: skip
    assert_error(c.put("/api/executives/e1/status", json={"status": "gone"}, headers=auth(E1)),
                 422, "InvalidInputError", "status")  # fmt: skip
    assert_error(c.put("/api/executives/e1/status", json={"status": 1}, headers=auth(E1)),
                 422, "InvalidRequest", "body.status")  # fmt: skip
    assert_error(c.put("/api/executives/e1/status", json={}, headers=auth(E1)),
                 422, "InvalidRequest", "body.status: field required")  # fmt: skip
    assert_error(c.put("/api/executives/zz/status", json={"status": "online"}, headers=auth(SUP)),
                 404, "ExecutiveNotFoundError")  # fmt: skip
    assert_error(c.post("/api/executives/zz/heartbeat", headers=auth(SUP)), 404,
                 "ExecutiveNotFoundError")  # fmt: skip
    assert_error(c.put("/api/executives/e1/capacity", json={"max_open_chats": 5},
                       headers=auth(E1)), 403, "PermissionDeniedError")  # fmt: skip
    assert_error(c.put("/api/executives/e1/capacity", json={"max_open_chats": "5"},
                       headers=auth(SUP)), 422, "InvalidRequest")  # fmt: skip
    assert_error(c.put("/api/executives/e1/capacity", json={}, headers=auth(SUP)), 422,
                 "InvalidRequest", "body.max_open_chats: field required")  # fmt: skip
    assert h.snapshot() == before
    capacity = c.put("/api/executives/e1/capacity", json={"max_open_chats": 5}, headers=auth(SUP))
    assert capacity.json["max_open_chats"] == 5
    unlimited = c.put(
        "/api/executives/e1/capacity", json={"max_open_chats": None}, headers=auth(SUP)
    )
    assert unlimited.json["max_open_chats"] is None


# ---------------------------------------------------------------------- chats


def ids(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [chat["customer_id"] for chat in answer.json["items"]]


def test_list_chats_with_every_filter(desk_with_chats: Harness) -> None:
    h, c = desk_with_chats, desk_with_chats.client
    a, b = chat_of(h, "919800000001"), chat_of(h, "919800000002")
    c.post(f"/api/chats/{a['id']}/messages", json={"text": "hello Anil"}, headers=auth(E1))
    c.post(f"/api/chats/{b['id']}/tags", json={"tag": "vip"}, headers=auth(E2))
    h.clock.advance(timedelta(seconds=5))
    h.webhook(webhook_payload("(.*) [x]", customer="919800000003", name="Cy", message_id="w3"))
    c.post(f"/api/chats/{chat_of(h, '919800000003')['id']}/resolve", headers=auth(SUP))

    def listed(token: str = SUP, **params: Any) -> list[str]:
        return ids(c.get("/api/chats", query_string=params, headers=auth(token)))

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
    assert listed(**{"assigned_executive_id[$ne]": "x"}) == listed()  # no operator injection
    page = c.get("/api/chats", query_string={"limit": 2, "offset": 1}, headers=auth(SUP)).json
    assert [i["customer_id"] for i in page["items"]] == ["919800000001", "919800000002"]
    assert (page["total"], page["limit"], page["offset"], page["has_more"]) == (3, 2, 1, False)
    first = c.get("/api/chats", query_string={"limit": 1}, headers=auth(SUP)).json
    assert first["total"] == 3 and first["has_more"] is True
    # "My chats": an executive sees its own, whatever it asks for
    assert listed(E1) == ["919800000003", "919800000001"]  # it held the resolved one
    assert listed(E1, assigned_executive_id="e1", status="open") == ["919800000001"]
    assert listed(E2) == ["919800000002"]
    assert_error(c.get("/api/chats", query_string={"assigned_executive_id": "e2"},
                       headers=auth(E1)), 403, "PermissionDeniedError", "own chats")  # fmt: skip


@pytest.mark.parametrize(
    ("params", "error", "detail"),
    [
        ({"limit": "ten"}, "InvalidRequest", "query.limit: must be an integer"),
        ({"offset": "1.5"}, "InvalidRequest", "query.offset"),
        ({"limit": "9" * 40}, "InvalidRequest", "query.limit"),
        ({"limit": ""}, "InvalidRequest", "query.limit"),
        ({"limit": 0}, "InvalidInputError", "limit"),
        ({"limit": 100_000}, "InvalidInputError", "limit"),
        ({"offset": -1}, "InvalidInputError", "offset"),
        ({"status": "closed"}, "InvalidInputError", "status"),
        ({"sender": "Bot"}, "InvalidInputError", "sender"),
        ({"search": "x" * 500}, "InvalidInputError", "search"),
        ({"tag": ""}, "InvalidInputError", "tag"),
        ({"assigned_executive_id": ""}, "InvalidInputError", "assigned_executive_id"),
    ],
)
def test_list_chats_bad_queries(
    desk_with_chats: Harness, params: Any, error: str, detail: str
) -> None:
    answer = desk_with_chats.client.get("/api/chats", query_string=params, headers=auth(SUP))
    assert_error(answer, 422, error, detail)


def test_get_one_chat(desk_with_chats: Harness) -> None:
    h, c = desk_with_chats, desk_with_chats.client
    a, b = chat_of(h, "919800000001"), chat_of(h, "919800000002")
    assert c.get(f"/api/chats/{a['id']}", headers=auth(E1)).json == a
    assert c.get(f"/api/chats/{a['id']}", headers=auth(SUP)).json == a
    assert_error(c.get(f"/api/chats/{b['id']}", headers=auth(E1)), 403,
                 "PermissionDeniedError", "only chats assigned to it")  # fmt: skip
    assert_error(c.get("/api/chats/nope", headers=auth(SUP)), 404, "ChatNotFoundError", "nope")


def test_executive_reply(desk_with_chats: Harness) -> None:
    h, c = desk_with_chats, desk_with_chats.client
    a = chat_of(h, "919800000001")
    answer = c.post(f"/api/chats/{a['id']}/messages", json={"text": "Hello Anil"}, headers=auth(E1))
    assert answer.status_code == 200
    assert answer.json["last_interaction_by"] == "Executive"
    assert answer.json["last_message"] == "Hello Anil"
    assert h.sender.to("919800000001") == ["Hello Anil"]
    # a supervisor replies as the assignee, or as a named executive
    answer = c.post(f"/api/chats/{a['id']}/messages", json={"text": "(lead)"}, headers=auth(SUP))
    assert answer.status_code == 200
    as_e1 = {"text": "(as e1)", "executive_id": "e1"}
    answer = c.post(f"/api/chats/{a['id']}/messages", json=as_e1, headers=auth(SUP))
    assert answer.status_code == 200
    assert h.sender.to("919800000001") == ["Hello Anil", "(lead)", "(as e1)"]


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
        (E1, {"text": "hi", "executive_id": 1}, 422, "InvalidRequest", "body.executive_id"),
        (E1, {}, 422, "InvalidRequest", "body.text"),
        (E1, {"message": "hi"}, 422, "InvalidRequest", "body.message: unknown field"),
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
    chat_id = harness.webhook(webhook_payload()).json["chats"][0]["chat_id"]  # nobody online
    before = harness.snapshot()
    assert_error(c.post(f"/api/chats/{chat_id}/messages", json={"text": "hi"}, headers=auth(SUP)),
                 409, "ConflictError", "not assigned")  # fmt: skip
    assert harness.snapshot() == before


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
    assert c.post(url, json={"tag": "vip"}, headers=auth(E1)).json["tags"] == ["vip"]
    assert c.post(url, json={"tag": "vip"}, headers=auth(E1)).json["tags"] == ["vip"]
    assert c.post(url, json={"tag": "a/b"}, headers=auth(SUP)).json["tags"] == ["vip", "a/b"]
    assert c.delete(f"{url}/a/b", headers=auth(E1)).json["tags"] == ["vip"]
    assert c.delete(f"{url}/vip", headers=auth(E1)).json["tags"] == []
    assert c.delete(f"{url}/vip", headers=auth(E1)).json["tags"] == []  # idempotent
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
                 "InvalidRequest", "body.tag")  # fmt: skip
    assert_error(c.post("/api/chats/nope/tags", json={"tag": "x"}, headers=auth(SUP)), 404,
                 "ChatNotFoundError")  # fmt: skip
    assert_error(c.delete("/api/chats/nope/tags/x", headers=auth(SUP)), 404, "ChatNotFoundError")
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
    assert_error(c.post("/api/chats/nope/rating", json={"score": 5, "token": "x"}), 404,
                 "ChatNotFoundError")  # fmt: skip
    assert h.snapshot() == before

    resolved = c.post(f"/api/chats/{a['id']}/resolve", headers=auth(E1))
    assert resolved.status_code == 200 and resolved.json["is_resolved"] is True
    again = c.post(f"/api/chats/{a['id']}/resolve", headers=auth(E1))
    assert again.json == resolved.json  # idempotent
    assert c.get("/api/executives/e1", headers=auth(SUP)).json["open_chats"] == 0

    assert_error(c.get(f"/api/chats/{a['id']}/rating-token", headers=auth(E1)), 403,
                 "PermissionDeniedError")  # fmt: skip
    token = c.get(f"/api/chats/{a['id']}/rating-token", headers=auth(SUP)).json["token"]
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
        ({"score": 5, "token": {"$ne": None}}, 422, "InvalidRequest"),
    ):
        assert_error(c.post(rate_url, json=body), status, error)
    # a supervisor's bearer token does not replace the signed rating token
    assert_error(c.post(rate_url, json={"score": 5, "token": "x"}, headers=auth(SUP)), 403,
                 "PermissionDeniedError")  # fmt: skip
    assert c.get(f"/api/chats/{a['id']}/ratings", headers=auth(SUP)).json == {"items": []}
    assert h.snapshot() == before

    rating = c.post(rate_url, json={"score": 5, "comment": "quick", "token": token})
    assert rating.status_code == 200
    assert rating.json["score"] == 5 and rating.json["executive_id"] == "e1"
    assert_error(c.post(rate_url, json={"score": 4, "token": token}), 409, "AlreadyRatedError")
    ratings = c.get(f"/api/chats/{a['id']}/ratings", headers=auth(SUP)).json["items"]
    assert [(r["score"], r["comment"]) for r in ratings] == [(5, "quick")]
    assert_error(c.get(f"/api/chats/{b['id']}/ratings", headers=auth(E1)), 403,
                 "PermissionDeniedError")  # fmt: skip
    log = c.get("/api/resolutions", headers=auth(E1)).json["items"]
    assert [(e["chat_id"], e["executive_id"]) for e in log] == [(a["id"], "e1")]
    by_chat = c.get("/api/resolutions", query_string={"chat_id": a["id"]}, headers=auth(SUP))
    assert [e["chat_id"] for e in by_chat.json["items"]] == [a["id"]]
    for limit in (0, 1001):
        assert_error(c.get("/api/resolutions", query_string={"limit": limit}, headers=auth(SUP)),
                     422, "InvalidInputError", "limit")  # fmt: skip
    assert_error(c.get("/api/resolutions", query_string={"limit": "x"}, headers=auth(SUP)), 422,
                 "InvalidRequest", "query.limit")  # fmt: skip
    assert_error(c.get("/api/resolutions", query_string={"executive_id": "e2"}, headers=auth(E1)),
                 403, "PermissionDeniedError")  # fmt: skip


def test_counters_and_recount(desk_with_chats: Harness) -> None:
    c = desk_with_chats.client
    counters = c.get("/api/counters", headers=auth(E1)).json
    assert counters["open"] == 2 and counters["by_type"]["retail"]["open"] == 2
    assert_error(c.post("/api/recount", headers=auth(E1)), 403, "PermissionDeniedError")
    assert c.post("/api/recount", headers=auth(SUP)).json == counters


# ------------------------------------------------------------ server-sent events


class SseReader:
    """Reads an event stream incrementally from an iterator of byte chunks.

    Every chunk arrives within the keep-alive interval, so each read keeps
    to its deadline: a missing event fails the test, it never hangs it."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buffer = b""
        self.seen: list[str] = []
        self.keepalives = 0
        self.retry: int | None = None
        self.ended = False

    def message(self, timeout: float = WAIT) -> dict[str, Any] | None:
        """The next message's data, or ``None`` for a keep-alive comment."""
        deadline = time.monotonic() + timeout
        while b"\n\n" not in self.buffer:
            if time.monotonic() > deadline:
                raise AssertionError(f"no server-sent message within {timeout} s ({self.seen})")
            try:
                self.buffer += next(self.chunks)
            except StopIteration:
                self.ended = True
                raise AssertionError(f"the stream ended (after {self.seen})") from None
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        data = None
        for line in block.decode().split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                assert value == "keep-alive", line
                self.keepalives += 1
            elif field == "retry":
                self.retry = int(value)
            else:
                assert field == "data" and data is None, block
                data = json.loads(value)
        if data is not None:
            self.seen.append(data["event"])
        return data

    def next(self, timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            data = self.message(max(0.0, deadline - time.monotonic()))
            if data is not None:
                return data

    def until(self, name: str, timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            data = self.next(max(0.0, deadline - time.monotonic()))
            if data["event"] == name:
                return data

    def end(self, timeout: float = WAIT) -> None:
        """Read until the server ends the stream."""
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"the stream did not end within {timeout} s")
            try:
                self.buffer += next(self.chunks)
            except StopIteration:
                self.ended = True
                return


@contextmanager
def sse(client: FlaskClient, url: str, **kwargs: Any) -> Iterator[SseReader]:
    answer = client.get(url, buffered=False, **kwargs)
    try:
        assert answer.status_code == 200, answer.get_data()
        assert answer.mimetype == "text/event-stream"
        assert answer.headers["Cache-Control"] == "no-cache"
        yield SseReader(answer.iter_encoded())
    finally:
        answer.close()


def test_event_stream_delivers_chat_assigned_after_a_signed_webhook(
    desk_with_chats: Harness,
) -> None:
    h = desk_with_chats
    with sse(h.client, "/events?rooms=dashboard", headers=auth(SUP)) as events:
        assert events.next() == {"event": "subscribed", "rooms": ["dashboard"]}
        assert events.retry == 3000
        assert h.host.open_streams == 1
        answer = h.webhook(webhook_payload("new here", customer="919800000005", name="Eve",
                                           message_id="w5"))  # fmt: skip
        assert answer.status_code == 200
        chat_id = answer.json["chats"][0]["chat_id"]
        message = events.next()
        assert message["event"] == "chat_message" and message["payload"]["text"] == "new here"
        assigned = events.next()
        assert assigned["event"] == "chat_assigned"
        assert assigned["payload"]["chat_id"] == chat_id
        assert assigned["payload"]["executive_id"] == "e1"
        assert "dashboard" in assigned["rooms"] and assigned["occurred_at"]
        assert assigned == h.publisher.named("chat_assigned")[-1].to_json()
        h.client.put("/api/executives/e2/status", json={"status": "away"}, headers=auth(E2))
        status = events.next()
        assert status["event"] == "executive_status"
        assert status["payload"]["executive"]["customer_types"] == ["retail"]
        while events.keepalives == 0:  # idle: keep-alive comments keep the line busy
            assert events.message() is None
    # the response is closed: the subscription with it
    assert h.host.open_streams == 0


def test_event_stream_rooms_and_refusals(desk_with_chats: Harness) -> None:
    h = desk_with_chats
    a = chat_of(h, "919800000001")
    with sse(h.client, "/events", headers=auth(E1)) as events:  # default: its own room
        assert events.next() == {"event": "subscribed", "rooms": ["executive:e1"]}
        h.client.post(f"/api/chats/{a['id']}/tags", json={"tag": "vip"}, headers=auth(E1))
        assert events.next()["event"] == "tag_updated"
    url = f"/events?rooms=chat:{a['id']},dashboard&rooms=dashboard&token={SUP}"
    with sse(h.client, url) as events:  # the token in the query, for EventSource
        assert events.next()["rooms"] == [f"chat:{a['id']}", "dashboard"]
    with sse(h.client, "/events?token=" + SUP) as events:
        assert events.next()["rooms"] == ["dashboard"]
    before = h.snapshot()
    for url, headers, status, error in (
        ("/events?token=nope", {}, 401, "Unauthorized"),
        ("/events", {}, 401, "Unauthorized"),
        ("/events?rooms=dashboard", auth(E1), 403, "PermissionDeniedError"),
        ("/events?rooms=executive:e2", auth(E1), 403, "PermissionDeniedError"),
        ("/events?rooms=executive:e1,dashboard", auth(E1), 403, "PermissionDeniedError"),
        (f"/events?rooms={'x' * 300}", auth(SUP), 422, "InvalidInputError"),
    ):
        assert_error(h.client.get(url, headers=headers), status, error)
    assert h.host.open_streams == 0
    assert h.snapshot() == before


def test_closing_the_host_ends_open_streams(harness: Harness) -> None:
    h = harness
    answer = h.client.get("/events", headers=auth(SUP), buffered=False)
    try:
        events = SseReader(answer.iter_encoded())
        assert events.next()["event"] == "subscribed"
        assert h.host.open_streams == 1
        h.host.close()  # shutdown: the open stream ends within the keep-alive interval
        assert h.host.open_streams == 0
        events.end()
        assert_error(h.client.get("/events", headers=auth(SUP)), 503, "ServiceUnavailable",
                     "shutting down")  # fmt: skip
        assert h.client.get("/healthz").json == {"status": "closing"}
    finally:
        answer.close()


def test_a_stream_never_read_is_released_on_close(harness: Harness) -> None:
    answer = harness.client.get("/events", headers=auth(SUP), buffered=False)
    assert harness.host.open_streams == 1
    answer.close()
    assert harness.host.open_streams == 0


# ------------------------------------------------------------------ monitors


def test_monitors_run_in_the_background_and_stop_with_the_host() -> None:
    with running(run_monitors=True) as h:
        c = h.client
        c.post("/api/executives", json={"id": "e1", "name": "Asha", "customer_types": ["retail"]},
               headers=auth(SUP))  # fmt: skip
        c.put("/api/executives/e1/status", json={"status": "online"}, headers=auth(SUP))
        chat_id = h.webhook(webhook_payload()).json["chats"][0]["chat_id"]
        # the three monitors sleep on the ManualClock in the desk's event loop
        wait_for(lambda: h.clock.sleepers >= 3, "the monitors to sleep on the clock")
        assert h.publisher.named("sla_alert") == []
        h.clock.advance(timedelta(minutes=4))  # past the 3-minute tier and the 60 s interval
        wait_for(lambda: h.publisher.named("sla_alert"), "the sla_alert event")
        [alert] = h.publisher.named("sla_alert")
        assert alert.payload["chat_id"] == chat_id and alert.payload["alert_type"] == "alert"
        wait_for(lambda: h.sender.to("+910000000001"), "the WhatsApp SLA alert")
        assert chat_id in h.sender.to("+910000000001")[0]
        wait_for(lambda: h.desk.desk.monitor_ticks.get("sla") == 1, "the tick to be counted")

        h.host.close()  # at exit: the monitors stop
        wait_for(lambda: h.clock.sleepers == 0, "the monitors to stop")
        ticks = h.desk.desk.monitor_ticks
        h.clock.advance(timedelta(minutes=10))
        assert h.desk.desk.monitor_ticks == ticks
        assert len(h.publisher.named("sla_alert")) == 1


def test_the_app_starts_and_stops_a_desk_it_is_given_unstarted() -> None:
    clock, sender = ManualClock(), RecordingSender()
    desk = SmartChat.in_memory(settings=app_settings(), clock=clock, sender=sender)
    app = create_app(desk, config=make_config(run_monitors=True))
    host = get_host(app)
    try:
        assert host.owns_desk
        answer = app.test_client().post(
            "/api/executives", json={"id": "e1", "name": "A", "customer_types": ["retail"]},
            headers=auth(SUP),
        )  # fmt: skip
        assert answer.status_code == 200
        wait_for(lambda: clock.sleepers >= 3, "the monitors to start")
    finally:
        host.close()
    with pytest.raises(RuntimeError, match="inside 'with"):
        desk.portal  # noqa: B018 - the desk is stopped
    host.close()  # idempotent


def test_the_app_runs_on_trio() -> None:
    """The blocking desk may run its event loop on trio: same app, same answers."""
    clock, sender, publisher = ManualClock(), RecordingSender(), RecordingPublisher()
    desk = SmartChat.in_memory(
        settings=app_settings(), clock=clock, sender=sender, publisher=publisher, backend="trio"
    )
    with desk:
        app = create_app(desk, config=make_config(run_monitors=True))
        try:
            c = app.test_client()
            c.post("/api/executives", json={"id": "e1", "name": "A", "customer_types": ["retail"]},
                   headers=auth(SUP))  # fmt: skip
            c.put("/api/executives/e1/status", json={"status": "online"}, headers=auth(E1))
            with sse(c, "/events", headers=auth(SUP)) as events:
                assert events.next()["event"] == "subscribed"
                body = json.dumps(webhook_payload()).encode()
                assert c.post("/webhook", data=body, headers=signed(body)).status_code == 200
                assert events.until("chat_assigned")["payload"]["executive_id"] == "e1"
                wait_for(lambda: clock.sleepers >= 3, "the monitors to sleep")
                clock.advance(timedelta(minutes=4))
                assert events.until("sla_alert")["payload"]["alert_type"] == "alert"
        finally:
            get_host(app).close()


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
            "SMARTCHAT_SSE_KEEPALIVE": "2.5",
        }
    )
    assert config.actor_for("t1") == Actor.executive("e1")
    assert config.actor_for("t2") is None and config.actor_for(None) is None
    assert (config.whatsapp_app_secret, config.whatsapp_verify_token) == ("s", "v")
    assert config.customer_type == "wholesale" and config.run_monitors is False
    assert config.sse_keepalive == 2.5 and not config.generated_token
    generated = AppConfig.from_env({})
    assert generated.generated_token and generated.run_monitors
    assert generated.sse_keepalive == 15.0
    [(token, actor)] = generated.api_tokens.items()
    assert len(token) >= 24 and actor.is_privileged
    assert generated.whatsapp_app_secret is None
    for keepalive in ("soon", "0", "-1", "1000"):
        with pytest.raises(ValueError, match=r"(?i)keepalive"):
            AppConfig.from_env({"SMARTCHAT_SSE_KEEPALIVE": keepalive})


def test_desk_from_env_in_memory_with_logging_or_cloud_sender() -> None:
    desk = desk_from_env({})
    assert isinstance(desk, SmartChat)
    assert not isinstance(desk.desk.ports.sender, WhatsAppCloudSender)
    assert desk.desk.settings.rating_secret
    desk = desk_from_env(
        {
            "WHATSAPP_TOKEN": "t",
            "WHATSAPP_PHONE_NUMBER_ID": "1",
            "SMARTCHAT_RATING_SECRET": "r",
            "SLA_ALERT_GROUP_NUMBER": "+91",
        }
    )
    assert isinstance(desk.desk.ports.sender, WhatsAppCloudSender)
    assert desk.desk.settings.rating_secret == "r"
    assert desk.desk.settings.sla_tiers[0].recipient == "+91"


def test_desk_from_env_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    from smartchat_core import AsyncSmartChat

    env = {"SMARTCHAT_REDIS_URL": "redis://127.0.0.1:1/0", "SMARTCHAT_RATING_SECRET": "r"}
    calls: list[dict[str, Any]] = []

    def from_urls(**kwargs: Any) -> AsyncSmartChat:
        calls.append(kwargs)
        return AsyncSmartChat.in_memory(settings=kwargs["settings"])

    monkeypatch.setattr(AsyncSmartChat, "from_urls", from_urls, raising=False)
    assert isinstance(desk_from_env({**env, "SMARTCHAT_MONGODB_URL": "mongodb://127.0.0.1:1"}),
                      SmartChat)  # fmt: skip
    [call] = calls
    assert call["mongodb_url"] == "mongodb://127.0.0.1:1"
    assert call["redis_url"] == "redis://127.0.0.1:1/0"
    assert call["settings"].rating_secret == "r"


def _run(code_or_args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTCHAT_", "WHATSAPP_"))}
    environ.update(env)
    return subprocess.run(
        [sys.executable, *code_or_args], cwd=ROOT, env=environ, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


def test_the_flask_cli_finds_the_factory_and_the_process_exits_cleanly() -> None:
    """``flask --app examples.flask_app.app`` calls ``create_app()``: the desk
    and its monitors start, and at exit they stop (the process ends)."""
    result = _run(["-m", "flask", "--app", "examples.flask_app.app", "routes"],
                  {"SMARTCHAT_API_TOKENS": "t=supervisor:lead"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    for path in ("/webhook", "/events", "/api/chats", "/api/executives", "/healthz"):
        assert path in result.stdout
    assert "Traceback" not in result.stderr, result.stderr


def test_the_wsgi_module_has_a_module_level_app() -> None:
    code = (
        "from examples.flask_app.wsgi import app\n"
        "from examples.flask_app.app import get_host\n"
        "host = get_host(app)\n"
        "assert host.owns_desk and host.monitors_started\n"
        "client = app.test_client()\n"
        "print(client.get('/api/me', headers={'Authorization': 'Bearer t'}).json['role'])\n"
        "print(client.get('/webhook').status_code)\n"
    )
    result = _run(["-c", code], {"SMARTCHAT_API_TOKENS": "t=supervisor:lead"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["supervisor", "503"]
    assert "Traceback" not in result.stderr, result.stderr


# --------------------------------------------------- end to end, Werkzeug server


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """The app under Werkzeug's threaded server on a free loopback port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)  # fmt: skip
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=WAIT)
    assert not thread.is_alive(), "the server did not stop"


def test_end_to_end_under_a_real_server() -> None:
    with (
        running(run_monitors=True) as h,
        serve(h.app) as host,
        httpx.Client(base_url=f"http://{host}", timeout=WAIT) as http,
    ):
        executive = {"id": "e1", "name": "Asha", "customer_types": ["retail"]}
        assert http.post("/api/executives", headers=auth(SUP), json=executive).status_code == 200
        with http.stream("GET", "/events?rooms=dashboard", headers=auth(SUP)) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = SseReader(stream.iter_raw())
            assert events.next() == {"event": "subscribed", "rooms": ["dashboard"]}
            online = http.put("/api/executives/e1/status", json={"status": "online"},
                              headers=auth(E1))  # fmt: skip
            assert online.status_code == 200
            assert events.until("executive_status")["payload"]["status"] == "online"

            body = json.dumps(webhook_payload("where is my parcel?")).encode()
            hook = http.post("/webhook", content=body, headers=signed(body))
            assert hook.status_code == 200, hook.text
            chat_id = hook.json()["chats"][0]["chat_id"]
            assigned = events.until("chat_assigned")
            assert assigned["payload"] == h.publisher.named("chat_assigned")[-1].payload
            assert assigned["payload"]["chat_id"] == chat_id
            assert events.seen[-2:] == ["chat_message", "chat_assigned"]

            wait_for(lambda: h.clock.sleepers >= 3, "the monitors to sleep")
            h.clock.advance(timedelta(minutes=4))  # the monitors wake up in the background
            alert = events.until("sla_alert")
            assert alert["payload"]["chat_id"] == chat_id
            assert h.sender.to("+910000000001")

            reply = http.post(f"/api/chats/{chat_id}/messages", json={"text": "On its way!"},
                              headers=auth(E1))  # fmt: skip
            assert reply.status_code == 200
            assert events.until("chat_message")["payload"]["direction"] == "outgoing"
            resolve = http.post(f"/api/chats/{chat_id}/resolve", headers=auth(E1))
            assert resolve.status_code == 200
            assert events.until("chat_resolved")["payload"]["executive_id"] == "e1"
            token = http.get(f"/api/chats/{chat_id}/rating-token", headers=auth(SUP)).json()
            rate = http.post(f"/api/chats/{chat_id}/rating",
                             json={"score": 4, "token": token["token"]})  # fmt: skip
            assert rate.status_code == 200
            assert events.until("chat_rated")["payload"]["rating"]["score"] == 4

            # bad input over a real socket is still a clear 4xx
            bad = http.post("/api/executives", content=b"{", headers={
                **auth(SUP), "Content-Type": "application/json"})  # fmt: skip
            assert bad.status_code == 422 and bad.json()["error"] == "InvalidRequest"
            assert http.post("/webhook", content=body).status_code == 401
            assert h.host.open_streams == 1
        # the client hung up: the next keep-alive write fails and the stream is released
        wait_for(lambda: h.host.open_streams == 0, "the server to notice the disconnect")

        # shutting down with a client connected ends its stream
        with http.stream("GET", "/events", headers=auth(SUP)) as stream:
            events = SseReader(stream.iter_raw())
            assert events.next()["event"] == "subscribed"
            h.host.close()
            events.end()
        assert h.host.open_streams == 0
