"""Chat listing for "My chats / All chats", and the dashboard counters."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from .._models import (
    UNASSIGNED,
    Chat,
    ChatPage,
    ChatQuery,
    ChatStatusFilter,
    Interlocutor,
    Rating,
    ResolutionEntry,
    TypeCounters,
)
from .._validation import choice, identifier, integer, text
from ._base import Service


@attrs.frozen
class DashboardCounters:
    """Counters per customer type, and their sums."""

    by_type: dict[str, TypeCounters]
    open: int
    unassigned: int
    awaiting: int


class ListingService(Service):
    async def get_chat(self, chat_id: str) -> Chat:
        return await self.load_chat(self.chat_id(chat_id))

    async def fetch_all_chats(
        self,
        *,
        status: str | ChatStatusFilter | None = None,
        customer_type: str | None = None,
        search: str | None = None,
        tag: str | None = None,
        sender: str | Interlocutor | None = None,
        assigned_executive_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> ChatPage:
        """Chats matching every given filter, latest activity first, paged.

        Args:
            status: ``"open"``, ``"resolved"`` or ``"all"`` (default).
            customer_type: one customer type.
            search: literal text (never a pattern) in the customer's name,
                number or the last message; case-insensitive.
            tag: chats carrying this tag.
            sender: who spoke last, ``"Customer"`` or ``"Executive"``.
            assigned_executive_id: an executive id ("My chats"), or
                ``"unassigned"``.
            limit: page size, 1 to ``Settings.max_page_size``.
            offset: how many matches to skip.
        """
        s = self.settings
        size = s.default_page_size if limit is None else limit
        query = ChatQuery(
            status=ChatStatusFilter.ALL
            if status is None
            else choice("status", status, ChatStatusFilter),
            customer_type=None
            if customer_type is None
            else identifier("customer_type", customer_type, max_length=s.max_id_length),
            search=None
            if search is None
            else text("search", search, max_length=s.max_search_length, allow_empty=True) or None,
            tag=None if tag is None else text("tag", tag, max_length=s.max_tag_length),
            sender=None if sender is None else choice("sender", sender, Interlocutor),
            assigned_executive_id=None
            if assigned_executive_id is None
            else identifier(
                "assigned_executive_id", assigned_executive_id, max_length=s.max_id_length
            ),
            limit=integer("limit", size, minimum=1, maximum=s.max_page_size),
            offset=integer("offset", offset, minimum=0),
        )
        return await self.ports.chats.query(query)

    async def get_counters(self) -> DashboardCounters:
        """Open, unassigned and awaiting chats per customer type (no scan)."""
        by_type = await self.ports.chats.type_counters()
        return DashboardCounters(
            by_type=by_type,
            open=sum(c.open for c in by_type.values()),
            unassigned=sum(c.unassigned for c in by_type.values()),
            awaiting=sum(c.awaiting for c in by_type.values()),
        )

    async def recount(self) -> DashboardCounters:
        """Rebuild every counter from the chats; returns the new counters."""
        await self.ports.chats.recount()
        return await self.get_counters()

    async def get_ratings(self, chat_id: str) -> Sequence[Rating]:
        return await self.ports.ratings.for_chat(self.chat_id(chat_id))

    async def get_resolutions(
        self, *, chat_id: str | None = None, executive_id: str | None = None, limit: int = 100
    ) -> Sequence[ResolutionEntry]:
        return await self.ports.resolutions.entries(
            chat_id=None if chat_id is None else self.chat_id(chat_id),
            executive_id=None if executive_id is None else self.executive_id(executive_id),
            limit=integer("limit", limit, minimum=1, maximum=10_000),
        )


__all__ = ["UNASSIGNED", "DashboardCounters", "ListingService"]
