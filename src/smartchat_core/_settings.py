"""Settings and SLA tiers, with the defaults of the seed system (Smart Chat V2)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import attrs

__all__ = ["SEED_SLA_TIERS", "Settings", "SlaTier"]


def _positive(_: object, attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ValueError(f"{attribute.name} must be a positive timedelta, got {value!r}")


@attrs.frozen
class SlaTier:
    """One SLA tier: a chat whose customer has waited ``after`` gets an alert.

    Attributes:
        name: the alert type, used in events and in the dedup key
            (``sla::alerted::{chat_id}::{name}``).
        after: how long the customer must have waited (customer spoke last).
        recipient: the WhatsApp number the alert is sent to; ``None`` sends no
            WhatsApp message and only emits the ``sla_alert`` event.
        dedup_ttl: at most one alert per chat and tier within this window.
    """

    name: str
    after: timedelta = attrs.field(validator=_positive)
    recipient: str | None = None
    dedup_ttl: timedelta = attrs.field(default=timedelta(seconds=300), validator=_positive)


SEED_SLA_TIERS: tuple[SlaTier, ...] = (
    SlaTier("alert", after=timedelta(minutes=3), recipient=None, dedup_ttl=timedelta(seconds=300)),
    SlaTier(
        "escalation", after=timedelta(minutes=10), recipient=None, dedup_ttl=timedelta(seconds=700)
    ),
)
"""The seed's tiers: 3 min to the alert group, 10 min to the shift lead."""


def _tiers(value: object) -> tuple[SlaTier, ...]:
    if isinstance(value, SlaTier) or not isinstance(value, (list, tuple)):
        raise TypeError("sla_tiers must be a sequence of SlaTier")
    return tuple(value)


_ALERT_FIELDS: dict[str, object] = {
    "tier": "alert",
    "chat_id": "c1",
    "customer_name": "Ravi",
    "customer_id": "+919800000001",
    "customer_type": "retail",
    "waited_minutes": 4,
    "assigned_executive_id": "e1",
}
_RESOLUTION_FIELDS: dict[str, object] = {
    "chat_id": "c1",
    "customer_name": "Ravi",
    "rating_token": "t",
}


def _template(fields: dict[str, object]) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        try:
            value.format(**fields)
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as error:
            allowed = ", ".join("{" + name + "}" for name in fields)
            raise ValueError(
                f"{attribute.name}: cannot be filled ({error!r}); fields: {allowed}"
            ) from None

    return check


def _check_tiers(_: object, __: object, tiers: tuple[SlaTier, ...]) -> None:
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        raise ValueError(f"SLA tier names must be unique, got {names}")


@attrs.frozen(kw_only=True)
class Settings:
    """Every duration, name, recipient and text the library uses.

    The defaults are the seed's. All durations are :class:`~datetime.timedelta`.
    """

    sla_tiers: tuple[SlaTier, ...] = attrs.field(
        default=SEED_SLA_TIERS, converter=_tiers, validator=_check_tiers
    )
    """SLA tiers, checked by :meth:`AsyncSmartChat.run_sla_check`."""
    sla_alert_template: str = attrs.field(
        default=(
            "SLA {tier}: chat {chat_id} from {customer_name} ({customer_id}) "
            "has waited {waited_minutes} min for a reply"
        ),
        validator=_template(_ALERT_FIELDS),
    )
    """Text of the WhatsApp alert; fields: tier, chat_id, customer_name,
    customer_id, customer_type, waited_minutes, assigned_executive_id."""
    awaiting_tag: str = "awaiting"
    """The tag the awaiting tagger applies; it drives the awaiting counters."""
    awaiting_after: timedelta = attrs.field(default=timedelta(seconds=90), validator=_positive)
    """An open chat whose executive spoke last this long ago is tagged awaiting."""
    inactivity_timeout: timedelta = attrs.field(default=timedelta(minutes=4), validator=_positive)
    """Online or away executives with no activity this long go offline."""
    sla_interval: timedelta = attrs.field(default=timedelta(seconds=60), validator=_positive)
    awaiting_interval: timedelta = attrs.field(default=timedelta(seconds=60), validator=_positive)
    inactivity_interval: timedelta = attrs.field(default=timedelta(seconds=60), validator=_positive)
    resolution_message: str | None = attrs.field(
        default="Your chat has been resolved. Please rate our support from 1 to 5 by replying.",
        validator=_template(_RESOLUTION_FIELDS),
    )
    """Sent to the customer on resolve; ``None`` sends nothing.  Fields:
    ``{chat_id}``, ``{customer_name}``, and ``{rating_token}`` (empty without
    a ``rating_secret``) — e.g. a link to your rating page."""
    rating_secret: str | None = attrs.field(default=None, repr=False)
    """Key of the signed rating tokens; ``None`` disables them."""
    max_tag_length: int = 64
    max_id_length: int = 128
    max_text_length: int = 4096
    preview_length: int = 200
    """Characters of a message kept as the chat's preview."""
    max_search_length: int = 200
    max_comment_length: int = 2000
    default_page_size: int = 20
    max_page_size: int = 200
    chats_collection: str = "v2_chats"
    executives_collection: str = "v2_executives"
    ratings_collection: str = "v2_chat_ratings"
    resolutions_collection: str = "v2_chat_resolve_log"
    rotation_collection: str = "v2_rotation"
    """MongoDB-only deployments: the round-robin rings."""
    dedup_collection: str = "v2_sla_alerts"
    """MongoDB-only deployments: the SLA dedup keys."""
    locks_collection: str = "v2_locks"
    """MongoDB-only deployments: the monitor leases."""
    redis_prefix: str = "smartchat"
    """Prefix of every Redis key except the seed's SLA dedup keys' own part."""

    def with_env(self, environ: Mapping[str, str] | None = None) -> Settings:
        """Return a copy with the seed's environment variables applied.

        ``SLA_ALERT_GROUP_NUMBER`` sets the recipient of the first tier and
        ``SLA_SHIFT_LEAD_NUMBER`` the second, as in the seed.
        """
        env = os.environ if environ is None else environ
        tiers = list(self.sla_tiers)
        for index, variable in enumerate(("SLA_ALERT_GROUP_NUMBER", "SLA_SHIFT_LEAD_NUMBER")):
            if index < len(tiers) and env.get(variable):
                tiers[index] = attrs.evolve(tiers[index], recipient=env[variable])
        return attrs.evolve(self, sla_tiers=tuple(tiers))
