"""`python -m bench inprocess`: one short round through a real gateway process and mock."""

from __future__ import annotations

import pytest

from bench import inprocess


def test_a_short_round_prints_the_table(capsys):
    assert inprocess.main(["--targets", "keys", "--rounds", "1", "--requests", "200", "--callers", "4"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| keys |"))
    cpu = float(row.split("|")[2])
    assert 1 < cpu < 100_000 and "| 100.0% |" in row


def test_an_unknown_target_is_refused():
    with pytest.raises(SystemExit):
        inprocess.main(["--targets", "no-such-config"])
