"""The burst benchmark's worker: one OS process (multiprocessing, spawn) of an
app that receives new customers' first messages.

Each worker builds its own desk with :meth:`AsyncSmartChat.from_urls` on the
shared ``redis-server`` (rotation, SLA dedup, monitor leases, pub/sub
publisher) and either the shared SecantusDB wire server (``mongodb_url``) or
its own in-memory chat store (``mongodb_url=None``), waits for the start
signal, then feeds its share of the customers through
``receive_customer_message`` with ``concurrency`` tasks, while running the
monitors (short intervals: the leases are exercised during the burst).

The result (a dict) goes back through a queue: how many messages, errors,
the time, and for an in-memory store the worker's own view of its chats
(per-executive counts and the customers left without an open assigned chat).
"""

from __future__ import annotations

import time
import traceback
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import anyio

EXECUTIVES = 50
CUSTOMER_TYPES = ("retail", "wholesale", "premium")


def executive_ids() -> list[tuple[str, str]]:
    """(executive id, its one customer type): 17 / 17 / 16."""
    return [(f"x{i:02d}", CUSTOMER_TYPES[i % len(CUSTOMER_TYPES)]) for i in range(EXECUTIVES)]


def customer(index: int) -> tuple[str, str]:
    """(customer id, customer type) of the burst's customer ``index``."""
    return f"+94{index:010d}", CUSTOMER_TYPES[index % len(CUSTOMER_TYPES)]


def burst_settings(prefix: str, monitor_interval: float) -> Any:
    from smartchat_core import Settings

    interval = timedelta(seconds=monitor_interval)
    return Settings(
        redis_prefix=prefix,
        sla_interval=interval,
        awaiting_interval=interval,
        inactivity_interval=interval,
        # Nobody goes offline during the burst: fairness is measured among
        # executives online throughout.
        inactivity_timeout=timedelta(hours=6),
        resolution_message=None,
    )


def make_desk(
    redis_url: str, mongodb_url: str | None, database: str, prefix: str, monitor_interval: float
) -> Any:
    from smartchat_core import AsyncSmartChat
    from smartchat_core.abc import MessageSender

    class NullSender(MessageSender):
        async def send_text(self, to: str, text: str) -> None:
            return None

    return AsyncSmartChat.from_urls(
        mongodb_url=mongodb_url,
        redis_url=redis_url,
        database=database,
        settings=burst_settings(prefix, monitor_interval),
        sender=NullSender(),
    )


async def register_team(desk: Any) -> None:
    """Register the 50 executives (one customer type each) and set them online."""
    for executive_id, customer_type in executive_ids():
        await desk.register_executive(
            executive_id, name=f"Executive {executive_id}", customer_types={customer_type}
        )
        await desk.set_executive_status(executive_id, "online")


async def _run(
    index: int,
    indexes: Sequence[int],
    redis_url: str,
    mongodb_url: str | None,
    database: str,
    prefix: str,
    concurrency: int,
    monitor_interval: float,
    ready: Any,
    go: Any,
) -> dict[str, Any]:
    desk = make_desk(redis_url, mongodb_url, database, prefix, monitor_interval)
    errors: list[str] = []
    async with desk:
        if mongodb_url is None:
            await register_team(desk)  # this process's own executive store
        ready.set()
        await anyio.to_thread.run_sync(go.wait)
        started = time.perf_counter()
        queue = list(reversed(indexes))
        async with anyio.create_task_group() as monitors:
            monitors.start_soon(desk.run_monitors)

            async def feed() -> None:
                while queue:
                    number = queue.pop()
                    customer_id, customer_type = customer(number)
                    try:
                        await desk.receive_customer_message(
                            customer_id=customer_id,
                            customer_name=f"Customer {number}",
                            customer_type=customer_type,
                            text="hello, I need help with my order",
                        )
                    except Exception as exc:  # counted, never hidden
                        errors.append(f"{customer_id}: {type(exc).__name__}: {exc}")

            async with anyio.create_task_group() as feeders:
                for _ in range(concurrency):
                    feeders.start_soon(feed)
            seconds = time.perf_counter() - started
            monitors.cancel_scope.cancel()
        result: dict[str, Any] = {
            "worker": index,
            "messages": len(indexes),
            "errors": errors[:20],
            "error_count": len(errors),
            "seconds": seconds,
            "ticks": dict(desk.monitor_ticks),
        }
        if mongodb_url is None:
            counts: Counter[tuple[str, str]] = Counter()
            by_customer = {chat.customer_id: chat for chat in desk.ports.chats.all_chats()}
            lost = 0
            for number in indexes:
                chat = by_customer.get(customer(number)[0])
                if chat is None or not chat.is_open or chat.assigned_executive_id is None:
                    lost += 1
                else:
                    counts[(chat.customer_type, chat.assigned_executive_id)] += 1
            result["counts"] = [[t, e, n] for (t, e), n in counts.items()]
            result["lost"] = lost
    return result


def worker(
    index: int,
    indexes: Sequence[int],
    redis_url: str,
    mongodb_url: str | None,
    database: str,
    prefix: str,
    concurrency: int,
    monitor_interval: float,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """Process entry point (spawn): run the burst share, put the result."""
    try:
        result = anyio.run(
            _run, index, indexes, redis_url, mongodb_url, database, prefix, concurrency,
            monitor_interval, ready, go, backend="asyncio",
        )  # fmt: skip
    except BaseException:
        result = {"worker": index, "crash": traceback.format_exc()[-3000:]}
        ready.set()
    results.put(result)
