"""Benchmark of the core library on the in-memory backend.

Measures, and prints as markdown tables:

* the monitor tick (``run_sla_check`` + ``run_awaiting_check`` +
  ``run_inactivity_check``, each timed separately and in total, median of
  several runs) with 10^4, 10^5 and 10^6 stored chats of which exactly 100 are
  due for the SLA check and 100 for the awaiting tagger.  The tick must cost
  the due chats, not the stored ones: the script exits with status 1 when the
  tick at the largest size is more than 2x the tick at the smallest;
* assignments per second: customer messages that create and assign chats
  (20 online executives over 3 customer types), and ``assign_chat_round_robin``
  alone on waiting chats.

The large stores are built with :meth:`MemoryChatStore.load` (a bulk insert of
ready chats), not with millions of service calls.  Usage::

    python benchmarks/bench_core.py                  # 10^4, 10^5, 10^6 chats
    python benchmarks/bench_core.py --quick          # fewer runs and messages
    python benchmarks/bench_core.py --sizes 10000,1000000 --output results.md

This is a script, not a test: timings are never asserted in the test suite.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import statistics
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from time import perf_counter
from typing import Any

import anyio
import attrs

import smartchat_core
from smartchat_core import AsyncSmartChat, Chat, Interlocutor, Settings, SlaTier
from smartchat_core.abc import MessageSender
from smartchat_core.adapters.memory import MemoryAlertDedup, MemoryChatStore
from smartchat_core.testing import ManualClock

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
CUSTOMER_TYPES = ("retail", "wholesale", "premium")
EXECUTIVES = 20
DUE = 100
MAX_RATIO = 2.0
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
SETTINGS = Settings(
    sla_tiers=(
        SlaTier("alert", after=timedelta(minutes=3), recipient="+910000000001",
                dedup_ttl=timedelta(seconds=300)),
        SlaTier("escalation", after=timedelta(minutes=10), recipient="+910000000002",
                dedup_ttl=timedelta(seconds=700)),
    )
)  # fmt: skip


class NullSender(MessageSender):
    """Sends nothing: the benchmark measures the library, not a network."""

    async def send_text(self, to: str, text: str) -> None:
        return None


@attrs.frozen
class Options:
    sizes: tuple[int, ...]
    repeats: int
    messages: int
    assign_repeats: int
    output: Path | None


# ------------------------------------------------------------------ the stores


def executive_types(index: int) -> frozenset[str]:
    """Executive ``index`` serves one or two of the customer types."""
    primary = CUSTOMER_TYPES[index % len(CUSTOMER_TYPES)]
    if index % 2 == 0:
        return frozenset({primary, CUSTOMER_TYPES[(index + 1) % len(CUSTOMER_TYPES)]})
    return frozenset({primary})


def serving() -> dict[str, list[str]]:
    """Executive ids serving each customer type."""
    by_type: dict[str, list[str]] = {t: [] for t in CUSTOMER_TYPES}
    for index in range(EXECUTIVES):
        for customer_type in sorted(executive_types(index)):
            by_type[customer_type].append(f"e{index:02d}")
    return by_type


async def new_desk(clock: ManualClock) -> AsyncSmartChat:
    """A desk with the executives registered and online (no chats yet)."""
    desk = AsyncSmartChat.in_memory(settings=SETTINGS, clock=clock, sender=NullSender())
    for index in range(EXECUTIVES):
        executive_id = f"e{index:02d}"
        await desk.register_executive(
            executive_id, name=f"Executive {index}", customer_types=executive_types(index)
        )
        await desk.set_executive_status(executive_id, "online")
    return desk


def generate_chats(total: int, due: int, rng: random.Random) -> Iterator[Chat]:
    """``total`` chats at ``NOW``: exactly ``due`` due for the SLA alert tier
    (the customer has waited 4-6 min), exactly ``due`` due for the awaiting
    tagger (the executive spoke 100-200 s ago), and the rest not due:

    * 94 %: resolved (hours to weeks ago), either side spoke last;
    * 2 %: open, executive spoke last long ago, already tagged awaiting;
    * 2 %: open, executive spoke last within the last 80 s;
    * 2 %: open, customer spoke last within the last 170 s (under the 3 min tier).
    """
    if total < 2 * due:
        raise ValueError(f"need at least {2 * due} chats, got {total}")
    by_type = serving()
    second = timedelta(seconds=1)
    for i in range(total):
        customer_type = CUSTOMER_TYPES[i % len(CUSTOMER_TYPES)]
        team = by_type[customer_type]
        executive = team[(i // len(CUSTOMER_TYPES)) % len(team)]
        created = NOW - timedelta(days=30 * rng.random(), seconds=600)
        base: dict[str, Any] = {
            "id": f"c{i:08d}",
            "customer_id": f"+91{i:010d}",
            "customer_name": f"Customer {i}",
            "customer_type": customer_type,
            "created_at": created,
            "opened_at": created,
            "assigned_executive_id": executive,
            "assigned_at": created,
        }
        if i < due:  # due for the SLA alert tier (not for the 10 min escalation)
            incoming = NOW - timedelta(minutes=4) - i * second
            yield Chat(
                **base,
                last_incoming_message=incoming,
                last_interaction_by=Interlocutor.CUSTOMER,
                last_message="hello? anyone there?",
                last_activity_at=incoming,
            )
            continue
        if i < 2 * due:  # due for the awaiting tagger
            outgoing = NOW - timedelta(seconds=100) - (i - due) * second
            yield Chat(
                **base,
                last_incoming_message=outgoing - timedelta(minutes=1),
                last_outgoing_message=outgoing,
                last_interaction_by=Interlocutor.EXECUTIVE,
                last_message="could you send your order number?",
                last_activity_at=outgoing,
            )
            continue
        kind = i % 50
        if kind == 0:  # open, executive spoke last long ago, tagged awaiting already
            outgoing = NOW - timedelta(seconds=120 + 14 * 86_400 * rng.random())
            yield Chat(
                **base,
                last_incoming_message=outgoing - timedelta(minutes=2),
                last_outgoing_message=outgoing,
                last_interaction_by=Interlocutor.EXECUTIVE,
                last_message="let us know if there is anything else",
                last_activity_at=outgoing,
                tags=("awaiting",),
            )
        elif kind == 1:  # open, the executive answered within the last 80 s
            outgoing = NOW - timedelta(seconds=80 * rng.random())
            yield Chat(
                **base,
                last_incoming_message=outgoing - timedelta(seconds=30),
                last_outgoing_message=outgoing,
                last_interaction_by=Interlocutor.EXECUTIVE,
                last_message="checking that for you",
                last_activity_at=outgoing,
            )
        elif kind == 2:  # open, the customer wrote within the last 170 s
            incoming = NOW - timedelta(seconds=170 * rng.random())
            yield Chat(
                **base,
                last_incoming_message=incoming,
                last_outgoing_message=incoming - timedelta(minutes=5),
                last_interaction_by=Interlocutor.CUSTOMER,
                last_message="thanks, and one more question",
                last_activity_at=incoming,
            )
        else:  # resolved, hours to weeks ago
            resolved = NOW - timedelta(seconds=3600 + 21 * 86_400 * rng.random())
            customer_last = kind % 3 == 0
            incoming = resolved - timedelta(minutes=5 if customer_last else 8)
            outgoing = resolved - timedelta(minutes=7 if customer_last else 4)
            yield Chat(
                **base,
                last_incoming_message=incoming,
                last_outgoing_message=outgoing,
                last_interaction_by=Interlocutor.CUSTOMER
                if customer_last
                else Interlocutor.EXECUTIVE,
                last_message="thank you!" if customer_last else "glad to help",
                last_activity_at=max(incoming, outgoing),
                is_resolved=True,
                resolved_at=resolved,
            )


def waiting_chats(count: int, now: datetime = NOW) -> Iterator[Chat]:
    """Open unassigned chats in the waiting queues, oldest first, the newest a
    second before ``now`` (for assign_chat_round_robin)."""
    for i in range(count):
        at = now - timedelta(seconds=count - i)
        yield Chat(
            id=f"w{i:08d}",
            customer_id=f"+92{i:010d}",
            customer_name=f"Waiting {i}",
            customer_type=CUSTOMER_TYPES[i % len(CUSTOMER_TYPES)],
            created_at=at,
            opened_at=at,
            queued_at=at,
            last_incoming_message=at,
            last_interaction_by=Interlocutor.CUSTOMER,
            last_message="hi",
            last_activity_at=at,
        )


def chat_store(desk: AsyncSmartChat) -> MemoryChatStore:
    store = desk.ports.chats
    if not isinstance(store, MemoryChatStore):
        raise TypeError("the benchmark needs the in-memory chat store")
    return store


# ------------------------------------------------------------------ the tick


@attrs.frozen
class TickRow:
    size: int
    build_seconds: float
    sla: float
    awaiting: float
    inactivity: float
    total: float
    runs: int


@attrs.define
class Store:
    """One desk holding ``size`` chats, ready for ticks."""

    size: int
    clock: ManualClock
    desk: AsyncSmartChat
    build_seconds: float
    samples: list[tuple[float, float, float]] = attrs.Factory(list)


async def build_store(size: int) -> Store:
    clock = ManualClock(NOW)
    desk = await new_desk(clock)
    started = perf_counter()
    gc.disable()  # building a million objects under the collector is quadratic-ish
    try:
        chats = list(generate_chats(size, DUE, random.Random(size)))
        # Latest activity first is the order of the listing indexes: the bulk
        # insert then appends to them instead of inserting at random places.
        chats.sort(key=lambda chat: (chat.last_activity_at, chat.id), reverse=True)
        chat_store(desk).load(chats)
        del chats
    finally:
        gc.enable()
    return Store(size, clock, desk, perf_counter() - started)


async def tick(store: Store) -> tuple[float, float, float]:
    """One monitor tick on ``store``: the time of each check.  Leaves the
    store as it found it (the same chats are due next time)."""
    # Fresh dedup keys, so every run sends the same alerts.
    desk = AsyncSmartChat(attrs.evolve(store.desk.ports, dedup=MemoryAlertDedup(store.clock)))
    t0 = perf_counter()
    alerts = await desk.run_sla_check()
    t1 = perf_counter()
    tagged = await desk.run_awaiting_check()
    t2 = perf_counter()
    offline = await desk.run_inactivity_check()
    t3 = perf_counter()
    if len(alerts) != DUE or len(tagged) != DUE or offline:
        raise AssertionError(
            f"{store.size} chats: expected {DUE} alerts, {DUE} tagged and nobody offline; "
            f"got {len(alerts)}, {len(tagged)}, {len(offline)}"
        )
    for chat in tagged:  # undo the tagging
        await chat_store(store.desk).remove_tag(chat.id, SETTINGS.awaiting_tag)
    return t1 - t0, t2 - t1, t3 - t2


async def measure_ticks(sizes: Sequence[int], repeats: int) -> list[TickRow]:
    """Build every store first, then tick them in turn, run after run, so
    that whatever else the machine does weighs on every size alike."""
    stores = []
    for size in sizes:
        print(f"... building {size:,} chats", file=sys.stderr, flush=True)
        stores.append(await build_store(size))
    # A long-lived process has its chats in the oldest generation: do not make
    # a tick pay for collecting a million fresh objects.
    gc.collect()
    gc.freeze()
    try:
        for run in range(repeats + 1):  # the first run warms up and is not counted
            for store in stores:
                times = await tick(store)
                if run:
                    store.samples.append(times)
    finally:
        gc.unfreeze()
    return [
        TickRow(
            size=store.size,
            build_seconds=store.build_seconds,
            sla=statistics.median(s[0] for s in store.samples),
            awaiting=statistics.median(s[1] for s in store.samples),
            inactivity=statistics.median(s[2] for s in store.samples),
            total=statistics.median(sum(s) for s in store.samples),
            runs=len(store.samples),
        )
        for store in stores
    ]


# ----------------------------------------------------------- assignments/second


@attrs.frozen
class AssignRow:
    scenario: str
    assignments: int
    seconds: float
    spread: int
    """Per customer type, max - min chats of that type per executive serving it."""

    @property
    def per_second(self) -> float:
        return self.assignments / self.seconds


async def spread_of(desk: AsyncSmartChat) -> int:
    """Fairness: per customer type, the largest difference between the numbers
    of chats of that type assigned to the executives serving it (strict
    rotation keeps it at most 1)."""
    counts: dict[tuple[str, str], int] = {}
    for chat in chat_store(desk).all_chats():
        if chat.assigned_executive_id is not None:
            key = (chat.customer_type, chat.assigned_executive_id)
            counts[key] = counts.get(key, 0) + 1
    worst = 0
    for customer_type, team in serving().items():
        numbers = [counts.get((customer_type, e), 0) for e in team]
        worst = max(worst, max(numbers) - min(numbers))
    return worst


async def measure_intake(messages: int) -> AssignRow:
    """Customer messages that create a chat each and assign it."""
    clock = ManualClock(NOW)
    desk = await new_desk(clock)
    customers = [(f"+93{i:010d}", CUSTOMER_TYPES[i % len(CUSTOMER_TYPES)]) for i in range(messages)]
    started = perf_counter()
    for customer_id, customer_type in customers:
        await desk.receive_customer_message(
            customer_id=customer_id,
            customer_name="Customer",
            customer_type=customer_type,
            text="hello, I need help with my order",
        )
    seconds = perf_counter() - started
    counters = await desk.get_counters()
    if counters.open != messages or counters.unassigned != 0:
        raise AssertionError(f"intake: {counters}")
    return AssignRow("receive_customer_message (create + assign)", messages, seconds,
                     await spread_of(desk))  # fmt: skip


async def measure_round_robin(count: int) -> AssignRow:
    """``assign_chat_round_robin`` alone, on chats waiting in the queues."""
    clock = ManualClock(NOW)
    desk = await new_desk(clock)
    chats = list(waiting_chats(count))
    chat_store(desk).load(chats)
    started = perf_counter()
    for chat in chats:
        await desk.assign_chat_round_robin(chat.id)
    seconds = perf_counter() - started
    counters = await desk.get_counters()
    if counters.unassigned != 0:
        raise AssertionError(f"round robin: {counters}")
    return AssignRow("assign_chat_round_robin", count, seconds, await spread_of(desk))


async def median_row(
    measure: Callable[[int], Awaitable[AssignRow]], count: int, repeats: int
) -> AssignRow:
    rows: list[AssignRow] = []
    for _ in range(repeats):
        rows.append(await measure(count))
        gc.collect()
    rows.sort(key=lambda r: r.seconds)
    return rows[len(rows) // 2]


# ------------------------------------------------------------------- reporting


def tick_table(rows: Sequence[TickRow]) -> list[str]:
    lines = [
        "| stored chats | due (SLA / awaiting) | run_sla_check | run_awaiting_check "
        "| run_inactivity_check | tick total | store build |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size:,} | {DUE} / {DUE} | {r.sla * 1e3:.2f} ms | {r.awaiting * 1e3:.2f} ms "
            f"| {r.inactivity * 1e3:.3f} ms | **{r.total * 1e3:.2f} ms** "
            f"| {r.build_seconds:.1f} s |"
        )
    return lines


def assign_table(rows: Sequence[AssignRow]) -> list[str]:
    lines = [
        "| scenario | executives / customer types | assignments | time | assignments/s "
        "| fairness spread |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {EXECUTIVES} / {len(CUSTOMER_TYPES)} | {r.assignments:,} "
            f"| {r.seconds:.2f} s | **{r.per_second:,.0f}** | {r.spread} |"
        )
    return lines


def runs(n: int) -> str:
    return f"median of {n} runs" if n > 1 else "one run"


def power_of_ten(n: int) -> str:
    exponent = len(str(n)) - 1
    return f"10^{exponent}" if n == 10**exponent else f"{n:,}"


# ------------------------------------------------------------------------ main


def parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="Benchmark the monitor tick and assignment rate on the in-memory backend."
    )
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="comma-separated numbers of stored chats (default: %(default)s)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer runs and fewer assignments (a smoke run)"
    )
    parser.add_argument("--output", type=Path, help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    try:
        sizes = tuple(sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s}))
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not sizes or sizes[0] < 2 * DUE:
        parser.error(f"every size must be at least {2 * DUE}")
    return Options(
        sizes=sizes,
        repeats=5 if args.quick else 15,
        messages=2_000 if args.quick else 20_000,
        assign_repeats=1 if args.quick else 3,
        output=args.output,
    )


async def run(options: Options) -> int:
    def say(line: str = "") -> None:
        print(line, flush=True)

    report: list[str] = [
        "# smartchat_core benchmark: in-memory backend",
        "",
        f"smartchat_core {smartchat_core.__version__}, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.machine()}, "
        f"anyio on asyncio.",
        "",
        f"## Monitor tick ({runs(options.repeats)} after one warm-up, sizes in turn)",
        "",
        f"Exactly {DUE} chats are due for the SLA alert tier and {DUE} for the awaiting "
        "tagger; the other chats are mostly resolved, the open ones not due yet. "
        f"{EXECUTIVES} executives online and active. Each run sends {DUE} alerts and tags "
        f"{DUE} chats; `tick total` is the median of the per-run sums.",
        "",
    ]
    for line in report:
        say(line)
    rows = await measure_ticks(options.sizes, options.repeats)
    gc.collect()
    table = tick_table(rows)
    for line in table:
        say(line)
    report += table
    status = 0
    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        ratio = large.total / small.total
        verdict = "OK" if ratio <= MAX_RATIO else "FAIL"
        ratio_line = (
            f"tick({power_of_ten(large.size)}) / tick({power_of_ten(small.size)}) = "
            f"{ratio:.2f} (limit {MAX_RATIO:g}): {verdict}"
        )
        status = 0 if ratio <= MAX_RATIO else 1
    else:
        ratio_line = "only one size: no ratio to check"
    report += ["", ratio_line]
    say()
    say(ratio_line)

    heading = [
        "",
        f"## Assignments per second ({runs(options.assign_repeats)})",
        "",
        f"{EXECUTIVES} online executives, each serving one or two of {len(CUSTOMER_TYPES)} "
        "customer types, no capacity limit; one new customer per message, types in turn.",
        "",
    ]
    for line in heading:
        say(line)
    report += heading
    print("... assignments", file=sys.stderr, flush=True)
    assign_rows = [
        await median_row(measure_intake, options.messages, options.assign_repeats),
        await median_row(measure_round_robin, options.messages, options.assign_repeats),
    ]
    table = assign_table(assign_rows)
    for line in table:
        say(line)
    report += table
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text("\n".join(report) + "\n", encoding="utf-8")
        say()
        say(f"written to {options.output}")
    if status:
        print(
            f"FAIL: the monitor tick grows with the stored chats (ratio above {MAX_RATIO:g})",
            file=sys.stderr,
        )
    return status


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    return anyio.run(run, options)


if __name__ == "__main__":
    sys.exit(main())
