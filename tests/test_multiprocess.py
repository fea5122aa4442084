"""Monitors across OS processes: each interval's tick runs exactly once.

Four child processes (``subprocess``, a fresh interpreter each) run
``desk.run_monitors()`` on the real redis-server (leases in Redis, the
system clock, intervals of 0.4-0.5 s, chats in memory).  Each child wraps
:meth:`MonitorService.tick_once` and the monitors' tick callables (in the
child only; the library is not changed) so that every tick it runs is
recorded in a Redis list: ``start:<monitor>:<slot>:<pid>`` when the tick body
begins (the lease is held) and ``done:<monitor>:<slot>:<pid>`` when it ran.

1. Over at least 30 intervals of every monitor: no slot ticks twice, and no
   slot is missing between the first and the last one observed.
2. A process is killed with SIGKILL while it holds a lease mid-tick (a
   one-shot flag in Redis makes the next ``awaiting`` tick hang in whichever
   process wins it); that slot is lost (never run twice), and the following
   intervals still tick exactly once each.

Waits are polls against deadlines; nothing sleeps for synchronisation.  The
test skips where redis-server cannot start, and fails instead under
``SMARTCHAT_REQUIRE_SERVERS=1`` (the ``redis_server`` fixture).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from redis_server import RedisServer

pytest.importorskip("redis")

PROCESSES = 4
INTERVALS = {"sla": 0.4, "awaiting": 0.5, "inactivity": 0.5}
ROUNDS = 30
SLOW = "awaiting"

CHILD = r"""
import contextvars, os, sys
from datetime import timedelta

import anyio
import attrs
from redis.asyncio import Redis

from smartchat_core import AsyncSmartChat, Settings
from smartchat_core.services.monitors import MonitorService

url, prefix = sys.argv[1], sys.argv[2]
sla, awaiting, inactivity = (float(x) for x in sys.argv[3:6])
pid = os.getpid()
records, slow_flag = f"{prefix}:ticks", f"{prefix}:slow"
current = contextvars.ContextVar("current")


async def main():
    recorder = Redis.from_url(url)
    original_tick_once = MonitorService.tick_once
    original_monitors = MonitorService.monitors

    async def tick_once(self, monitor, slot):
        token = current.set((monitor.name, slot))
        try:
            ran = await original_tick_once(self, monitor, slot)
        finally:
            current.reset(token)
        if ran:
            await recorder.rpush(records, f"done:{monitor.name}:{slot}:{pid}")
        return ran

    def wrap(monitor):
        async def tick():
            name, slot = current.get()
            await recorder.rpush(records, f"start:{name}:{slot}:{pid}")
            # One-shot: only the first process to tick this monitor after the
            # test set the flag hangs (holding the lease) until it is killed.
            if await recorder.delete(f"{slow_flag}:{name}") == 1:
                await recorder.rpush(records, f"hang:{name}:{slot}:{pid}")
                await anyio.sleep(3600)
            return await monitor.tick()
        return tick

    def monitors(self):
        return tuple(attrs.evolve(m, tick=wrap(m)) for m in original_monitors(self))

    MonitorService.tick_once = tick_once
    MonitorService.monitors = monitors
    settings = Settings(
        redis_prefix=prefix,
        sla_interval=timedelta(seconds=sla),
        awaiting_interval=timedelta(seconds=awaiting),
        inactivity_interval=timedelta(seconds=inactivity),
    )
    async with AsyncSmartChat.from_urls(redis_url=url, settings=settings) as desk:
        await recorder.rpush(records, f"ready:-:0:{pid}")
        await desk.run_monitors()


anyio.run(main, backend="asyncio")
"""


class Children:
    """The child processes; all killed at the end whatever happens."""

    def __init__(self, script: Path, url: str, prefix: str, logs: Path) -> None:
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.logs = logs
        args = [str(INTERVALS[n]) for n in ("sla", "awaiting", "inactivity")]
        for index in range(PROCESSES):
            with (logs / f"child-{index}.log").open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, str(script), url, prefix, *args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            self.processes[process.pid] = process

    def alive(self) -> list[int]:
        return [pid for pid, p in self.processes.items() if p.poll() is None]

    def output(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}"
            for path in sorted(self.logs.glob("child-*.log"))
        )

    def kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, children: Children) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if not children.alive():
            break
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}\n{children.output()}")


class Records:
    """The tick records the children pushed."""

    def __init__(self, client: object, key: str) -> None:
        self.client = client
        self.key = key

    def all(self) -> list[tuple[str, str, int, int]]:
        raw = self.client.lrange(self.key, 0, -1)  # type: ignore[attr-defined]
        parsed = []
        for item in raw:
            kind, name, slot, pid = item.decode().split(":")
            parsed.append((kind, name, int(slot), int(pid)))
        return parsed

    def by_slot(self, kind: str) -> dict[str, dict[int, list[int]]]:
        """monitor -> slot -> pids that recorded ``kind`` for it."""
        found: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        for record_kind, name, slot, pid in self.all():
            if record_kind == kind:
                found[name][slot].append(pid)
        return found


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def test_each_interval_ticks_once_across_processes_even_when_a_holder_dies(
    redis_server: RedisServer, redis_client: object, tmp_path: Path
) -> None:
    prefix = f"sc-mp-{uuid.uuid4().hex[:10]}"
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    records = Records(redis_client, f"{prefix}:ticks")
    children = Children(script, redis_server.url, prefix, tmp_path)
    try:
        wait_for(
            lambda: len([r for r in records.all() if r[0] == "ready"]) == PROCESSES,
            60,
            "the children to start",
            children,
        )

        # 1. Thirty intervals of every monitor, each ticked once.
        def enough() -> bool:
            done = records.by_slot("done")
            return all(len(done.get(name, {})) >= ROUNDS + 2 for name in INTERVALS)

        wait_for(enough, 60 + ROUNDS * max(INTERVALS.values()) * 3, "30 intervals", children)
        done = records.by_slot("done")
        started = records.by_slot("start")
        for name in INTERVALS:
            slots = done[name]
            twice = {slot: pids for slot, pids in slots.items() if len(pids) > 1}
            assert not twice, f"{name}: slots ticked more than once: {twice}"
            assert all(len(pids) == 1 for pids in started[name].values()), started[name]
            first, last = min(slots), max(slots)
            missing = sorted(set(range(first, last + 1)) - set(slots))
            assert not missing, f"{name}: slots with no tick between {first} and {last}: {missing}"
            assert last - first + 1 >= ROUNDS
        # Every process took part (the leases are not stuck with one of them).
        assert len({pid for by in done.values() for pids in by.values() for pid in pids}) > 1

        # 2. Kill the process that holds the lease of an `awaiting` tick mid-tick.
        redis_client.set(f"{prefix}:slow:{SLOW}", "1")  # type: ignore[attr-defined]

        def hung() -> list[tuple[str, str, int, int]]:
            return [r for r in records.all() if r[0] == "hang"]

        wait_for(lambda: bool(hung()), 30, "a tick to hang", children)
        _, _, lost_slot, victim = hung()[0]
        # It holds the lease right now: the lease key is there.
        lease = f"{{{prefix}}}:lock:monitor:{SLOW}:{lost_slot}"
        assert redis_client.exists(lease)  # type: ignore[attr-defined]
        os.kill(victim, signal.SIGKILL)
        children.processes[victim].wait(timeout=10)

        def after_kill() -> bool:
            slots = records.by_slot("done")[SLOW]
            return sum(1 for slot in slots if slot > lost_slot) >= 5

        wait_for(after_kill, 60, "ticks after the kill", children)
        done = records.by_slot("done")
        started = records.by_slot("start")
        slots = done[SLOW]
        assert lost_slot not in slots, "the dead holder's interval was run again"
        assert started[SLOW][lost_slot] == [victim]
        later = sorted(slot for slot in slots if slot > lost_slot)
        assert later[0] == lost_slot + 1, f"the next interval did not tick: {later[:3]}"
        assert later == list(range(later[0], later[0] + len(later))), later
        assert all(len(slots[slot]) == 1 for slot in later), {s: slots[s] for s in later}
        assert victim not in {pid for slot in later for pid in slots[slot]}
        # The other monitors went on too, still once per interval, with no gap
        # except an interval the victim held when it died.
        for name in INTERVALS:
            by_slot = done[name]
            assert all(len(pids) == 1 for pids in by_slot.values()), (name, by_slot)
            lost_by_victim = {
                slot for slot, pids in started[name].items() if pids == [victim]
            } - set(by_slot)
            expected = set(range(min(by_slot), max(by_slot) + 1)) - lost_by_victim
            assert set(by_slot) == expected, (name, sorted(expected - set(by_slot)))
        assert len(children.alive()) == PROCESSES - 1
    finally:
        children.kill_all()
        for key in redis_client.scan_iter(match=f"*{prefix}*"):  # type: ignore[attr-defined]
            redis_client.delete(key)  # type: ignore[attr-defined]
