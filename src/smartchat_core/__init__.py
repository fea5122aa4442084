"""smartchat_core: the routing brain of a WhatsApp customer-support desk.

Round-robin assignment to online executives, SLA tiers, tags (and the
automatic awaiting tag), resolution and ratings, chat listing, live events and
background monitors, over ports with in-memory, MongoDB and Redis adapters.
"""

from ._auth import SYSTEM, Actor, Role
from ._convert import to_json
from ._desk import AsyncSmartChat
from ._errors import (
    AlreadyRatedError,
    BackendError,
    ChatNotFoundError,
    ChatNotResolvedError,
    ChatResolvedError,
    ConflictError,
    DeliveryError,
    ExecutiveNotFoundError,
    InvalidInputError,
    NotAssigneeError,
    NotFoundError,
    PermissionDeniedError,
    SmartChatError,
)
from ._events import DASHBOARD, EVENT_NAMES, Event, chat_room, executive_room
from ._models import (
    UNASSIGNED,
    Chat,
    ChatPage,
    ChatQuery,
    ChatStatusFilter,
    Executive,
    ExecutiveCounters,
    ExecutiveStatus,
    Interlocutor,
    Rating,
    ResolutionEntry,
    TypeCounters,
)
from ._settings import SEED_SLA_TIERS, Settings, SlaTier
from ._sync import SmartChat, SyncSubscription
from .services import Ports, SlaAlert
from .services.listing import DashboardCounters

__version__ = "0.1.0"

__all__ = [
    "DASHBOARD",
    "SYSTEM",
    "EVENT_NAMES",
    "SEED_SLA_TIERS",
    "UNASSIGNED",
    "Actor",
    "AlreadyRatedError",
    "AsyncSmartChat",
    "BackendError",
    "Chat",
    "ChatNotFoundError",
    "ChatNotResolvedError",
    "ChatPage",
    "ChatQuery",
    "ChatResolvedError",
    "ChatStatusFilter",
    "ConflictError",
    "DashboardCounters",
    "DeliveryError",
    "Event",
    "Executive",
    "ExecutiveCounters",
    "ExecutiveNotFoundError",
    "ExecutiveStatus",
    "Interlocutor",
    "InvalidInputError",
    "NotAssigneeError",
    "NotFoundError",
    "PermissionDeniedError",
    "Ports",
    "Rating",
    "ResolutionEntry",
    "Role",
    "Settings",
    "SlaAlert",
    "SlaTier",
    "SmartChat",
    "SmartChatError",
    "SyncSubscription",
    "TypeCounters",
    "__version__",
    "chat_room",
    "executive_room",
    "to_json",
]
