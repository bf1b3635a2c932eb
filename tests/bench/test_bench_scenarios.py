"""The scenario table: selection, settings, and every Sluice variant having its config."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from bench.__main__ import cpu_list
from bench.machine import cpu_model, mem_total_kib
from bench.run import describe, pinned
from bench.scenarios import SCENARIOS, select
from bench.targets import CONFIGS_DIR


def test_select_keeps_table_order_and_rejects_unknown_keys() -> None:
    assert [s.key for s in select("c, a")] == ["a", "c"]
    assert [s.key for s in select("")] == [s.key for s in SCENARIOS]
    with pytest.raises(ValueError, match="unknown scenario"):
        select("a,z")


def test_every_sluice_variant_has_a_config_and_the_baseline_comes_first() -> None:
    for scenario in SCENARIOS:
        # the first row is the table's baseline: direct, or bare Sluice where the
        # question is what a Sluice feature costs (tracing)
        assert scenario.targets[0] in ("direct", "sluice:bare"), scenario.key
        for name in scenario.targets:
            if name.startswith("sluice:"):
                assert (CONFIGS_DIR / f"{name.partition(':')[2]}.yaml").exists(), name
        assert set(scenario.same_prompt_targets) <= set(scenario.targets)


def test_scenario_settings() -> None:
    by_key = {s.key: s for s in SCENARIOS}
    hits = by_key["b"].settings(1, 0, 16, "wrk")
    assert not hits.unique_prompts and not hits.unique_for("sluice:cache-exact")
    mixed = by_key["d"].settings(1, 0, 16, "wrk")
    assert mixed.mock.latency_ms == 200
    assert mixed.unique_for("sluice:bare") and not mixed.unique_for("sluice:cache-exact")
    paced = by_key["e"].settings(3, 1, 8, "python")
    assert paced.stream and (paced.mock.tokens_per_second, paced.mock.output_tokens) == (50, 32)
    assert (paced.duration, paced.warmup, paced.connections, paced.generator) == (3, 1, 8, "python")
    assert paced.rounds == 1
    tracing = by_key["g"].settings(10, 2, 16, "wrk")
    assert tracing.rounds == 5 and tracing.targets[:2] == ("sluice:bare", "sluice:traced")
    assert tracing.cpus == ()
    one_cpu, spread = by_key["h"].settings(10, 2, 16, "wrk"), by_key["i"].settings(10, 2, 16, "wrk")
    assert (one_cpu.cpus, spread.cpus) == ((0,), ())
    assert one_cpu.targets == spread.targets and "everything on CPU 0" in describe(one_cpu)


def test_pinned_holds_this_process_and_what_it_starts_then_restores() -> None:
    before = os.sched_getaffinity(0)
    with pinned((min(before),)):
        assert os.sched_getaffinity(0) == {min(before)}
        child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                               capture_output=True, text=True, check=True)
        assert child.stdout.strip() == f"[{min(before)}]"
    assert os.sched_getaffinity(0) == before
    with pytest.raises(ValueError, match="not available"), pinned((max(before) + 1,)):
        pass
    assert os.sched_getaffinity(0) == before


def test_cpu_list() -> None:
    assert cpu_list("0") == (0,) and cpu_list("0,1") == (0, 1) and cpu_list("") == ()
    with pytest.raises(argparse.ArgumentTypeError):
        cpu_list("first")


def test_machine_facts_from_proc_text() -> None:
    cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\n"
    assert cpu_model(cpuinfo) == "AMD EPYC 7B13"
    assert cpu_model("processor\t: 0\nBogoMIPS\t: 50.00\n") == ""
    assert mem_total_kib("MemTotal:       24684092 kB\nMemFree:  1 kB\n") == 24684092
