"""docs/design.md stays true where a machine can check it (issue 12 item 7).

The design page is prose, but some of it mirrors the code exactly: the topic layout, the
envelope fields, the section numbers that code comments cite. Those parts are checked
here, so a change to topics.py or envelopes.py that forgets the page fails, and so does a
comment that points at a section that does not exist or at the old design file outside
the repository.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from services.core.envelopes import ChangeEvent, Command, CommandResult
from services.core.topics import ALL_TOPICS, topic_specs

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"

# Where references to the design can live: the code, its tests, manifests, tools, README.
SCANNED_DIRS = ("services", "tests", "deploy", "tools", "bench")
SCANNED_FILES = ("README.md", "Dockerfile", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".properties", ".xml"}

REFERENCE = re.compile(r"docs/design\.md §(\d+)")
SECTION = re.compile(r"^## (\d+)\. (.+)$", re.M)
# The design used to live outside the repository; nothing may point there any more.
OUTSIDE = re.compile(r"\.\./shared|/work/shared|DESIGN\.md")
OLD_STYLE = re.compile(r"\bDESIGN §\d")
# Files allowed to keep an old-style "DESIGN §N" citation: none any more.
OLD_STYLE_PENDING: frozenset[str] = frozenset()
STATE_MACHINE_HEADINGS = ("Side states", "Link states", "Inputs", "Transition table", "Stray copies")


def design() -> str:
    return DESIGN.read_text(encoding="utf-8")


def sections(text: str) -> dict[int, tuple[str, str]]:
    """Section number -> (title, body up to the next numbered section)."""
    found = list(SECTION.finditer(text))
    out: dict[int, tuple[str, str]] = {}
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        n = int(m.group(1))
        assert n not in out, f"section {n} appears twice in docs/design.md"
        out[n] = (m.group(2).strip(), text[m.end() : end])
    return out


def section_titled(title: str) -> str:
    for name, body in sections(design()).values():
        if name == title:
            return body
    raise AssertionError(f"docs/design.md has no numbered section {title!r}")


def scanned_files() -> list[Path]:
    files = [ROOT / f for f in SCANNED_FILES if (ROOT / f).is_file()]
    for d in SCANNED_DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            parts = set(p.relative_to(ROOT).parts)
            if p.is_file() and p.suffix in TEXT_SUFFIXES and not parts & {".venv", "__pycache__"}:
                files.append(p)
    this = Path(__file__).resolve()
    return [p for p in files if p.resolve() != this]


def rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def human_retention(ms: int | None) -> str:
    if ms is None:
        return ""
    day, hour = 24 * 3600 * 1000, 3600 * 1000
    if ms % day == 0:
        n, unit = ms // day, "day"
    elif ms % hour == 0:
        n, unit = ms // hour, "hour"
    else:
        raise AssertionError(f"retention {ms} ms has no wording in docs/design.md; add one here")
    return f"{n} {unit}" + ("" if n == 1 else "s")


def topic_rows(text: str) -> dict[str, list[str]]:
    """Rows of the topic table: `| `exsf.x` | key | partition | value | cleanup |`."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^\| `([a-z.]+)` \|(.*)\|\s*$", line)
        if m and m.group(1).startswith("exsf."):
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def test_sections_are_numbered_one_to_n() -> None:
    numbers = sorted(sections(design()))
    assert numbers == list(range(1, len(numbers) + 1))


def test_every_topic_has_its_row_with_the_cleanup_topics_py_gives_it() -> None:
    rows = topic_rows(section_titled("Topics and keys"))
    assert set(rows) == set(ALL_TOPICS), "the topic table must list exactly the topics of services/core/topics.py"
    for spec in topic_specs(1):
        cleanup = rows[spec.name][-1]
        if spec.compacted:
            assert cleanup == "compact", spec.name
        else:
            retention = human_retention(spec.retention_ms)
            expected = f"delete, {retention}" if retention else "delete"
            assert cleanup.startswith(expected), f"{spec.name}: table says {cleanup!r}, topics.py {expected!r}"


def test_every_topic_name_appears_in_the_design() -> None:
    text = design()
    assert [t for t in ALL_TOPICS if t not in text] == []


@pytest.mark.parametrize("envelope", [ChangeEvent, Command, CommandResult], ids=lambda e: e.__name__)
def test_every_envelope_field_is_described(envelope: type) -> None:
    body = section_titled("Envelopes")
    assert f"**{envelope.__name__}**" in body
    missing = [f.name for f in dataclasses.fields(envelope) if f"`{f.name}`" not in body]
    assert missing == [], f"{envelope.__name__} fields not described in docs/design.md §Envelopes"


def test_every_design_reference_in_the_repository_points_at_a_section() -> None:
    numbers = set(sections(design()))
    refs = [(rel(p), int(n)) for p in scanned_files() for n in REFERENCE.findall(p.read_text(encoding="utf-8"))]
    assert refs, "no file cites docs/design.md §N; the check would prove nothing"
    assert [(f, n) for f, n in refs if n not in numbers] == []


def test_nothing_points_at_the_design_outside_the_repository() -> None:
    outside = [rel(p) for p in scanned_files() if OUTSIDE.search(p.read_text(encoding="utf-8"))]
    assert outside == []


def test_old_style_design_citations_remain_only_where_the_lead_rewrites_them() -> None:
    old = {rel(p) for p in scanned_files() if OLD_STYLE.search(p.read_text(encoding="utf-8"))}
    assert old <= OLD_STYLE_PENDING, f"cite docs/design.md §N instead in: {sorted(old - OLD_STYLE_PENDING)}"


def test_state_machine_section_keeps_its_structure() -> None:
    body = section_titled("Reconciler state machine")
    headings = re.findall(r"^### (.+)$", body, re.M)
    assert headings == list(STATE_MACHINE_HEADINGS)
    assert body.count("```mermaid\nstateDiagram-v2") >= 3  # side, link and stray-copy diagrams
