"""The documentation is tested: every Python example runs, and the reference
tables match the code.

Conventions (also in docs/contributing.md):

* Every fenced ```` ```python ```` block of every ``docs/**/*.md`` page (and of
  README.md) runs.  The blocks of one page run in order in one namespace, so a
  page imports once in its first block.
* Async examples define ``async def main()`` and end with ``anyio.run(main)``,
  as a reader would run them.  The test runs every page twice, with
  ``anyio.run`` bound to asyncio and to trio.
* Time passes through a ``ManualClock``: examples never sleep.
* A block that needs something the plain test run may not have is preceded by
  an HTML comment ``<!-- requires: redis -->`` (comma-separated names, see
  ``REQUIREMENTS``); it is skipped, with the reason, unless that is available.
  Skipped blocks are still compiled.
* ```` ```pycon ````, ```` ```text ```` and other languages are not run.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

import smartchat_core
from smartchat_core import (
    EVENT_NAMES,
    SEED_SLA_TIERS,
    AsyncSmartChat,
    Chat,
    Event,
    Executive,
    Rating,
    Settings,
    SlaTier,
)
from smartchat_core.testing import ManualClock, RecordingPublisher, RecordingSender

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# --------------------------------------------------------------------- parsing

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
_REQUIRES = re.compile(r"^\s*<!--\s*requires:\s*(?P<names>[\w ,.-]+?)\s*-->\s*$")


@attrs.frozen
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int
    """1-based line of the opening fence."""
    language: str
    code: str
    requires: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """Every fenced block of ``path``, with the ``requires`` comment before it
    (blank lines between them allowed)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    pending: tuple[str, ...] = ()
    index = 0
    while index < len(lines):
        line = lines[index]
        requires = _REQUIRES.match(line)
        if requires:
            pending = tuple(n.strip() for n in requires["names"].split(",") if n.strip())
            index += 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip():
                pending = ()
            index += 1
            continue
        indent, marker = fence["indent"], fence["fence"]
        language = fence["info"].strip().split(" ")[0].lower() if fence["info"].strip() else ""
        body: list[str] = []
        start = index
        index += 1
        while index < len(lines):
            closing = lines[index]
            if (
                closing.strip().startswith(marker[0] * len(marker))
                and not closing.strip(marker[0]).strip()
            ):
                break
            body.append(closing[len(indent) :] if closing.startswith(indent) else closing)
            index += 1
        found.append(Block(path, start + 1, language, "\n".join(body) + "\n", pending))
        pending = ()
        index += 1
    return found


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks_of(path) if b.language in {"python", "py"}]


def markdown_files() -> list[Path]:
    pages = sorted(DOCS.rglob("*.md"))
    readme = ROOT / "README.md"
    if readme.exists() and python_blocks(readme):
        pages.append(readme)
    return pages


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


PAGES_WITH_CODE = [p for p in markdown_files() if python_blocks(p)]

# --------------------------------------------------------------- requirements

Check = Callable[[pytest.FixtureRequest, pytest.MonkeyPatch, str], None]
"""``check(request, monkeypatch, event_loop)``: return if the requirement is
met (after preparing the environment), or ``pytest.skip`` with the reason."""


def _module(name: str) -> Check:
    def check(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, loop: str) -> None:
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"needs the {name} package")

    return check


def _server(
    fixtures: tuple[str, ...], variable: str, *, module: str, asyncio_only: bool = False
) -> Check:
    """The block reads the server's URL from the environment variable
    ``variable``.  The URL comes from the first of ``fixtures`` this test suite
    has (a URL string, or an object with a ``url``); without any of them, or
    without the driver ``module``, the block skips."""

    def check(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, loop: str) -> None:
        if asyncio_only and loop != "asyncio":
            pytest.skip(f"the {module} adapters run under asyncio only")
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs the {module} package")
        for fixture in fixtures:
            try:
                server = request.getfixturevalue(fixture)
            except pytest.FixtureLookupError:
                continue
            monkeypatch.setenv(variable, str(getattr(server, "url", server)))
            return
        pytest.skip(f"needs a server: none of the fixtures {fixtures} is in this test suite")

    return check


REQUIREMENTS: dict[str, Check] = {
    "redis": _server(("redis_server", "redis_url"), "REDIS_URL", module="redis",
                     asyncio_only=True),
    "mongodb": _server(("mongo_url", "mongodb_url"), "MONGODB_URL", module="pymongo"),
    "mongomock": _module("mongomock"),
    "fastapi": _module("fastapi"),
    "flask": _module("flask"),
    "httpx": _module("httpx"),
    "httpx2": _module("httpx2"),
}  # fmt: skip
"""What a ``<!-- requires: ... -->`` comment may name, and how it is met."""


def test_requirements_are_known() -> None:
    unknown = {
        (block.where, name)
        for page in markdown_files()
        for block in python_blocks(page)
        for name in block.requires
        if name not in REQUIREMENTS
    }
    assert not unknown, f"unknown requirements: {sorted(unknown)}"


def test_every_python_block_compiles() -> None:
    for page in markdown_files():
        for block in python_blocks(page):
            try:
                compile(block.code, block.where, "exec", dont_inherit=True)
            except SyntaxError as exc:  # pragma: no cover - reported
                pytest.fail(f"{block.where}: {exc}")


def test_examples_never_sleep() -> None:
    """Time passes through ManualClock in the examples, never real sleeps."""
    for page in markdown_files():
        for block in python_blocks(page):
            for node in ast.walk(ast.parse(block.code)):
                if isinstance(node, ast.Attribute) and node.attr == "sleep":
                    owner = node.value
                    name = owner.id if isinstance(owner, ast.Name) else ""
                    assert name not in {"time", "anyio", "asyncio", "trio"}, (
                        f"{block.where}: examples use a ManualClock, not {name}.sleep"
                    )


# ------------------------------------------------------------------- running


@pytest.mark.parametrize("loop_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=_page_id)
def test_examples_run(
    page: Path,
    loop_backend: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page's Python blocks, in order, in one namespace."""
    monkeypatch.setattr(anyio, "run", functools.partial(anyio.run, backend=loop_backend))
    namespace: dict[str, Any] = {"__name__": "__main__"}
    skipped: list[str] = []
    for block in python_blocks(page):
        try:
            for name in block.requires:
                REQUIREMENTS[name](request, monkeypatch, loop_backend)
        except pytest.skip.Exception as exc:
            skipped.append(f"{block.where}: {exc.msg}")
            continue
        code = compile(block.code, block.where, "exec", dont_inherit=True)
        try:
            exec(code, namespace)
        except Exception as exc:
            line = _markdown_line(exc, block)
            raise AssertionError(f"the example at {line} failed: {exc!r}") from exc
    if skipped and len(skipped) == len(python_blocks(page)):
        pytest.skip("; ".join(skipped))


def _markdown_line(exc: BaseException, block: Block) -> str:
    """``path:line`` of the Markdown line where the example failed."""
    line = None
    traceback = exc.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == block.where:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    if line is None:
        return block.where
    return f"{block.path.relative_to(ROOT)}:{block.line + line}"


# --------------------------------------------------- the configuration table


def _table_rows(path: Path, heading: str) -> list[list[str]]:
    """The rows of the first pipe table after ``heading`` (cells stripped)."""
    text = path.read_text(encoding="utf-8")
    start = text.index(heading)
    rows: list[list[str]] = []
    started = False
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in _split_row(line)]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif started:
            break
    return rows[1:]  # without the header


def _split_row(line: str) -> list[str]:
    """Split a Markdown table row on ``|`` outside code spans."""
    cells, current, in_code = [], "", False
    for char in line.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(current)
            current = ""
        else:
            current += char
    cells.append(current)
    return cells


def _code(cell: str) -> str:
    match = re.fullmatch(r"`(.*)`", cell.strip())
    assert match, f"expected one code span, got {cell!r}"
    return match[1]


CONFIGURATION = DOCS / "reference" / "configuration.md"


def test_configuration_reference_lists_every_setting_with_its_default() -> None:
    rows = _table_rows(CONFIGURATION, "## Every setting")
    documented = {_code(row[0]): row for row in rows}
    fields = {field.name: field for field in attrs.fields(Settings)}
    assert list(documented) == list(fields), "the table lists the fields in code order"
    names = {"timedelta": timedelta, "SEED_SLA_TIERS": SEED_SLA_TIERS, "SlaTier": SlaTier}
    for name, row in documented.items():
        default = fields[name].default
        assert eval(_code(row[2]), names) == default, f"default of {name}"
        type_hint = _code(row[1]).replace(" ", "")
        code_hint = str(fields[name].type).replace(" ", "")
        assert type_hint == code_hint, f"type of {name}: {type_hint} != {code_hint}"


def test_configuration_reference_lists_the_seed_tiers() -> None:
    rows = _table_rows(CONFIGURATION, "## The seed's SLA tiers")
    assert [_code(r[0]) for r in rows] == [t.name for t in SEED_SLA_TIERS]
    for row, tier in zip(rows, SEED_SLA_TIERS, strict=True):
        assert eval(_code(row[1]), {"timedelta": timedelta}) == tier.after
        assert eval(_code(row[2]), {"timedelta": timedelta}) == tier.dedup_ttl


# ------------------------------------------------------- the events reference

EVENTS = DOCS / "reference" / "events.md"
_EVENT_HEADING = re.compile(r"^## `(?P<name>\w+)`\s*$", re.MULTILINE)
_ROOMS = re.compile(r"^\*\*Rooms:\*\*(?P<rooms>.*)$", re.MULTILINE)


@attrs.frozen
class DocumentedEvent:
    name: str
    rooms: tuple[str, ...]
    """Room templates, e.g. ``executive:{executive_id}``; a template whose
    fields are ``None`` in the payload is not a room of that event."""
    fields: tuple[str, ...]


def documented_events() -> dict[str, DocumentedEvent]:
    text = EVENTS.read_text(encoding="utf-8")
    headings = list(_EVENT_HEADING.finditer(text))
    found: dict[str, DocumentedEvent] = {}
    for index, heading in enumerate(headings):
        end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
        section = text[heading.start() : end]
        rooms_line = _ROOMS.search(section)
        assert rooms_line, f"{heading['name']}: no **Rooms:** line"
        rooms = tuple(re.findall(r"`([^`]+)`", rooms_line["rooms"]))
        rows = _table_rows_in(section)
        found[heading["name"]] = DocumentedEvent(
            heading["name"], rooms, tuple(_code(row[0]) for row in rows)
        )
    return found


def _table_rows_in(section: str) -> list[list[str]]:
    rows = [
        [c.strip() for c in _split_row(line)]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    return [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]


def _lookup(payload: dict[str, Any], dotted: str) -> Any:
    value: Any = payload
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def expected_rooms(
    doc: DocumentedEvent, payload: dict[str, Any], context: dict[str, Any]
) -> set[str]:
    rooms = set()
    for template in doc.rooms:
        fields = re.findall(r"\{([\w.]+)\}", template)
        values = {
            f: _lookup(payload, f) if f in doc.fields or "." in f else context.get(f)
            for f in fields
        }
        if any(v is None for v in values.values()):
            continue
        room = template
        for field_name, value in values.items():
            room = room.replace("{" + field_name + "}", str(value))
        rooms.add(room)
    return rooms


async def _emit_every_event(clock: ManualClock, publisher: RecordingPublisher) -> None:
    """A day at the desk that emits every event at least once, with and
    without the optional rooms."""
    settings = Settings(
        sla_tiers=(SlaTier("alert", after=timedelta(minutes=3), recipient="+910000000001"),)
    )
    sender = RecordingSender()
    async with AsyncSmartChat.in_memory(
        settings=settings, clock=clock, sender=sender, publisher=publisher
    ) as desk:
        await desk.register_executive("e1", name="Asha", customer_types={"retail"})
        await desk.register_executive("e2", name="Bela", customer_types={"retail"})
        waiting = await desk.receive_customer_message(
            customer_id="+919800000009", customer_name="Wait", customer_type="retail", text="hi"
        )  # nobody online: chat_message without an executive room
        await desk.set_executive_status("e1", "online")  # executive_status; chat_assigned
        chat = await desk.receive_customer_message(
            customer_id="+919800000001", customer_name="Ravi", customer_type="retail", text="hi"
        )
        clock.advance(timedelta(minutes=4))
        await desk.run_sla_check()  # sla_alert
        await desk.send_executive_message(chat.id, executive_id="e1", text="hello")
        await desk.apply_tag(chat.id, "vip")  # tag_updated added
        await desk.remove_tag(chat.id, "vip")  # tag_updated removed
        await desk.set_executive_status("e2", "online")
        await desk.set_executive_status("e1", "offline")  # chat_reassigned e1 -> e2
        await desk.set_executive_status("e2", "offline")  # chat_reassigned e2 -> nobody
        await desk.set_executive_status("e2", "online")
        await desk.resolve_chat(chat.id)  # chat_resolved
        await desk.rate_chat(chat.id, score=5)  # chat_rated
        await desk.resolve_chat(waiting.id)


def test_events_reference_matches_the_emitted_events() -> None:
    documented = documented_events()
    assert set(documented) == set(EVENT_NAMES), "every event name, and only those"
    clock = ManualClock(datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc))
    publisher = RecordingPublisher()
    anyio.run(_emit_every_event, clock, publisher)
    seen = {event.name for event in publisher.events}
    assert seen == set(EVENT_NAMES), f"the scenario emits every event: missing {EVENT_NAMES - seen}"
    assignees: dict[str, str | None] = {}  # chat id -> assignee, as the events told
    for event in publisher.events:
        doc = documented[event.name]
        assert tuple(event.payload) == doc.fields, f"payload fields of {event.name}"
        if "chat" in event.payload:
            assignees[event.payload["chat_id"]] = event.payload["chat"]["assigned_executive_id"]
        context = {"assignee": assignees.get(event.payload.get("chat_id", ""))}
        assert set(event.rooms) == expected_rooms(doc, event.payload, context), (
            f"rooms of {event.name}: {sorted(event.rooms)}"
        )


@pytest.mark.parametrize(
    ("heading", "model"),
    [("### The chat object", Chat), ("### The executive object", Executive),
     ("### The rating object", Rating)],
)  # fmt: skip
def test_events_reference_lists_the_nested_objects(heading: str, model: type) -> None:
    text = EVENTS.read_text(encoding="utf-8")
    section = text[text.index(heading) :].split("\n#", 1)[0]
    listed = re.findall(r"`(\w+)`", section.split(":", 1)[1])
    fields = [f.name for f in attrs.fields(model)]
    assert [name for name in listed if name in fields] == fields


def test_event_wire_form_is_json() -> None:
    """What the events page promises of the wire form: ``json.dumps`` works."""
    import json

    clock = ManualClock(datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc))
    publisher = RecordingPublisher()
    anyio.run(_emit_every_event, clock, publisher)
    for event in publisher.events:
        wire = event.to_json()
        assert Event.from_json(json.loads(json.dumps(wire))).name == event.name


# ------------------------------------------------------------- API reference


def _api_pages() -> Iterator[tuple[Path, str]]:
    for page in sorted((DOCS / "api").glob("*.md")):
        for match in re.finditer(r"^::: ([\w.]+)", page.read_text(encoding="utf-8"), re.M):
            yield page, match[1]


def test_api_reference_covers_the_public_names() -> None:
    """Every name in ``smartchat_core.__all__`` is rendered on an API page."""
    rendered = {target for _, target in _api_pages()}
    for name in smartchat_core.__all__:
        if name == "__version__":
            continue
        owner = getattr(smartchat_core, name)
        module = getattr(owner, "__module__", "")
        assert f"smartchat_core.{name}" in rendered or module in rendered, (
            f"{name} is not in the API reference"
        )
