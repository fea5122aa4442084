"""A live demo: the FastAPI app on the in-memory backend, with simulated
customers writing in over the (signed) webhook and executives replying,
tagging, resolving and changing status at random, and SLA tiers of seconds so
alerts show up.  Open the printed URL to watch the dashboard move.

    python -m examples.fastapi_app.demo                 # until Ctrl-C, port 8000
    python -m examples.fastapi_app.demo --port 0 --duration 20

The port comes from ``--port``, else ``SMARTCHAT_DEMO_PORT``, else 8000
(``0`` picks a free one).  Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import socket
import sys
from collections import Counter
from datetime import timedelta
from typing import Any

import anyio
import httpx
import uvicorn

from smartchat_core import (
    Actor,
    AsyncSmartChat,
    Event,
    Settings,
    SlaTier,
    SmartChatError,
)
from smartchat_core.whatsapp import SIGNATURE_HEADER, InboundMessage, sign_body

from .app import AppConfig, create_app

EXECUTIVES = (
    ("e1", "Asha", ("retail",), None),
    ("e2", "Ravi", ("retail", "wholesale"), None),
    ("e3", "Meera", ("wholesale",), None),
    ("e4", "Kabir", ("retail",), 3),
)
CUSTOMERS = (
    ("919800000010", "Priya"), ("919800000021", "Arjun Traders"), ("919800000032", "Neha"),
    ("919800000043", "Vikram Stores"), ("919800000054", "Sana"), ("919800000065", "Rohit"),
    ("919800000076", "Lakshmi Exports"), ("919800000087", "Imran"), ("919800000098", "Divya"),
    ("919800000109", "Kiran Wholesale"), ("919800000110", "Farah"), ("919800000121", "Dev"),
)  # fmt: skip
WHOLESALE = {"919800000021", "919800000043", "919800000076", "919800000109"}
OPENERS = (
    "Hi, where is my order?", "My payment failed twice", "Can I change the delivery address?",
    "Do you have this in blue?", "I need an invoice for last week", "The parcel arrived damaged",
    "What are your bulk prices?", "Is the store open on Sunday?", "Refund status please",
)  # fmt: skip
FOLLOW_UPS = ("Any update?", "Hello?", "Thanks, one more question", "ok", "Still waiting...")
REPLIES = (
    "Hello! Let me check that for you.", "Thanks for waiting, looking into it now.",
    "I have escalated this to the warehouse.", "Could you share your order number?",
    "Done - you will get an SMS shortly.",
)  # fmt: skip
TAGS = ("vip", "billing", "delivery", "refund", "bulk")


def demo_settings(rating_secret: str) -> Settings:
    """Seconds instead of minutes, so the dashboard shows every feature soon."""
    return Settings(
        sla_tiers=(
            SlaTier(
                "alert",
                after=timedelta(seconds=20),
                recipient="+910000000001",
                dedup_ttl=timedelta(seconds=60),
            ),
            SlaTier(
                "escalation",
                after=timedelta(seconds=45),
                recipient="+910000000002",
                dedup_ttl=timedelta(seconds=120),
            ),
        ),
        awaiting_after=timedelta(seconds=15),
        inactivity_timeout=timedelta(minutes=10),
        sla_interval=timedelta(seconds=2),
        awaiting_interval=timedelta(seconds=3),
        inactivity_interval=timedelta(seconds=10),
        rating_secret=rating_secret,
        resolution_message="Thanks {customer_name}! Rate us 1-5: /rate/{chat_id}?t={rating_token}",
    )


def customer_type_for(message: InboundMessage) -> str:
    return "wholesale" if message.customer_id in WHOLESALE else "retail"


def webhook_body(customer_id: str, name: str, text: str) -> bytes:
    """A Cloud API webhook body with one text message."""
    message = {
        "from": customer_id,
        "id": f"wamid.demo{secrets.token_hex(8)}",
        "timestamp": "1767225600",
        "type": "text",
        "text": {"body": text},
    }
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": "demo"},
        "contacts": [{"profile": {"name": name}, "wa_id": customer_id}],
        "messages": [message],
    }
    change = {"field": "messages", "value": value}
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "demo", "changes": [change]}],
    }
    return json.dumps(payload).encode()


class Simulation:
    """Customers over HTTP (signed webhooks), executives through the desk."""

    def __init__(self, base_url: str, app_secret: str, rng: random.Random) -> None:
        self.base_url = base_url
        self.app_secret = app_secret
        self.rng = rng
        self.stats: Counter[str] = Counter()

    async def run(self, desk: AsyncSmartChat) -> None:
        for executive_id, name, types, capacity in EXECUTIVES:
            await desk.register_executive(
                executive_id, name=name, customer_types=set(types), max_open_chats=capacity
            )
            await desk.set_executive_status(
                executive_id, "online" if executive_id != "e4" else "away"
            )
        async with (
            httpx.AsyncClient(base_url=self.base_url, timeout=10) as http,
            desk.subscribe(["dashboard"]) as events,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(self.count_events, events)
            tasks.start_soon(self.customers, http)
            await self.executives(desk, http)

    async def count_events(self, events: Any) -> None:
        event: Event
        async for event in events:
            self.stats[event.name] += 1

    async def customers(self, http: httpx.AsyncClient) -> None:
        while True:
            customer_id, name = self.rng.choice(CUSTOMERS)
            text = self.rng.choice(OPENERS if self.rng.random() < 0.6 else FOLLOW_UPS)
            body = webhook_body(customer_id, name, text)
            headers = {SIGNATURE_HEADER: sign_body(self.app_secret, body),
                       "Content-Type": "application/json"}  # fmt: skip
            try:
                response = await http.post("/webhook", content=body, headers=headers)
            except httpx.TransportError:  # the server is shutting down
                return
            self.stats["webhook_posts"] += 1
            if response.status_code != 200:
                print(f"webhook answered {response.status_code}: {response.text}", file=sys.stderr)
            await anyio.sleep(self.rng.uniform(0.8, 2.5))

    async def executives(self, desk: AsyncSmartChat, http: httpx.AsyncClient) -> None:
        while True:
            await anyio.sleep(self.rng.uniform(0.7, 1.8))
            try:
                await self.executive_step(desk, http)
            except SmartChatError as error:  # raced with a monitor or a customer: fine
                self.stats["conflicts"] += 1
                print(f"demo: {type(error).__name__}: {error}", file=sys.stderr)

    async def executive_step(self, desk: AsyncSmartChat, http: httpx.AsyncClient) -> None:
        executive_id = self.rng.choice(EXECUTIVES)[0]
        actor = Actor.executive(executive_id)
        executive = await desk.get_executive(executive_id)
        if executive.status.value != "offline":
            await desk.heartbeat(executive_id, actor=actor)
        if self.rng.random() < 0.06:  # a coffee break, or back from one
            status = "away" if executive.status.value == "online" else "online"
            await desk.set_executive_status(executive_id, status, actor=actor)
            return
        page = await desk.fetch_all_chats(status="open", limit=50, actor=actor)
        # Some chats are left alone on purpose: their customers wait into the SLA tiers.
        candidates = [c for c in page.items if self.rng.random() < 0.7]
        if not candidates:
            return
        chat = self.rng.choice(candidates)
        roll = self.rng.random()
        if roll < 0.5:
            await desk.send_executive_message(
                chat.id, executive_id=executive_id, text=self.rng.choice(REPLIES), actor=actor
            )
        elif roll < 0.7:
            await desk.apply_tag(chat.id, self.rng.choice(TAGS), actor=actor)
        elif roll < 0.75 and chat.tags:
            await desk.remove_tag(chat.id, self.rng.choice(chat.tags), actor=actor)
        elif chat.last_interaction_by is not None and chat.last_interaction_by.value == "Executive":
            resolved = await desk.resolve_chat(chat.id, executive_id=executive_id, actor=actor)
            if self.rng.random() < 0.6:  # the customer follows the rating link
                token = await desk.rating_token(resolved.id)
                score = self.rng.randint(3, 5)
                with contextlib.suppress(httpx.TransportError):  # shutting down
                    await http.post(
                        f"/api/chats/{resolved.id}/rating", json={"score": score, "token": token}
                    )


async def main(port: int, duration: float | None, seed: int | None) -> int:
    rng = random.Random(seed)
    supervisor_token = secrets.token_urlsafe(16)
    app_secret = secrets.token_urlsafe(24)
    tokens = {supervisor_token: Actor.supervisor("demo-lead")}
    executive_tokens = {}
    for executive_id, *_ in EXECUTIVES:
        executive_tokens[executive_id] = token = secrets.token_urlsafe(12)
        tokens[token] = Actor.executive(executive_id)
    config = AppConfig(
        api_tokens=tokens,
        whatsapp_app_secret=app_secret,
        whatsapp_verify_token="demo-verify-token",
        customer_type_for=customer_type_for,
        run_monitors=True,
    )
    rating_secret = secrets.token_urlsafe(24)
    simulation: Simulation | None = None
    listening = anyio.Event()

    async def simulate(desk: AsyncSmartChat) -> None:
        await listening.wait()  # the webhook needs the socket
        assert simulation is not None
        await simulation.run(desk)

    app = create_app(
        lambda: AsyncSmartChat.in_memory(settings=demo_settings(rating_secret)),
        config=config,
        background=[simulate],
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as error:
        sock.close()
        print(f"cannot listen on 127.0.0.1:{port}: {error.strerror}; try --port 0",
              file=sys.stderr)  # fmt: skip
        return 1
    sock.listen(128)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    async with anyio.create_task_group() as tasks:

        async def announce() -> None:
            nonlocal simulation
            while not server.started:  # noqa: ASYNC110 (uvicorn has no started event)
                await anyio.sleep(0.05)
            simulation = Simulation(base, app_secret, rng)
            listening.set()
            print(f"smartchat demo running: {base}/?token={supervisor_token}", flush=True)
            for executive_id, token in executive_tokens.items():
                print(f"  as executive {executive_id}: {base}/?token={token}", flush=True)
            if duration is None:
                print("Ctrl-C to stop.", flush=True)
            else:
                await anyio.sleep(duration)
                server.should_exit = True

        tasks.start_soon(announce)
        try:
            await server.serve(sockets=[sock])
        finally:
            sock.close()
        tasks.cancel_scope.cancel()
    if not server.started:
        return 1
    stats = simulation.stats if simulation else Counter()
    summary = ", ".join(f"{name} {count}" for name, count in sorted(stats.items()))
    print(f"demo stopped: {summary or 'nothing happened'}", flush=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    default_port = int(os.environ.get("SMARTCHAT_DEMO_PORT", "8000"))
    parser.add_argument("--port", type=int, default=default_port, help="0 picks a free port")
    parser.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the simulation")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return anyio.run(main, args.port, args.duration, args.seed, backend="asyncio")
    except KeyboardInterrupt:
        print("demo stopped", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(run())
