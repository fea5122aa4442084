"""A console tour of smartchat_core on the in-memory backend.

Executives come online, customers write, chats are assigned round robin, an
SLA alert fires, an executive replies and the awaiting tagger tags the chat,
an executive goes offline and its chats move to colleagues, another one stops
answering and the inactivity monitor takes it offline, a chat is resolved and
rated, and the "My chats / All chats" lists are shown.

Nothing waits for real: the desk runs on a ManualClock (virtual time), and
``advance`` moves it minute by minute, running the three monitors each minute
as the background scheduler would.  Every event the desk publishes to the
``dashboard`` room is printed by a background task as it arrives, the way a
live dashboard would receive it over a WebSocket.

Run it with ``python examples/console_demo.py`` (or ``nox -s demo``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from smartchat_core import (
    DASHBOARD,
    Actor,
    AsyncSmartChat,
    Chat,
    ChatPage,
    Event,
    Settings,
    SlaTier,
)
from smartchat_core.abc import MessageSender
from smartchat_core.testing import ManualClock, RecordingPublisher

ALERT_GROUP = "+910000000001"
SHIFT_LEAD = "+910000000002"
START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)

SLA_TIERS = (  # the seed's two tiers
    SlaTier("alert", after=timedelta(minutes=3), recipient=ALERT_GROUP,
            dedup_ttl=timedelta(seconds=300)),
    SlaTier("escalation", after=timedelta(minutes=10), recipient=SHIFT_LEAD,
            dedup_ttl=timedelta(seconds=700)),
)  # fmt: skip

EXECUTIVES = {  # id: (name, customer types)
    "e1": ("Asha", {"retail"}),
    "e2": ("Bilal", {"retail", "wholesale"}),
    "e3": ("Chen", {"wholesale"}),
}


class ConsoleSender(MessageSender):
    """Prints outbound WhatsApp messages instead of sending them."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo

    async def send_text(self, to: str, text: str) -> None:
        roles = {ALERT_GROUP: "alert group", SHIFT_LEAD: "shift lead"}
        who = self.demo.customers.get(to) or roles.get(to, to)
        print(f"    [whatsapp] to {who} ({to}): {text}")


class Demo:
    def __init__(self) -> None:
        self.clock = ManualClock(START)
        self.publisher = RecordingPublisher()
        self.customers: dict[str, str] = {}  # number -> name
        self.chat_names: dict[str, str] = {}  # chat id -> customer name
        self.present: set[str] = set()  # executives whose dashboard is open (heartbeats)
        self.printed = 0
        self.desk = AsyncSmartChat.in_memory(
            settings=Settings(
                sla_tiers=SLA_TIERS,
                rating_secret="demo-secret",  # signs the rating link of the resolution message
                resolution_message="Thanks {customer_name}! Rate us from 1 to 5: "
                "https://support.example/rate/{chat_id}?t={rating_token}",
            ),
            clock=self.clock,
            sender=ConsoleSender(self),
            publisher=self.publisher,
        )

    # ----------------------------------------------------------------- output
    def time(self) -> str:
        return self.clock.now().strftime("%H:%M")

    def step(self, title: str) -> None:
        print(f"\n== {self.time()}  {title}")

    def say(self, text: str) -> None:
        print(f"    {text}")

    def executive(self, executive_id: str | None) -> str:
        if executive_id is None:
            return "nobody (waits in the queue)"
        return f"{EXECUTIVES[executive_id][0]} ({executive_id})"

    def chat(self, chat_id: str) -> str:
        return f"{self.chat_names.get(chat_id, chat_id[:8])}'s chat"

    def describe(self, event: Event) -> str:
        p: dict[str, Any] = event.payload
        name = event.name
        if name == "executive_status":
            return f"{self.executive(p['executive_id'])}: {p['previous_status']} -> {p['status']}"
        if name == "chat_message":
            who = self.chat_names.get(p["chat_id"], "customer")
            if p["direction"] == "outgoing":
                who = self.executive(p["executive_id"])
            return f"{self.chat(p['chat_id'])}, {p['direction']} from {who}: {p['text']!r}"
        if name == "chat_assigned":
            return f"{self.chat(p['chat_id'])} -> {self.executive(p['executive_id'])}"
        if name == "chat_reassigned":
            return (
                f"{self.chat(p['chat_id'])}: {self.executive(p['from_executive_id'])} "
                f"-> {self.executive(p['to_executive_id'])}"
            )
        if name == "sla_alert":
            return (
                f"[{p['alert_type']}] {p['customer_name']} has waited "
                f"{p['waited_seconds'] / 60:.0f} min; "
                f"handled by {self.executive(p['executive_id'])}"
            )
        if name == "tag_updated":
            sign = "+" if p["action"] == "added" else "-"
            return f"{self.chat(p['chat_id'])}: {sign}{p['tag']} (tags now {p['tags']})"
        if name == "chat_resolved":
            return f"{self.chat(p['chat_id'])} resolved by {self.executive(p['executive_id'])}"
        if name == "chat_rated":
            rating = p["rating"]
            return f"{self.chat(p['chat_id'])} rated {rating['score']}/5: {rating['comment']!r}"
        return str(p)

    # ----------------------------------------------------------------- events
    async def watch_dashboard(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Print every event of the dashboard room as it arrives."""
        async with self.desk.subscribe(rooms={DASHBOARD}) as events:
            task_status.started()
            async for event in events:
                print(f"    [event] {event.name:<16} {self.describe(event)}")
                self.printed += 1

    async def settle(self) -> None:
        """Let the dashboard task print everything published so far."""
        published = sum(DASHBOARD in e.rooms for e in self.publisher.events)
        for _ in range(10_000):
            if self.printed >= published:
                return
            await anyio.lowlevel.checkpoint()
        raise RuntimeError("the dashboard task fell behind")

    # ------------------------------------------------------------ virtual time
    async def advance(self, minutes: int) -> None:
        """Move virtual time on minute by minute; each minute the open
        dashboards ping (heartbeat) and the monitors tick, as the scheduler
        of a real deployment does every 60 s."""
        for _ in range(minutes):
            self.clock.advance(timedelta(minutes=1))
            for executive_id in sorted(self.present):
                await self.desk.heartbeat(executive_id, actor=Actor.executive(executive_id))
            alerts = await self.desk.run_sla_check()
            tagged = await self.desk.run_awaiting_check()
            offline = await self.desk.run_inactivity_check()
            if alerts or tagged or offline:
                self.say(
                    f"{self.time()} monitor tick: {len(alerts)} SLA alert(s), "
                    f"{len(tagged)} chat(s) tagged awaiting, {len(offline)} executive(s) "
                    "taken offline"
                )
            await self.settle()

    # ---------------------------------------------------------------- actions
    async def customer_writes(self, number: str, name: str, customer_type: str, text: str) -> Chat:
        self.customers[number] = name
        chat = await self.desk.receive_customer_message(
            customer_id=number, customer_name=name, customer_type=customer_type, text=text
        )
        self.chat_names[chat.id] = name
        await self.settle()
        self.say(
            f"=> {name} ({customer_type}): chat {chat.id[:8]}, "
            f"with {self.executive(chat.assigned_executive_id)}"
        )
        return chat

    async def reply(self, chat: Chat, text: str) -> Chat:
        current = await self.desk.get_chat(chat.id)
        executive_id = current.assigned_executive_id
        assert executive_id is not None
        updated = await self.desk.send_executive_message(
            chat.id, executive_id=executive_id, text=text, actor=Actor.executive(executive_id)
        )
        await self.settle()
        return updated

    def show(self, title: str, page: ChatPage) -> None:
        self.say(f"{title}: {page.total} chat(s)")
        self.say(f"  {'customer':<8} {'type':<10} {'status':<9} {'executive':<14} {'last':<9} tags")
        for c in page.items:
            status = "resolved" if c.is_resolved else "open"
            sender = c.last_interaction_by.value if c.last_interaction_by else "-"
            owner = EXECUTIVES[c.assigned_executive_id][0] if c.assigned_executive_id else "-"
            tags = ",".join(c.tags) or "-"
            self.say(
                f"  {self.chat_names[c.id]:<8} {c.customer_type:<10} {status:<9} "
                f"{owner:<14} {sender:<9} {tags}"
            )

    async def show_counters(self) -> None:
        c = await self.desk.get_counters()
        self.say(
            f"dashboard counters: {c.open} open, {c.unassigned} waiting, {c.awaiting} awaiting"
        )

    async def show_executives(self, ids: Iterable[str] = EXECUTIVES) -> None:
        for executive_id in ids:
            e = await self.desk.get_executive(executive_id)
            self.say(
                f"{self.executive(e.id):<14} {e.status.value:<8} open chats: {e.open_chats}, "
                f"awaiting: {e.awaiting_chats}"
            )

    # ------------------------------------------------------------------ story
    async def run(self) -> None:
        async with self.desk, anyio.create_task_group() as group:
            await group.start(self.watch_dashboard)
            await self.story()
            group.cancel_scope.cancel()

    async def story(self) -> None:
        desk = self.desk
        print("smartchat_core console demo: in-memory backend, virtual time")

        self.step("Executives sign in")
        for executive_id, (name, types) in EXECUTIVES.items():
            await desk.register_executive(executive_id, name=name, customer_types=types)
            await desk.set_executive_status(executive_id, "online")
            self.present.add(executive_id)
            await self.settle()
        for customer_type in ("retail", "wholesale"):
            online = await desk.get_online_executives(customer_type)
            self.say(f"online for {customer_type}: {', '.join(e.name for e in online)}")

        self.step("Customers write in; each chat goes to the next executive of its type")
        ravi = await self.customer_writes("+919800000001", "Ravi", "retail", "Hi, my order is late")
        meera = await self.customer_writes("+919800000002", "Meera", "retail", "Refund status?")
        karan = await self.customer_writes("+919800000003", "Karan", "wholesale", "Bulk price?")
        divya = await self.customer_writes("+919800000004", "Divya", "wholesale", "Invoice copy")

        await self.advance(1)
        self.step("A minute later, three of them get an answer; Karan's does not")
        await self.reply(ravi, "Sorry Ravi, checking your order now.")
        await self.reply(meera, "Your refund went out yesterday.")
        await self.reply(divya, "Sending the invoice in a minute.")

        self.step("Two more minutes pass: Karan has waited 3 minutes, the SLA monitor alerts")
        await self.advance(2)

        self.step("Bilal answers Karan; Ravi writes back (his awaiting tag goes)")
        await self.reply(karan, "Hi Karan, 8% off from 100 units.")
        await self.customer_writes("+919800000001", "Ravi", "retail", "Thanks, any update?")
        await self.reply(ravi, "It ships today!")

        self.step("Bilal signs off: his open chats move to colleagues of the same type")
        await desk.set_executive_status("e2", "offline", actor=Actor.executive("e2"))
        self.present.discard("e2")
        await self.settle()
        await self.show_executives()

        self.step("Chen closes the laptop without signing off (no more heartbeats)")
        self.present.discard("e3")
        self.say("4 minutes of virtual time pass; the monitors tick every minute")
        await self.advance(4)
        self.say("wholesale chats wait: nobody online serves wholesale")
        await self.show_counters()

        self.step("Chen comes back: the waiting wholesale chats are assigned to Chen")
        await desk.set_executive_status("e3", "online", actor=Actor.executive("e3"))
        self.present.add("e3")
        await self.settle()

        self.step("Asha resolves Ravi's chat; Ravi rates it through the signed link")
        await desk.resolve_chat(ravi.id, actor=Actor.executive("e1"))
        await self.settle()
        token = await desk.rating_token(ravi.id)  # what the link in the message carries
        await desk.rate_chat(ravi.id, score=5, comment="Quick and friendly", token=token)
        await self.settle()
        log = await desk.get_resolutions(chat_id=ravi.id)
        self.say(
            f"resolve log: {len(log)} entry, resolved by {self.executive(log[0].executive_id)}"
        )

        self.step('Asha\'s "My chats" and the supervisor\'s "All chats"')
        asha, lead = Actor.executive("e1"), Actor.supervisor("lead")
        self.show("My chats (Asha, open)", await desk.fetch_all_chats(status="open", actor=asha))
        self.show("All chats (supervisor)", await desk.fetch_all_chats(actor=lead))
        self.show(
            "Waiting for a customer (tag awaiting)", await desk.fetch_all_chats(tag="awaiting")
        )
        await self.show_counters()
        await self.show_executives()

        print(f"\nDone: {len(self.publisher.events)} events published, all printed above.")


def main() -> int:
    anyio.run(Demo().run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
