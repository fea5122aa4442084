"""Executive presence, strict round-robin assignment, the waiting queue and
release on offline (the seed's ``executive_service.py``)."""

from __future__ import annotations

import enum
import random
from collections.abc import Collection, Iterable, Sequence
from contextlib import nullcontext, suppress

import anyio
import attrs

from .. import _events as events
from .._errors import BackendError, ChatResolvedError
from .._models import Chat, Executive, ExecutiveStatus
from .._validation import choice, identifier, identifier_set, integer, text
from ..abc import AssignOutcome
from ._base import Ports, Service, in_process, logger

_MAX_RING_WALK = 10_000
_DRAIN_BATCH = 100
_MAX_CONTENDED = 8
"""How often one assignment retries an executive whose last slot it lost
in a tie (both racers stepped back)."""


class _Verdict(enum.Enum):
    OK = "ok"
    GONE = "gone"
    """Not online, or no longer serves the type: out of the ring."""
    FULL = "full"


_UNSHIELDED = nullcontext()


class ExecutiveService(Service):
    """Registration, status, the rotation of each customer type, assignment."""

    def __init__(self, ports: Ports) -> None:
        super().__init__(ports)
        self._capacity_hints: dict[str, int | None] = {}
        """The last ``max_open_chats`` seen per executive (a shortcut to skip
        full executives; never the deciding check)."""
        self._shield_picks = not in_process(ports.chats, ports.executives)
        """Whether a pick's write, check and undo need a cancellation shield:
        not when both stores complete their calls without suspending (the
        in-memory ones), since no cancellation can land between them then."""

    # ------------------------------------------------------------ registration
    async def register_executive(
        self,
        executive_id: str,
        *,
        name: str,
        customer_types: Collection[str],
        max_open_chats: int | None = None,
    ) -> Executive:
        executive_id = self.executive_id(executive_id)
        name = text("name", name, max_length=self.settings.max_id_length)
        types = identifier_set(
            "customer_types", customer_types, max_length=self.settings.max_id_length
        )
        if max_open_chats is not None:
            max_open_chats = integer("max_open_chats", max_open_chats, minimum=0)
        before, after = await self.ports.executives.upsert(
            executive_id, name=name, customer_types=types, max_open_chats=max_open_chats
        )
        if before is not None:
            dropped = before.customer_types - after.customer_types
            for customer_type in dropped:
                await self.ports.rotation.remove(customer_type, executive_id)
            if dropped:
                for chat in await self.ports.chats.open_chats_of(executive_id):
                    if chat.customer_type in dropped:
                        await self._reassign(chat, executive_id)
            if after.status is ExecutiveStatus.ONLINE:
                await self._sync_rotation(after)
                await self.drain_waiting(after.customer_types)
        return await self.with_counters(after)

    async def get_executive(self, executive_id: str) -> Executive:
        """One executive with its counters."""
        executive = await self.load_executive(self.executive_id(executive_id))
        return await self.with_counters(executive)

    async def list_executives(
        self, *, customer_type: str | None = None, status: str | ExecutiveStatus | None = None
    ) -> list[Executive]:
        """Executives (with counters), optionally of one type and status."""
        if customer_type is not None:
            customer_type = self.executive_id(customer_type)
        wanted = None if status is None else choice("status", status, ExecutiveStatus)
        found = await self.ports.executives.list(customer_type=customer_type, status=wanted)
        counters = await self.ports.chats.executive_counters(e.id for e in found)
        return [
            attrs.evolve(
                e,
                open_chats=counters[e.id].open_chats,
                awaiting_chats=counters[e.id].awaiting_chats,
            )
            for e in found
        ]

    async def get_online_executives(self, customer_type: str) -> list[Executive]:
        """Online executives serving ``customer_type`` (the seed's name)."""
        # Required here: None would list every online executive.
        customer_type = identifier(
            "customer_type", customer_type, max_length=self.settings.max_id_length
        )
        return await self.list_executives(
            customer_type=customer_type, status=ExecutiveStatus.ONLINE
        )

    # ------------------------------------------------------------------ status
    async def set_executive_status(
        self, executive_id: str, status: str | ExecutiveStatus
    ) -> Executive:
        """Store the status, keep the rotations in step, emit
        ``executive_status``; online pulls waiting chats, offline releases
        and reassigns the executive's open chats."""
        executive_id = self.executive_id(executive_id)
        wanted = choice("status", status, ExecutiveStatus)
        change = await self.ports.executives.set_status(executive_id, wanted, now=self.now())
        if change is None:
            await self.load_executive(executive_id)  # raises ExecutiveNotFoundError
            raise AssertionError("unreachable")  # pragma: no cover
        try:
            await self._sync_rotation(change.after)
            # A concurrent status change may have overtaken ours between the
            # two writes: re-read and make the rotation follow the latest.
            latest = await self.ports.executives.get(executive_id)
            if latest is not None and latest.status is not change.after.status:
                await self._sync_rotation(latest)
        except BackendError:
            if wanted is not ExecutiveStatus.OFFLINE:
                raise
            # The status is stored: still release the chats (they wait in
            # the queue if the rotation is down), then report the failure.
            # A stale ring member is dropped at its next pick.
            await self.release_and_reassign_chats(executive_id)
            raise
        if change.before.status is not change.after.status:
            await self.publish(
                events.executive_status(
                    await self.with_counters(change.after), change.before.status, self.now()
                )
            )
        if wanted is ExecutiveStatus.OFFLINE:
            await self.release_and_reassign_chats(executive_id)
        elif wanted is ExecutiveStatus.ONLINE:
            await self.drain_waiting(change.after.customer_types)
        return await self.get_executive(executive_id)

    async def set_executive_capacity(
        self, executive_id: str, max_open_chats: int | None
    ) -> Executive:
        """Change ``max_open_chats`` (``None``: unlimited); a larger capacity
        pulls waiting chats."""
        executive = await self.load_executive(self.executive_id(executive_id))
        if max_open_chats is not None:
            max_open_chats = integer("max_open_chats", max_open_chats, minimum=0)
        return await self.register_executive(
            executive.id,
            name=executive.name,
            customer_types=executive.customer_types,
            max_open_chats=max_open_chats,
        )

    async def heartbeat(self, executive_id: str) -> Executive:
        """Mark activity without changing anything else (keeps the inactivity
        monitor away)."""
        executive_id = self.executive_id(executive_id)
        touched = await self.ports.executives.touch(executive_id, now=self.now())
        if touched is None:
            await self.load_executive(executive_id)
        return await self.get_executive(executive_id)

    async def _sync_rotation(self, executive: Executive) -> None:
        rotation = self.ports.rotation
        for customer_type in sorted(executive.customer_types):
            if executive.status is ExecutiveStatus.ONLINE:
                await rotation.add(customer_type, executive.id)
                ring = await rotation.members(customer_type)
                if len(ring) == 1:
                    # Alone in the ring: either the only one online, or the
                    # rotation backend lost its data and the add re-created
                    # the ring with this executive only.  Rebuild from the
                    # executive store so the others are not starved.
                    await self._rebuild_rotation(customer_type, current=ring)
            else:
                await rotation.remove(customer_type, executive.id)

    # --------------------------------------------------------------- assignment
    async def assign_chat_round_robin(self, chat_id: str) -> Chat:
        """Assign an unassigned open chat to the next available executive of
        its customer type; nobody available: it waits in the queue.

        An already assigned chat is returned unchanged.
        """
        chat = await self.load_chat(self.chat_id(chat_id))
        if chat.is_resolved:
            raise ChatResolvedError(chat.id)
        if chat.assigned_executive_id is not None:
            return chat
        return await self._assign(chat, exclude=frozenset())

    async def assign_waiting_chat(self, chat: Chat) -> Chat:
        """Assign a chat the caller has just read from the store (open,
        unassigned) without reading it again; the chat as it ends up."""
        result = await self._assign(chat, exclude=frozenset())
        if result is chat:  # nobody took it: report it as it is now
            current = await self.ports.chats.get(chat.id)
            return current if current is not None else chat
        return result

    async def _assign(
        self,
        chat: Chat,
        *,
        exclude: frozenset[str],
        expected_from: str | None = None,
        redrain: bool = True,
    ) -> Chat:
        """Walk the ring of the chat's type once, assigning to the first
        executive that is online, serves the type and has capacity.

        With ``expected_from`` the chat moves from that executive directly
        (release); with nobody available it is then put back in the queue,
        unless that executive is still online and serves the type (then it
        keeps the chat).

        Each pick is written first and checked after (one read of the
        executive, and a count of its open chats when it has a capacity):
        a status change racing with the write is then always seen, by us or
        by the release that follows it.  A pick that fails the check is
        taken back exactly (:meth:`ChatStore.undo_assign`).
        """
        rotation = self.ports.rotation
        chats = self.ports.chats
        customer_type = chat.customer_type
        seen: set[str] = set()
        rebuilt = False
        contended = 0
        stepped_back = False
        while len(seen) < _MAX_RING_WALK:
            try:
                candidate = await rotation.next(customer_type)
            except BackendError:
                if expected_from is not None:
                    # Releasing and the rotation is down: the chat must not
                    # stay with the executive leaving; it waits in the queue.
                    await chats.unassign(chat.id, expected_from=expected_from, now=self.now())
                raise
            if candidate is None:
                if rebuilt or not await self._rebuild_rotation(customer_type):
                    break
                rebuilt = True
                continue
            if candidate in seen:
                break
            seen.add(candidate)
            if candidate in exclude:
                continue
            if await self._known_full(candidate):
                continue
            # The write, its check and its undo go together: a cancellation
            # (or a failing check) must not leave an unchecked pick behind.
            # (Unshielded with in-process stores, only the rotation's
            # give_back below can be interrupted: that costs fairness, not
            # consistency.)
            now = self.now()
            with anyio.CancelScope(shield=True) if self._shield_picks else _UNSHIELDED:
                result = await chats.assign(
                    chat.id, candidate, expected_from=expected_from, now=now
                )
                if result.outcome is not AssignOutcome.ASSIGNED or result.chat is None:
                    # Someone else took or closed the chat: this pick assigned
                    # nothing, so the executive is next again (fair rotation).
                    await rotation.give_back(customer_type, candidate)
                    return result.chat if result.chat is not None else chat
                assigned = result.chat
                previous = result.previous or chat
                try:
                    verdict = await self._check(candidate, customer_type, expected_from)
                except BaseException:
                    with suppress(BackendError):
                        await chats.undo_assign(assigned, previous)
                    raise
                if verdict is not _Verdict.OK:
                    undone = await chats.undo_assign(assigned, previous)
            if verdict is _Verdict.OK:
                if expected_from is None:
                    await self.publish(events.chat_assigned(assigned, now))
                else:
                    await self.publish(
                        events.chat_reassigned(assigned, expected_from, candidate, now)
                    )
                return assigned
            if not undone.changed:
                # Moved on meanwhile (released because the executive went
                # offline, resolved, ...): whoever moved it owns it now.
                return undone.chat if undone.chat is not None else assigned
            stepped_back = True
            if verdict is _Verdict.GONE:
                await self._drop_from_ring(customer_type, candidate)
            elif contended < _MAX_CONTENDED and await self._has_room(candidate):
                # Over its limit only because another assignment raced us for
                # its last slot, and both stepped back: try it again after a
                # short random pause.
                contended += 1
                seen.discard(candidate)
                await rotation.give_back(customer_type, candidate)
                await anyio.sleep(random.uniform(0.0005, 0.005 * contended))
        # Nobody available.
        if expected_from is None:
            if stepped_back and redrain:
                # While our pick stood the chat was out of the queue: a drain
                # that ran meanwhile (a chat resolved, someone came online)
                # could not see it.  Look at the queue once more.
                await self._drain_type(customer_type, redrain=False)
                current = await chats.get(chat.id)
                return current if current is not None else chat
            return chat
        holder = await self.ports.executives.get(expected_from)
        if (
            holder is not None
            and holder.status is ExecutiveStatus.ONLINE
            and customer_type in holder.customer_types
        ):
            # Released while still online and nobody else can take it: it stays
            # with its executive instead of waiting while someone could answer.
            current = await self.ports.chats.get(chat.id)
            return current if current is not None else chat
        change = await self.ports.chats.unassign(
            chat.id, expected_from=expected_from, now=self.now()
        )
        if change.changed and change.chat is not None:
            await self.publish(events.chat_reassigned(change.chat, expected_from, None, self.now()))
            # Someone may have come online while we walked the ring and drained
            # the queue before the chat joined it: drain once more (our write
            # to the queue precedes this read, theirs to the rotation preceded
            # their read of the queue, so one of us sees the other).
            await self._drain_type(customer_type)
            current = await self.ports.chats.get(chat.id)
            return current if current is not None else change.chat
        return change.chat if change.chat is not None else chat

    async def _rebuild_rotation(self, customer_type: str, *, current: Sequence[str] = ()) -> bool:
        """Rebuild the ring from the executive store when it lacks online
        executives (the rotation backend lost its data, or everyone left).
        True if it has members now."""
        online = await self.ports.executives.list(
            customer_type=customer_type, status=ExecutiveStatus.ONLINE
        )
        if not online:
            return False
        ids = [e.id for e in online]
        if set(ids) != set(current):
            logger.warning("rebuilding the rotation of %r from the executive store", customer_type)
            await self.ports.rotation.replace(customer_type, ids)
        return True

    async def _known_full(self, executive_id: str) -> bool:
        """Skip an executive this process last saw with a capacity when it
        is at it (a count, then a fresh read to confirm: the hint is only a
        shortcut, the check after the write decides)."""
        limit = self._capacity_hints.get(executive_id)
        if limit is None:
            return False
        held = await self._open_chats(executive_id)
        if held < limit:
            return False
        executive = await self.ports.executives.get(executive_id)
        limit = None if executive is None else executive.max_open_chats
        self._capacity_hints[executive_id] = limit
        return limit is not None and held >= limit

    async def _drop_from_ring(self, customer_type: str, executive_id: str) -> None:
        """Take an executive that failed the check out of the ring; if it
        came back meanwhile (its status change added it before our remove),
        put it back."""
        await self.ports.rotation.remove(customer_type, executive_id)
        latest = await self.ports.executives.get(executive_id)
        if (
            latest is not None
            and latest.status is ExecutiveStatus.ONLINE
            and customer_type in latest.customer_types
        ):
            await self.ports.rotation.add(customer_type, executive_id)

    async def _has_room(self, executive_id: str) -> bool:
        limit = self._capacity_hints.get(executive_id)
        if limit is None:
            return False
        return await self._open_chats(executive_id) < limit

    async def _open_chats(self, executive_id: str) -> int:
        return (await self.ports.chats.executive_counters([executive_id]))[executive_id].open_chats

    async def _check(
        self, executive_id: str, customer_type: str, expected_from: str | None
    ) -> _Verdict:
        """May the executive keep the chat just assigned to it?"""
        executive = await self.ports.executives.get(executive_id)
        if (
            executive is None
            or executive.status is not ExecutiveStatus.ONLINE
            or customer_type not in executive.customer_types
        ):
            self._capacity_hints.pop(executive_id, None)
            return _Verdict.GONE
        limit = executive.max_open_chats
        self._capacity_hints[executive_id] = limit
        if limit is None or executive_id == expected_from:
            return _Verdict.OK
        return _Verdict.OK if await self._open_chats(executive_id) <= limit else _Verdict.FULL

    async def _reassign(self, chat: Chat, from_executive: str) -> Chat:
        return await self._assign(
            chat, exclude=frozenset({from_executive}), expected_from=from_executive
        )

    async def release_and_reassign_chats(self, executive_id: str) -> list[Chat]:
        """Move each open chat of the executive to another available executive
        (never back to it), or back to the waiting queue; emits
        ``chat_reassigned`` for each.  Returns the chats after the move."""
        executive_id = self.executive_id(executive_id)
        await self.load_executive(executive_id)
        moved = []
        failure: BackendError | None = None
        for chat in await self.ports.chats.open_chats_of(executive_id):
            try:
                moved.append(await self._reassign(chat, executive_id))
            except BackendError as error:  # e.g. the rotation is down: next chat
                failure = failure or error
        if failure is not None:
            raise failure
        latest = await self.ports.executives.get(executive_id)
        if (
            moved
            and latest is not None
            and latest.status is ExecutiveStatus.ONLINE
            and latest.max_open_chats is not None
        ):
            # Still online with room freed: it may take waiting chats (of its
            # other types, or ones that queued while it was full).
            await self.drain_waiting(latest.customer_types)
        return moved

    async def assign_waiting_chats(self, customer_types: Iterable[str] | None) -> list[Chat]:
        """The public drain: these types, or every type with waiting chats."""
        if isinstance(customer_types, (set, frozenset, list, tuple)) and not customer_types:
            return []
        if customer_types is None:
            counters = await self.ports.chats.type_counters()
            types = [t for t, c in counters.items() if c.unassigned]
        else:
            types = sorted(
                identifier_set(
                    "customer_types", customer_types, max_length=self.settings.max_id_length
                )
            )
        return await self.drain_waiting(types)

    async def drain_waiting(self, customer_types: Iterable[str]) -> list[Chat]:
        """Assign waiting chats of these types, oldest first, while someone
        is available.  Returns the chats assigned."""
        assigned: list[Chat] = []
        for customer_type in sorted(set(customer_types)):
            assigned.extend(await self._drain_type(customer_type))
        return assigned

    async def _drain_type(self, customer_type: str, *, redrain: bool = True) -> Sequence[Chat]:
        assigned: list[Chat] = []
        while True:
            waiting = await self.ports.chats.waiting(customer_type, limit=_DRAIN_BATCH)
            if not waiting:
                return assigned
            progressed = False
            exhausted = len(waiting) < _DRAIN_BATCH
            for chat in waiting:
                result = await self._assign(chat, exclude=frozenset(), redrain=redrain)
                if result.assigned_executive_id is not None and result.is_open:
                    if result.assigned_executive_id != chat.assigned_executive_id:
                        assigned.append(result)
                    progressed = True
                elif result.is_waiting:
                    return assigned  # nobody available for this type
                else:
                    progressed = True  # resolved meanwhile
            if not progressed or exhausted:
                # A chat queued after our read was offered to the rotation
                # by whoever queued it.
                return assigned
