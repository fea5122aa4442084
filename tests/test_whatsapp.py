"""smartchat_core.whatsapp: webhook signature, challenge, parsing, and the
Cloud API sender against httpx.MockTransport and a fake Cloud API served by
uvicorn on a loopback port."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smartchat_core import (
    AsyncSmartChat,
    DeliveryError,
    InvalidInputError,
    PermissionDeniedError,
)
from smartchat_core.testing import ManualClock
from smartchat_core.whatsapp import (
    InboundMessage,
    WhatsAppCloudSender,
    WhatsAppDeliveryError,
    parse_webhook,
    sign_body,
    verification_challenge,
    verify_signature,
)

pytestmark = pytest.mark.anyio

SECRET = "app-secret"
TOKEN = "EAAG-test-token"
PHONE_ID = "106540352242922"


# ------------------------------------------------------------------ signature


def test_signature_accepts_the_right_hmac() -> None:
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    header = sign_body(SECRET, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(SECRET, body, header)
    assert verify_signature(SECRET, body, header.upper().replace("SHA256=", "sha256="))
    assert verify_signature(SECRET, bytearray(body), f"  {header} ")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=" + "0" * 40,
        "sha256=" + "0" * 64,  # well-formed, wrong
        "sha256=" + "g" * 64,  # not hex
        "sha256=" + "a" * 63,  # too short
        "sha256=" + "a" * 65,  # too long
        "sha256:" + "a" * 64,
        "sha256=" + "é" * 64,  # non-ASCII never reaches compare_digest
    ],
)
def test_signature_refuses_missing_malformed_or_wrong_headers(header: str | None) -> None:
    assert not verify_signature(SECRET, b"{}", header)


def test_signature_refuses_a_tampered_body_or_another_secret() -> None:
    body = b'{"entry":[]}'
    header = sign_body(SECRET, body)
    assert not verify_signature(SECRET, body + b" ", header)
    assert not verify_signature("another-secret", body, header)


def test_signature_needs_a_secret_and_bytes() -> None:
    with pytest.raises(InvalidInputError, match="app_secret"):
        verify_signature("", b"{}", "sha256=" + "0" * 64)
    with pytest.raises(InvalidInputError, match="body"):
        verify_signature(SECRET, "{}", "sha256=" + "0" * 64)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="app_secret"):
        sign_body("", b"{}")


# ------------------------------------------------------------------ challenge


def test_challenge_returns_hub_challenge() -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": "vt", "hub.challenge": "1158201444"}
    assert verification_challenge(params, "vt") == "1158201444"


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"hub.verify_token": "vt", "hub.challenge": "1"}, InvalidInputError),
        ({"hub.mode": "unsubscribe", "hub.verify_token": "vt", "hub.challenge": "1"},
         InvalidInputError),
        ({"hub.mode": "subscribe", "hub.challenge": "1"}, PermissionDeniedError),
        ({"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
         PermissionDeniedError),
        ({"hub.mode": "subscribe", "hub.verify_token": "vté", "hub.challenge": "1"},
         PermissionDeniedError),
        ({"hub.mode": "subscribe", "hub.verify_token": "vt"}, InvalidInputError),
        ({"hub.mode": "subscribe", "hub.verify_token": "vt", "hub.challenge": ""},
         InvalidInputError),
        ({"hub.mode": "subscribe", "hub.verify_token": "vt", "hub.challenge": "x" * 257},
         InvalidInputError),
    ],
)  # fmt: skip
def test_challenge_refuses_bad_requests(params: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error):
        verification_challenge(params, "vt")


def test_challenge_needs_a_configured_token() -> None:
    with pytest.raises(InvalidInputError, match="verify_token"):
        verification_challenge({"hub.mode": "subscribe", "hub.verify_token": ""}, "")


# ------------------------------------------------------------------- parsing


def cloud_payload(*messages: dict[str, Any], contacts: list[dict[str, Any]] | None = None) -> Any:
    """A webhook body as the Cloud API sends it (from Meta's docs)."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": PHONE_ID,
                            },
                            "contacts": contacts
                            if contacts is not None
                            else [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
                            "messages": list(messages),
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }


def text_message(body: str, sender: str = "16505551234", mid: str = "wamid.HBgL1") -> Any:
    return {
        "from": sender,
        "id": mid,
        "timestamp": "1749416383",
        "text": {"body": body},
        "type": "text",
    }


STATUS_PAYLOAD = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "102290129340398",
            "changes": [
                {
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {
                            "display_phone_number": "15550783881",
                            "phone_number_id": PHONE_ID,
                        },
                        "statuses": [
                            {
                                "id": "wamid.HBgL2",
                                "status": "delivered",
                                "timestamp": "1750263773",
                                "recipient_id": "16505551234",
                                "conversation": {"id": "x", "origin": {"type": "service"}},
                                "pricing": {"billable": True, "category": "service"},
                            }
                        ],
                    },
                    "field": "messages",
                }
            ],
        }
    ],
}


def test_parse_a_text_message() -> None:
    [message] = parse_webhook(cloud_payload(text_message("Hi, my order is late")))
    assert message == InboundMessage(
        message_id="wamid.HBgL1",
        customer_id="16505551234",
        customer_name="Sheena Nelson",
        text="Hi, my order is late",
        message_type="text",
        timestamp=datetime.fromtimestamp(1749416383, tz=timezone.utc),
        phone_number_id=PHONE_ID,
    )


def test_status_callbacks_carry_no_messages() -> None:
    assert parse_webhook(STATUS_PAYLOAD) == []
    other_field = {"entry": [{"changes": [{"field": "account_update", "value": {"x": 1}}]}]}
    assert parse_webhook(other_field) == []
    assert parse_webhook({"object": "whatsapp_business_account", "entry": []}) == []


def test_parse_every_message_of_every_entry_and_change() -> None:
    payload = cloud_payload(
        text_message("one", mid="m1"),
        text_message("two", sender="919800000002", mid="m2"),
    )
    payload["entry"].append(cloud_payload(text_message("three", mid="m3"))["entry"][0])
    messages = parse_webhook(payload)
    assert [(m.message_id, m.text) for m in messages] == [
        ("m1", "one"),
        ("m2", "two"),
        ("m3", "three"),
    ]
    # no contact for the second sender: the number stands in for the name
    assert messages[1].customer_name == "919800000002"


def test_no_contacts_and_no_metadata() -> None:
    payload = cloud_payload(text_message("hi"), contacts=[])
    del payload["entry"][0]["changes"][0]["value"]["metadata"]
    [message] = parse_webhook(payload)
    assert message.customer_name == "16505551234"
    assert message.phone_number_id is None


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"type": "image", "image": {"id": "1", "mime_type": "image/jpeg"}}, "[image]"),
        ({"type": "image", "image": {"id": "1", "caption": "the parcel"}}, "[image] the parcel"),
        ({"type": "document", "document": {"filename": "invoice.pdf"}}, "[document] invoice.pdf"),
        ({"type": "audio", "audio": {"id": "1", "voice": True}}, "[audio]"),
        ({"type": "sticker", "sticker": {"id": "1"}}, "[sticker]"),
        ({"type": "reaction", "reaction": {"message_id": "m", "emoji": "👍"}}, "[reaction] 👍"),
        ({"type": "location", "location": {"latitude": 12.9, "longitude": 77.6}},
         "[location] 12.9,77.6"),
        ({"type": "location", "location": {"name": "Office", "latitude": 1, "longitude": 2}},
         "[location] Office"),
        ({"type": "button", "button": {"payload": "P", "text": "Talk to agent"}}, "Talk to agent"),
        ({"type": "interactive",
          "interactive": {"type": "button_reply", "button_reply": {"id": "b", "title": "Yes"}}},
         "Yes"),
        ({"type": "interactive",
          "interactive": {"type": "list_reply", "list_reply": {"id": "l", "title": "Refund"}}},
         "Refund"),
        ({"type": "unsupported", "errors": [{"code": 131051}]}, "[unsupported]"),
        ({"type": "contacts", "contacts": [{"name": {"formatted_name": "A"}}]}, "[contacts]"),
    ],
)  # fmt: skip
def test_other_message_types_get_a_placeholder(message: dict[str, Any], text: str) -> None:
    message = {"from": "16505551234", "id": "wamid.X", "timestamp": "1749416383", **message}
    [parsed] = parse_webhook(cloud_payload(message))
    assert parsed.text == text
    assert parsed.message_type == message["type"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "payload"),
        ("text", "payload"),
        (None, "payload"),
        ({}, "entry"),
        ({"object": "page", "entry": []}, "object"),
        ({"entry": {}}, "entry"),
        ({"entry": [[]]}, "entry[0]"),
        ({"entry": [{"changes": "x"}]}, "entry[0].changes"),
        ({"entry": [{"changes": [{"field": "messages"}]}]}, "entry[0].changes[0].value"),
        ({"entry": [{"changes": [{"value": {"messages": {}}}]}]},
         "entry[0].changes[0].value.messages"),
        ({"entry": [{"changes": [{"value": {"messages": [1]}}]}]},
         "entry[0].changes[0].value.messages[0]"),
    ],
)  # fmt: skip
def test_malformed_payloads_raise_invalid_input(payload: object, field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_webhook(payload)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m.pop("from"), "messages[0].from"),
        (lambda m: m.update({"from": 16505551234}), "messages[0].from"),
        (lambda m: m.update({"from": " "}), "messages[0].from"),
        (lambda m: m.pop("id"), "messages[0].id"),
        (lambda m: m.pop("type"), "messages[0].type"),
        (lambda m: m.pop("text"), "messages[0].text"),
        (lambda m: m.update({"text": {"body": 5}}), "messages[0].text.body"),
        (lambda m: m.update({"timestamp": "yesterday"}), "messages[0].timestamp"),
        (lambda m: m.update({"timestamp": "9" * 30}), "messages[0].timestamp"),
        (lambda m: m.update({"timestamp": True}), "messages[0].timestamp"),
    ],
)
def test_malformed_messages_name_the_path(change: Callable[[Any], object], field: str) -> None:
    message = text_message("hi")
    change(message)
    with pytest.raises(InvalidInputError) as info:
        parse_webhook(cloud_payload(message))
    assert info.value.field == f"entry[0].changes[0].value.{field}"


def test_malformed_contacts_and_metadata() -> None:
    bad_contacts = cloud_payload(text_message("hi"), contacts=[{"wa_id": "1", "profile": "x"}])
    with pytest.raises(InvalidInputError, match=r"contacts\[0\]\.profile"):
        parse_webhook(bad_contacts)
    bad_metadata = cloud_payload(text_message("hi"))
    bad_metadata["entry"][0]["changes"][0]["value"]["metadata"] = []
    with pytest.raises(InvalidInputError, match="metadata"):
        parse_webhook(bad_metadata)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["object", "entry", "changes", "value", "field", "messages", "contacts", "statuses",
             "from", "id", "type", "text", "body", "timestamp", "profile", "name", "wa_id",
             "metadata", "image", "caption", "interactive", "button_reply", "title"]
        ),
        children,
        max_size=5,
    ),
    max_leaves=30,
)  # fmt: skip


@given(json_values)
def test_parse_webhook_never_crashes(payload: object) -> None:
    try:
        messages = parse_webhook(payload)
    except InvalidInputError:
        return
    assert all(isinstance(m, InboundMessage) for m in messages)


# ------------------------------------------------------- sender: mock transport


class Recorder:
    """Sleeps that do not wait, and the requests that reached the API."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.requests: list[httpx.Request] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await anyio.lowlevel.checkpoint()


def scripted(recorder: Recorder, *answers: httpx.Response | Exception) -> httpx.MockTransport:
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        recorder.requests.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler)


def ok(mid: str = "wamid.OK") -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "messaging_product": "whatsapp",
            "contacts": [{"input": "16505551234", "wa_id": "16505551234"}],
            "messages": [{"id": mid}],
        },
    )


def api_error(
    status: int, message: str, code: int = 100, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"error": {"message": message, "type": "OAuthException", "code": code,
                      "fbtrace_id": "A1"}}  # fmt: skip
    return httpx.Response(status, json=body, headers=headers)


def sender_for(recorder: Recorder, transport: httpx.AsyncBaseTransport, **kw: Any) -> Any:
    kw.setdefault("jitter", lambda: 1.0)
    return WhatsAppCloudSender(
        access_token=TOKEN,
        phone_number_id=PHONE_ID,
        base_url="https://graph.example.invalid",
        sleep=recorder.sleep,
        transport=transport,
        **kw,
    )


async def test_send_posts_the_cloud_api_text_message() -> None:
    recorder = Recorder()
    async with sender_for(recorder, scripted(recorder, ok("wamid.ABC"))) as sender:
        assert await sender.send_text_message("16505551234", "Hello there") == "wamid.ABC"
    [request] = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == f"https://graph.example.invalid/v21.0/{PHONE_ID}/messages"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505551234",
        "type": "text",
        "text": {"preview_url": False, "body": "Hello there"},
    }
    assert recorder.sleeps == []
    assert TOKEN not in repr(sender)


async def test_429_then_success_honours_retry_after() -> None:
    recorder = Recorder()
    limited = api_error(429, "rate limit", 130429, headers={"Retry-After": "3"})
    transport = scripted(recorder, limited, ok())
    async with sender_for(recorder, transport) as sender:
        await sender.send_text("16505551234", "hi")
    assert len(recorder.requests) == 2
    assert recorder.sleeps == [3.0]


async def test_retry_after_as_an_http_date() -> None:
    recorder = Recorder()
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    transport = scripted(recorder, api_error(503, "busy", headers={"Retry-After": when}), ok())
    async with sender_for(recorder, transport) as sender:
        await sender.send_text("16505551234", "hi")
    [delay] = recorder.sleeps
    assert 0 < delay <= 30


async def test_5xx_backs_off_exponentially_then_raises_delivery_error() -> None:
    recorder = Recorder()
    transport = scripted(recorder, *[api_error(500, "Service temporarily unavailable", 2)] * 4)
    async with sender_for(recorder, transport, max_attempts=4) as sender:
        with pytest.raises(DeliveryError) as info:
            await sender.send_text("16505551234", "hi")
    assert isinstance(info.value, WhatsAppDeliveryError)
    assert info.value.status_code == 500
    assert info.value.attempts == 4
    assert "Service temporarily unavailable" in str(info.value)
    assert len(recorder.requests) == 4
    assert recorder.sleeps == [0.5, 1.0, 2.0]  # jitter() = 1.0: the full backoff


async def test_backoff_is_jittered_and_capped() -> None:
    recorder = Recorder()
    transport = scripted(recorder, *[httpx.Response(502)] * 6)
    async with sender_for(
        recorder, transport, max_attempts=6, backoff_base=1.0, backoff_max=4.0, jitter=lambda: 0.0
    ) as sender:
        with pytest.raises(WhatsAppDeliveryError, match="HTTP 502"):
            await sender.send_text("16505551234", "hi")
    assert recorder.sleeps == [0.5, 1.0, 2.0, 2.0, 2.0]  # half of 1, 2, 4, 4, 4


async def test_400_fails_at_once_with_the_api_message() -> None:
    recorder = Recorder()
    error = httpx.Response(
        400,
        json={"error": {"message": "(#131030) Recipient phone number not in allowed list",
                        "code": 131030, "error_data": {"details": "add it in the dashboard"}}},
    )  # fmt: skip
    async with sender_for(recorder, scripted(recorder, error)) as sender:
        with pytest.raises(WhatsAppDeliveryError) as info:
            await sender.send_text("16505551234", "hi")
    assert info.value.status_code == 400
    assert info.value.api_code == 131030
    assert info.value.api_message == (
        "(#131030) Recipient phone number not in allowed list (add it in the dashboard)"
    )
    assert "400" in str(info.value) and "not in allowed list" in str(info.value)
    assert len(recorder.requests) == 1 and recorder.sleeps == []


async def test_401_and_a_non_json_error_body() -> None:
    recorder = Recorder()
    transport = scripted(
        recorder,
        api_error(401, "Error validating access token", 190),
        httpx.Response(404, text="nope"),
    )
    async with sender_for(recorder, transport) as sender:
        with pytest.raises(WhatsAppDeliveryError, match="401: Error validating access token"):
            await sender.send_text("1", "hi")
        with pytest.raises(WhatsAppDeliveryError, match="404: nope"):
            await sender.send_text("1", "hi")
    assert recorder.sleeps == []


async def test_transport_errors_are_retried() -> None:
    recorder = Recorder()
    transport = scripted(
        recorder,
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        ok(),
    )
    async with sender_for(recorder, transport) as sender:
        await sender.send_text("16505551234", "hi")
    assert len(recorder.requests) == 3 and recorder.sleeps == [0.5, 1.0]


async def test_transport_errors_until_the_last_attempt() -> None:
    recorder = Recorder()
    transport = scripted(recorder, *[httpx.ConnectError("refused")] * 3)
    async with sender_for(recorder, transport, max_attempts=3) as sender:
        with pytest.raises(WhatsAppDeliveryError, match=r"ConnectError.*after 3 attempts") as info:
            await sender.send_text("16505551234", "hi")
    assert info.value.status_code is None
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_a_retry_after_beyond_the_limit_fails_at_once() -> None:
    recorder = Recorder()
    transport = scripted(recorder, api_error(429, "slow down", headers={"Retry-After": "3600"}))
    async with sender_for(recorder, transport, max_retry_after=60) as sender:
        with pytest.raises(WhatsAppDeliveryError, match="retry after 3600 s") as info:
            await sender.send_text("16505551234", "hi")
    assert info.value.status_code == 429
    assert recorder.sleeps == []


async def test_sender_checks_its_arguments_and_lifecycle() -> None:
    recorder = Recorder()
    sender = sender_for(recorder, scripted(recorder))
    with pytest.raises(RuntimeError, match="not started"):
        await sender.send_text("1", "hi")
    async with sender:
        with pytest.raises(InvalidInputError, match="to"):
            await sender.send_text(" ", "hi")
        with pytest.raises(InvalidInputError, match="text"):
            await sender.send_text("1", "")
        with pytest.raises(RuntimeError, match="already started"):
            await sender.start(AsyncExitStack())
    with pytest.raises(RuntimeError, match="not started"):
        await sender.send_text("1", "hi")
    bad_arguments: list[dict[str, Any]] = [
        {"access_token": ""},
        {"phone_number_id": " "},
        {"max_attempts": 0},
        {"max_attempts": True},
        {"backoff_base": -1},
        {"timeout": float("inf")},
    ]
    for bad in bad_arguments:
        kwargs: dict[str, Any] = {"access_token": "t", "phone_number_id": "p", **bad}
        with pytest.raises(InvalidInputError):
            WhatsAppCloudSender(**kwargs)


def test_from_env() -> None:
    assert WhatsAppCloudSender.from_env({}) is None
    assert WhatsAppCloudSender.from_env({"WHATSAPP_TOKEN": "t"}) is None
    sender = WhatsAppCloudSender.from_env(
        {
            "WHATSAPP_TOKEN": "t",
            "WHATSAPP_PHONE_NUMBER_ID": "123",
            "WHATSAPP_API_VERSION": "v99.0",
            "WHATSAPP_API_BASE_URL": "http://127.0.0.1:9/",
        },
        max_attempts=2,
    )
    assert sender is not None
    assert sender.messages_url == "http://127.0.0.1:9/v99.0/123/messages"
    assert sender.max_attempts == 2


# ------------------------------------------------- sender: a real loopback server


class FakeCloudApi:
    """The Cloud API's messages endpoint, answering from a script."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.app = Starlette(
            routes=[Route("/{version}/{phone_id}/messages", self.messages, methods=["POST"])]
        )

    def answer(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        with self.lock:
            self.script.append((status, body, headers or {}))

    async def messages(self, request: Request) -> Response:
        record = {
            "path": request.url.path,
            "authorization": request.headers.get("authorization"),
            "json": await request.json(),
        }
        with self.lock:
            self.received.append(record)
            status, body, headers = self.script.pop(0) if self.script else (200, {}, {})
        if status == 200 and not body:
            body = {
                "messaging_product": "whatsapp",
                "messages": [{"id": f"wamid.{len(self.received)}"}],
            }
        return JSONResponse(body, status_code=status, headers=headers)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue here until the server accepts them
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def fake_api() -> Iterator[tuple[FakeCloudApi, str]]:
    api = FakeCloudApi()
    with serve(api.app) as url:
        yield api, url


@pytest.fixture
def cloud(fake_api: tuple[FakeCloudApi, str]) -> tuple[FakeCloudApi, str]:
    api, url = fake_api
    with api.lock:
        api.script.clear()
        api.received.clear()
    return api, url


def loopback_sender(url: str, recorder: Recorder, **kw: Any) -> WhatsAppCloudSender:
    return WhatsAppCloudSender(
        access_token=TOKEN,
        phone_number_id=PHONE_ID,
        base_url=url,
        sleep=recorder.sleep,
        jitter=lambda: 1.0,
        timeout=10,
        **kw,
    )


async def test_loopback_success(cloud: tuple[FakeCloudApi, str]) -> None:
    api, url = cloud
    recorder = Recorder()
    async with loopback_sender(url, recorder) as sender:
        assert await sender.send_text_message("16505551234", "over a socket") == "wamid.1"
    [record] = api.received
    assert record["path"] == f"/v21.0/{PHONE_ID}/messages"
    assert record["authorization"] == f"Bearer {TOKEN}"
    assert record["json"]["text"]["body"] == "over a socket"


async def test_loopback_429_then_success(cloud: tuple[FakeCloudApi, str]) -> None:
    api, url = cloud
    api.answer(429, {"error": {"message": "(#130429) Rate limit hit", "code": 130429}},
               headers={"Retry-After": "1"})  # fmt: skip
    recorder = Recorder()
    async with loopback_sender(url, recorder) as sender:
        await sender.send_text("16505551234", "hi")
    assert len(api.received) == 2
    assert recorder.sleeps == [1.0]


async def test_loopback_500s_then_delivery_error(cloud: tuple[FakeCloudApi, str]) -> None:
    api, url = cloud
    for _ in range(3):
        api.answer(500, {"error": {"message": "Internal error", "code": 1}})
    recorder = Recorder()
    async with loopback_sender(url, recorder, max_attempts=3) as sender:
        with pytest.raises(DeliveryError, match="HTTP 500: Internal error after 3 attempts"):
            await sender.send_text("16505551234", "hi")
    assert len(api.received) == 3
    assert recorder.sleeps == [0.5, 1.0]


async def test_loopback_400_fails_at_once(cloud: tuple[FakeCloudApi, str]) -> None:
    api, url = cloud
    api.answer(400, {"error": {"message": "(#100) Invalid parameter", "code": 100}})
    recorder = Recorder()
    async with loopback_sender(url, recorder) as sender:
        with pytest.raises(WhatsAppDeliveryError, match=r"400: \(#100\) Invalid parameter"):
            await sender.send_text("16505551234", "hi")
    assert len(api.received) == 1 and recorder.sleeps == []


async def test_loopback_connection_refused_is_retried_then_fails() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    recorder = Recorder()
    async with loopback_sender(f"http://127.0.0.1:{port}", recorder, max_attempts=2) as sender:
        with pytest.raises(WhatsAppDeliveryError, match="ConnectError"):
            await sender.send_text("16505551234", "hi")
    assert recorder.sleeps == [0.5]


async def test_the_desk_starts_and_closes_the_sender(cloud: tuple[FakeCloudApi, str]) -> None:
    api, url = cloud
    recorder = Recorder()
    sender = loopback_sender(url, recorder)
    async with AsyncSmartChat.in_memory(clock=ManualClock(), sender=sender) as desk:
        await desk.register_executive("e1", name="Asha", customer_types={"retail"})
        await desk.set_executive_status("e1", "online")
        chat = await desk.receive_customer_message(
            customer_id="16505551234", customer_name="Sheena", customer_type="retail", text="hi"
        )
        await desk.send_executive_message(chat.id, executive_id="e1", text="Hello Sheena")
        api.answer(400, {"error": {"message": "(#131047) Re-engagement message", "code": 131047}})
        with pytest.raises(DeliveryError, match="131047"):
            await desk.send_executive_message(chat.id, executive_id="e1", text="again")
        after = await desk.get_chat(chat.id)
        assert after.last_message == "Hello Sheena"  # the failed reply changed nothing
    assert [r["json"]["text"]["body"] for r in api.received] == ["Hello Sheena", "again"]
    with pytest.raises(RuntimeError, match="not started"):
        await sender.send_text("1", "closed")
