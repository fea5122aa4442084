"""Background monitors (the seed's ``scheduler.py``): SLA, awaiting tagger,
inactivity.  Each ticks on its interval under the lock port, so across all
processes sharing the lock each interval's tick runs once."""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone

import anyio
import attrs

from .._models import Executive, ExecutiveStatus
from ._base import Service, logger
from .executives import ExecutiveService
from .sla import SlaService
from .tagging import TaggingService

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INACTIVE_BATCH = 1000


@attrs.frozen
class Monitor:
    """One monitor: a name, its interval and the tick it runs."""

    name: str
    interval: timedelta
    tick: Callable[[], Awaitable[object]]


def slot_of(moment: datetime, interval: timedelta) -> int:
    """The index of the interval ``moment`` falls in (intervals are aligned
    on the Unix epoch, so every process agrees)."""
    return math.floor((moment - _EPOCH) / interval)


class MonitorService(Service):
    def __init__(
        self, executives: ExecutiveService, sla: SlaService, tagging: TaggingService
    ) -> None:
        super().__init__(executives.ports)
        self.executives = executives
        self.sla = sla
        self.tagging = tagging
        self.token = uuid.uuid4().hex
        """This process's lock token."""
        self.ticks: dict[str, int] = {}
        """How many ticks of each monitor this process ran."""

    async def run_inactivity_check(self) -> list[Executive]:
        """Online or away executives with no activity for
        ``inactivity_timeout`` go offline (their chats are reassigned).
        Returns them after the change.  Also lets the chat store complete
        changes a crashed process left half-done (:meth:`ChatStore.repair`)."""
        repaired = await self.ports.chats.repair()
        if repaired:
            logger.warning("completed %d chat changes a crashed process left half-done", repaired)
        cutoff = self.now() - self.settings.inactivity_timeout
        changed = []
        for executive in await self.ports.executives.inactive(cutoff, limit=_INACTIVE_BATCH):
            latest = await self.ports.executives.get(executive.id)
            if (
                latest is None
                or latest.status is ExecutiveStatus.OFFLINE
                or latest.last_active_at is None
                or latest.last_active_at > cutoff
            ):
                continue  # became active meanwhile
            logger.info("executive %s inactive since %s: offline", latest.id, latest.last_active_at)
            changed.append(
                await self.executives.set_executive_status(latest.id, ExecutiveStatus.OFFLINE)
            )
        return changed

    def monitors(self) -> tuple[Monitor, ...]:
        s = self.settings
        return (
            Monitor("sla", s.sla_interval, self.sla.run_sla_check),
            Monitor("awaiting", s.awaiting_interval, self.tagging.run_awaiting_check),
            Monitor("inactivity", s.inactivity_interval, self.run_inactivity_check),
        )

    async def run_monitors(self) -> None:
        """Run every monitor until cancelled.

        Each monitor sleeps (on the clock port) until the start of the next
        interval, then takes the lease ``monitor:{name}:{slot}`` for that
        interval; the process that gets it runs the tick, the others skip it.
        A lease is never released early, so a process arriving late in the
        same interval cannot run it twice; a crashed holder only loses its own
        interval.
        """
        async with anyio.create_task_group() as group:
            for monitor in self.monitors():
                group.start_soon(self._loop, monitor, name=f"smartchat monitor {monitor.name}")

    async def _loop(self, monitor: Monitor) -> None:
        clock = self.ports.clock
        while True:
            slot = slot_of(clock.now(), monitor.interval) + 1
            await clock.sleep_until(_EPOCH + monitor.interval * slot)
            await self.tick_once(monitor, slot_of(clock.now(), monitor.interval))

    async def tick_once(self, monitor: Monitor, slot: int) -> bool:
        """Run ``monitor`` for interval ``slot`` if this process wins its
        lease; return whether it ran.  Errors are logged, not raised, so one
        failing tick does not stop the monitor."""
        lease = f"monitor:{monitor.name}:{slot}"
        try:
            if not await self.ports.lock.acquire(lease, self.token, monitor.interval * 2):
                return False
            await monitor.tick()
        except Exception:
            logger.exception("monitor %s failed in interval %s", monitor.name, slot)
            return False
        self.ticks[monitor.name] = self.ticks.get(monitor.name, 0) + 1
        return True
