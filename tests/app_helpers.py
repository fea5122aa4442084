"""Helpers shared by the host example tests (FastAPI and Flask): tokens,
settings, a WhatsApp webhook payload and its signature."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from smartchat_core import Actor, Settings, SlaTier
from smartchat_core.whatsapp import SIGNATURE_HEADER, sign_body

SECRET = "test-app-secret"
VERIFY = "test-verify-token"
SUP, E1, E2 = "sup-token", "e1-token", "e2-token"
TOKENS = {SUP: Actor.supervisor("lead"), E1: Actor.executive("e1"), E2: Actor.executive("e2")}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def app_settings() -> Settings:
    return Settings(
        sla_tiers=(SlaTier("alert", after=timedelta(minutes=3), recipient="+910000000001"),),
        inactivity_timeout=timedelta(hours=8),
        rating_secret="test-rating-secret",
    )


def webhook_payload(
    text: str = "hi, my order is late",
    *,
    customer: str = "919800000001",
    name: str = "Ravi",
    message_id: str = "wamid.1",
) -> dict[str, Any]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": "123"},
        "contacts": [{"profile": {"name": name}, "wa_id": customer}],
        "messages": [
            {
                "from": customer,
                "id": message_id,
                "timestamp": "1767225600",
                "type": "text",
                "text": {"body": text},
            }
        ],
    }
    change = {"field": "messages", "value": value}
    return {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign_body(secret, body), "Content-Type": "application/json"}
