"""Library vs raw on the Redis rotation path, quickly (issue #5's ratio).

Starts its own ``redis-server`` on a free loopback port
(``benchmarks/_servers.py``) and runs the assignment loops of
``bench_scale.py`` on the "redis" stack (Redis rotation, dedup, leases and
publisher; chats in memory), alternating library and raw run after run:

* ``library``: ``desk.assign_chat_round_robin(chat_id)`` over waiting chats
  (``bench_scale.library_assign``);
* ``raw``: one ``LMOVE`` and a dict update per chat (``bench_scale.raw_assign``);
* with ``--local-events``, the library with events published in-process only.

It prints each run, the medians and the median of the per-run ratios, and
the time the publisher still needed after the loop to get the queued events
to Redis (``flush``).  ``--profile`` adds a cProfile of one library loop
(top ``--top`` functions by own time and by cumulative time).

Usage::

    python benchmarks/profile_redis_assign.py                  # 5,000 chats, 3 runs
    python benchmarks/profile_redis_assign.py --count 2000 --repeats 5 --profile

A measuring tool, not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scale
from _servers import redis_server
from bench_scale import (
    Servers,
    build_desk,
    library_assign,
    load_chats,
    raw_assign,
    register_team,
    waiting_chats,
)

from smartchat_core.adapters.redis import RedisEventPublisher


async def library_with_flush(
    servers: Servers, count: int, *, profile: bool, batch_delay: float | None
) -> dict[str, Any]:
    """The library loop of ``bench_scale.library_assign``, timed without and
    with the publisher's flush after it; optionally under cProfile."""
    desk, _ = build_desk("redis", servers)
    if batch_delay is not None and isinstance(desk.ports.publisher, RedisEventPublisher):
        desk.ports.publisher.batch_delay = batch_delay
    result: dict[str, Any] = {}
    async with desk:
        await register_team(desk)
        chats = waiting_chats(count, desk.clock.now())
        await load_chats(desk, chats, servers)
        publisher = desk.ports.publisher
        flush = getattr(publisher, "flush", None)  # absent before the queued publisher
        if flush is not None:
            await flush()
        profiler = cProfile.Profile() if profile else None
        gc.collect()
        started, cpu_started = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        for chat in chats:
            await desk.assign_chat_round_robin(chat.id)
        loop_done, cpu_done = time.perf_counter(), time.process_time()
        if flush is not None:
            await flush()
        flushed = time.perf_counter()
        if profiler is not None:
            profiler.disable()
        result["loop"] = count / (loop_done - started)
        result["with_flush"] = count / (flushed - started)
        result["flush_ms"] = (flushed - loop_done) * 1000
        result["cpu_us"] = (cpu_done - cpu_started) / count * 1e6
        if isinstance(publisher, RedisEventPublisher):
            result["sent"] = getattr(publisher, "sent", None)
            result["batches"] = getattr(publisher, "batches", None)
        result["profiler"] = profiler
    return result


_CPU: list[float] = []
_original_counted = bench_scale._counted


async def _counted_with_cpu(servers: Servers, count: int, body: Any) -> Any:
    """``bench_scale._counted`` that also notes the CPU time of this process
    per assignment (less sensitive to a busy machine than the wall clock)."""

    async def timed() -> None:
        started = time.process_time()
        await body()
        _CPU.append((time.process_time() - started) / count * 1e6)

    return await _original_counted(servers, count, timed)


bench_scale._counted = _counted_with_cpu


def _by_file(profiler: cProfile.Profile, count: int, top: int) -> str:
    """Own time summed per source file: where the time goes, by module."""
    stats: Any = pstats.Stats(profiler)
    files: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():
        parts = Path(filename).parts
        for anchor in ("site-packages", "smartchat_core", "lib"):
            if anchor in parts:
                parts = parts[parts.index(anchor) + (anchor != "smartchat_core") :]
                break
        name = "/".join(parts[-3:]) if parts else filename
        files[name] = files.get(name, 0.0) + tottime
    total = sum(files.values())
    lines = [f"{'µs/assignment':>14} {'share':>6}  file (own time, under the profiler)"]
    for name, seconds in sorted(files.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{seconds / count * 1e6:14.1f} {seconds / total:6.1%}  {name}")
    lines.append(f"{total / count * 1e6:14.1f} {1:6.0%}  total")
    return "\n".join(lines)


def _stats(profiler: cProfile.Profile, sort: str, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    return out.getvalue()


async def run(
    count: int,
    repeats: int,
    local_events: bool,
    profile: bool,
    top: int,
    batch_delay: float | None,
) -> None:
    with redis_server() as redis:
        servers = Servers(redis, None, None, None)
        print(f"redis-server {redis.version()} on 127.0.0.1:{redis.port}; {count:,} chats a run")
        # warm-up (imports, script loading, the first connections)
        await library_assign("redis", servers, min(count, 500))
        await raw_assign("redis", servers, min(count, 500))
        runs: dict[str, list[float]] = {"library": [], "+flush": [], "in-process": [], "raw": []}
        cpu: dict[str, list[float]] = {"library": [], "in-process": [], "raw": []}
        for run_index in range(repeats):
            lib = await library_with_flush(servers, count, profile=False, batch_delay=batch_delay)
            _CPU.clear()
            row = await raw_assign("redis", servers, count)
            runs["library"].append(lib["loop"])
            runs["+flush"].append(lib["with_flush"])
            runs["raw"].append(row.rate)
            cpu["library"].append(lib["cpu_us"])
            cpu["raw"].append(_CPU[-1])
            line = (
                f"run {run_index + 1}: library {lib['loop']:,.0f}/s ({lib['cpu_us']:.0f} µs CPU; "
                f"with the final flush {lib['with_flush']:,.0f}/s, flush {lib['flush_ms']:.1f} ms"
            )
            if lib.get("batches"):
                line += f", {lib['sent']:,} events in {lib['batches']:,} batches"
            line += f"), raw {row.rate:,.0f}/s ({_CPU[-1]:.0f} µs CPU), "
            line += f"ratio {lib['loop'] / row.rate:.2f}"
            if local_events:
                _CPU.clear()
                loc = await library_assign("redis", servers, count, local_events=True)
                runs["in-process"].append(loc.rate)
                cpu["in-process"].append(_CPU[-1])
                line += f"; events in-process {loc.rate:,.0f}/s ({loc.rate / row.rate:.2f})"
            print(line, flush=True)
        print()
        for name, rates in runs.items():
            if rates:
                spent = f", {statistics.median(cpu[name]):.0f} µs CPU" if name in cpu else ""
                print(f"{name:>10}: median {statistics.median(rates):,.0f}/s{spent}")
        for name in ("library", "+flush", "in-process"):
            if runs[name]:
                ratio = statistics.median(
                    a / b for a, b in zip(runs[name], runs["raw"], strict=True)
                )
                print(f"{name}/raw: {ratio:.2f} (median of the per-run ratios)")
        print(f"target (issue #5): library/raw >= {bench_scale.RATIO_TARGET}")
        if profile:
            lib = await library_with_flush(servers, count, profile=True, batch_delay=batch_delay)
            profiler = lib["profiler"]
            print(f"\n## cProfile of one library loop ({count:,} assignments), by own time\n")
            print(_stats(profiler, "tottime", top))
            print("## by cumulative time\n")
            print(_stats(profiler, "cumulative", top))
            print("## own time by source file\n")
            print(_by_file(profiler, count, top))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="assignments a run (5,000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loop (3)")
    parser.add_argument(
        "--local-events", action="store_true", help="also the library with in-process events"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one library loop")
    parser.add_argument(
        "--batch-delay",
        type=float,
        default=None,
        help="the publisher's batch_delay in seconds (default: the publisher's own)",
    )
    parser.add_argument("--top", type=int, default=30, help="functions in the profile (30)")
    args = parser.parse_args(argv)
    anyio.run(
        run,
        args.count,
        args.repeats,
        args.local_events,
        args.profile,
        args.top,
        args.batch_delay,
        backend="asyncio",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
