"""Splicing the generated part into docs/benchmarks.md without touching the prose around it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.docs_section import BEGIN, END, Table, render_section, splice, write_section

DOC = """# Benchmarks

Reproduce: `make bench`.

Machine: hand-written.

## About the baseline
Hand-written analysis.

## Results
Old tables.
"""


def test_without_markers_the_section_goes_after_the_intro() -> None:
    spliced = splice(DOC, "## Latest\n\ngenerated 1")
    intro, _, rest = spliced.partition(BEGIN)
    assert intro == "# Benchmarks\n\nReproduce: `make bench`.\n\nMachine: hand-written.\n\n"
    generated, _, tail = rest.partition(END)
    assert generated == "\n## Latest\n\ngenerated 1\n"
    assert tail == "\n\n## About the baseline\nHand-written analysis.\n\n## Results\nOld tables.\n"


def test_with_markers_only_the_part_between_them_changes() -> None:
    first = splice(DOC, "generated 1")
    second = splice(first, "generated 2\n\n| a |")
    assert second == first.replace("generated 1", "generated 2\n\n| a |")
    assert splice(second, "generated 2\n\n| a |") == second  # stable when nothing changed


def test_markers_moved_by_hand_are_respected() -> None:
    document = f"# B\n\nintro\n\n## Analysis\ntext\n\n{BEGIN}\nold\n{END}\n\nafter\n"
    assert splice(document, "new") == f"# B\n\nintro\n\n## Analysis\ntext\n\n{BEGIN}\nnew\n{END}\n\nafter\n"


@pytest.mark.parametrize("document", [f"# B\n{BEGIN}\nno end\n", f"# B\n{END}\n{BEGIN}\n",
                                      f"# B\n{BEGIN}\n{END}\n{BEGIN}\n{END}\n"])
def test_broken_markers_raise_instead_of_overwriting(document: str) -> None:
    with pytest.raises(ValueError, match="bench:begin"):
        splice(document, "new")


def test_a_document_without_headings_gets_the_section_at_the_end() -> None:
    assert splice("# B\nintro", "s") == f"# B\nintro\n\n{BEGIN}\ns\n{END}\n"


def test_write_section_rewrites_the_file(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text(DOC)
    write_section(path, "generated 1")
    write_section(path, "generated 2")
    text = path.read_text()
    assert text.count(BEGIN) == 1 and "generated 2" in text and "generated 1" not in text
    assert text.endswith("## Results\nOld tables.\n")
    assert [p.name for p in tmp_path.iterdir()] == ["benchmarks.md"]  # no temporary left behind


def test_render_section_has_date_command_machine_and_one_table_per_scenario() -> None:
    section = render_section("2026-11-24 09:00 UTC", "python -m bench suite --scenarios a,c",
                             ["- Machine: 2 cores"],
                             [Table("a. Non-streaming", "chat completions, non-stream", "| target |\n| --- |"),
                              Table("c. Streaming", "chat completions, stream", "not run: mock exited")])
    assert "`python -m bench suite --scenarios a,c` on 2026-11-24 09:00 UTC" in section
    assert "- Machine: 2 cores" in section
    assert section.index("### a. Non-streaming") < section.index("| target |") < section.index("### c. Streaming")
    assert section.rstrip().endswith("not run: mock exited")
