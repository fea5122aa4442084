"""SLA tiers (the seed's ``sla_service.py``)."""

from __future__ import annotations

from datetime import datetime

import attrs

from .. import _events as events
from .._errors import DeliveryError
from .._models import Chat, Interlocutor
from .._settings import SlaTier
from ._base import Service, logger, render

_SLA_BATCH = 10_000


def dedup_key(chat_id: str, alert_type: str) -> str:
    """The seed's dedup key: ``sla::alerted::{chat_id}::{alert_type}``."""
    return f"sla::alerted::{chat_id}::{alert_type}"


@attrs.frozen
class SlaAlert:
    """An alert that went out."""

    chat_id: str
    tier: str
    recipient: str | None
    waited_seconds: float
    at: datetime
    delivered: bool
    """False when the WhatsApp message failed: no event went out and the
    dedup key was released, so the next check tries again."""


class SlaService(Service):
    async def run_sla_check(self) -> list[SlaAlert]:
        """Alert every chat due for a tier: open, customer spoke last, waiting
        at least the tier's ``after``; at most once per dedup window per chat
        and tier.  Costs the due chats only.  Returns the alerts sent."""
        alerts: list[SlaAlert] = []
        for tier in self.settings.sla_tiers:
            cutoff = self.now() - tier.after
            for chat in await self.ports.chats.sla_due(cutoff, limit=_SLA_BATCH):
                alert = await self._alert(chat, tier, cutoff)
                if alert is not None:
                    alerts.append(alert)
        return alerts

    async def _alert(self, chat: Chat, tier: SlaTier, cutoff: datetime) -> SlaAlert | None:
        key = dedup_key(chat.id, tier.name)
        if not await self.ports.dedup.claim(key, tier.dedup_ttl):
            return None
        # Re-read: the chat may have been answered or resolved since the query.
        current = await self.ports.chats.get(chat.id)
        if (
            current is None
            or current.is_resolved
            or current.last_interaction_by is not Interlocutor.CUSTOMER
            or current.last_incoming_message is None
            or current.last_incoming_message > cutoff
        ):
            await self.ports.dedup.release(key)
            return None
        now = self.now()
        assert current.last_incoming_message is not None
        waited = (now - current.last_incoming_message).total_seconds()
        if tier.recipient:
            message = render(
                self.settings.sla_alert_template,
                tier=tier.name,
                chat_id=current.id,
                customer_name=current.customer_name,
                customer_id=current.customer_id,
                customer_type=current.customer_type,
                waited_minutes=int(waited // 60),
                assigned_executive_id=current.assigned_executive_id or "nobody",
            )
            try:
                await self.ports.sender.send_text(tier.recipient, message)
            except DeliveryError:
                logger.exception("SLA alert for chat %s could not be delivered", current.id)
                await self.ports.dedup.release(key)
                return SlaAlert(current.id, tier.name, tier.recipient, waited, now, False)
        await self.publish(events.sla_alert(current, tier.name, waited, tier.recipient, now))
        return SlaAlert(current.id, tier.name, tier.recipient, waited, now, True)
