"""The generated part of docs/benchmarks.md: rendering it and splicing it between its
markers, leaving the hand-written analysis around it as it is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"


@dataclass(frozen=True)
class Table:
    """One scenario's result: a heading, what it measured, and its Markdown table (or why
    the whole scenario could not run)."""

    heading: str
    description: str
    markdown: str


def render_section(date: str, command: str, machine_lines: list[str], tables: list[Table]) -> str:
    """The text that goes between the markers (without them)."""
    parts = [
        "## Latest suite run (generated)",
        (f"Written by `{command}` on {date}; the suite rewrites everything between the "
         "`bench:begin` / `bench:end` markers, so edit around them, not inside."),
        "\n".join(machine_lines),
        ("Columns: requests/s; `vs direct` is requests/s against the direct row of the same table; "
         "p50/p95/p99 of whole responses, from the load generator; `added` is the row's figure minus "
         "direct's; TTFT is time to the first content-bearing SSE event, measured by one extra connection "
         "sending streamed requests alongside the load; errors are non-2xx answers and socket errors; "
         "gateway CPU seconds per 1,000 requests and peak RSS (sum of VmHWM over its process tree) are the "
         "gateway's own, not the mock's."),
    ]
    for table in tables:
        parts += [f"### {table.heading}", table.description, table.markdown]
    return "\n\n".join(parts)


def splice(document: str, section: str, begin: str = BEGIN, end: str = END) -> str:
    """`document` with the text between its markers replaced by `section` (the suite's
    markers unless others are given: `bench.soak` has its own).

    Without markers the section is inserted, with its markers, after the intro: before the
    first `## ` heading (at the end when there is none). A lone or reversed marker raises
    rather than guess which hand-written text may be overwritten.
    """
    block = f"{begin}\n{section.strip()}\n{end}"
    begins, ends = document.count(begin), document.count(end)
    if begins == ends == 1 and document.index(begin) < document.index(end):
        head, _, rest = document.partition(begin)
        _, _, tail = rest.partition(end)
        return head + block + tail
    if begins or ends:
        raise ValueError(f"expected one {begin} before one {end}; found {begins} and {ends}")
    lines = document.splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    head = "".join(lines[:at])
    if head and not head.endswith("\n"):
        head += "\n"
    if head and not head.endswith("\n\n"):
        head += "\n"
    tail = "".join(lines[at:])
    return head + block + ("\n\n" + tail if tail else "\n")


def write_section(path: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
    """Splice `section` into the document at `path` (created if missing), atomically."""
    document = path.read_text() if path.exists() else "# Benchmarks\n"
    updated = splice(document, section, begin, end)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(updated)
    os.replace(temporary, path)
