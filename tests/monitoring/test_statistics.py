"""Drift statistics (monitoring/statistics.py): known answers on synthetic data, and real
MiniLM embeddings of two topics to show the default thresholds separate them."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from monitoring.statistics import (
    AUC_THRESHOLD,
    JS_THRESHOLD,
    MMD_THRESHOLD,
    PSI_THRESHOLD,
    classifier_auc,
    jensen_shannon,
    mmd,
    psi,
    rate_change,
)


def unit_rows(rng: np.random.Generator, n: int, dim: int, shift: float = 0.0) -> np.ndarray:
    rows = rng.normal(size=(n, dim)) + shift
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# -- classifier AUC ---------------------------------------------------------------------------

def test_auc_is_half_for_the_same_distribution_and_high_for_a_shift() -> None:
    rng = np.random.default_rng(1)
    same = [classifier_auc(unit_rows(rng, 600, 32), unit_rows(rng, 600, 32), seed=s) for s in range(3)]
    assert all(abs(v - 0.5) < 0.05 for v in same), same
    shifted = classifier_auc(unit_rows(rng, 600, 32, shift=0.5), unit_rows(rng, 600, 32))
    assert shifted > 0.9


def test_auc_is_deterministic_for_a_seed_and_bounded_in_cost() -> None:
    rng = np.random.default_rng(2)
    current, baseline = unit_rows(rng, 3000, 384, shift=0.02), unit_rows(rng, 3000, 384)
    classifier_auc(current[:50], baseline[:50])  # imports scikit-learn outside the timing
    started = time.perf_counter()
    first = classifier_auc(current, baseline, seed=7)  # subsampled to 1000 a side
    elapsed = time.perf_counter() - started
    assert first == classifier_auc(current, baseline, seed=7)
    assert elapsed < 1.0, f"1000 x 384 a side took {elapsed:.2f} s"  # measured ~0.1 s


def test_auc_does_not_lean_on_unequal_sides() -> None:
    rng = np.random.default_rng(3)
    assert abs(classifier_auc(unit_rows(rng, 100, 16), unit_rows(rng, 900, 16)) - 0.5) < 0.08


# -- MMD --------------------------------------------------------------------------------------

def test_mmd_is_about_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(4)
    same = mmd(unit_rows(rng, 400, 32), unit_rows(rng, 400, 32))
    assert abs(same) < MMD_THRESHOLD / 5
    assert mmd(unit_rows(rng, 400, 32, shift=0.5), unit_rows(rng, 400, 32)) > 3 * MMD_THRESHOLD   # measured 0.082


def test_mmd_of_identical_points_is_zero_and_is_deterministic() -> None:
    point = np.ones((20, 8))
    assert mmd(point, point) == 0.0
    rng = np.random.default_rng(5)
    a, b = unit_rows(rng, 2000, 64), unit_rows(rng, 2000, 64)
    assert mmd(a, b, seed=3) == mmd(a, b, seed=3)


# -- PSI --------------------------------------------------------------------------------------

def test_psi_is_small_for_the_same_lengths_and_large_when_answers_double() -> None:
    rng = np.random.default_rng(6)
    baseline = rng.poisson(120, 2000)
    assert psi(rng.poisson(120, 2000), baseline) < 0.05
    assert psi(rng.poisson(240, 500), baseline) > PSI_THRESHOLD
    assert psi(rng.poisson(60, 500), baseline) > PSI_THRESHOLD
    # a moderate move is between: a 10% longer answer is not "doubled"
    assert psi(rng.poisson(120, 2000), baseline) < psi(rng.poisson(132, 2000), baseline)


def test_psi_on_constant_lengths_sees_a_move_either_way() -> None:
    # a scripted upstream answers with the same token count every time: every quantile ties
    baseline = np.full(200, 12)
    assert psi(np.full(200, 12), baseline) == 0.0
    assert psi(np.full(200, 24), baseline) > PSI_THRESHOLD
    assert psi(np.full(200, 6), baseline) > PSI_THRESHOLD


def test_psi_bins_follow_the_baseline_quantiles() -> None:
    baseline = np.arange(1000)
    # a current window that fills the lowest tenth only; nine empty bins at epsilon, by hand
    current = np.arange(100)
    expected = (1.0 - 0.1) * math.log(1.0 / 0.1) + 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert psi(current, baseline, epsilon=1e-4) == pytest.approx(expected, rel=1e-6)


# -- Jensen-Shannon ---------------------------------------------------------------------------

def test_jensen_shannon_known_values() -> None:
    assert jensen_shannon({"stop": 90, "length": 10}, {"stop": 9, "length": 1}) == pytest.approx(0.0, abs=1e-9)
    assert jensen_shannon({"stop": 5}, {"length": 5}) == pytest.approx(1.0)
    mixed = jensen_shannon({"stop": 50, "length": 50}, {"stop": 100})
    assert 0 < mixed < 1
    assert mixed == pytest.approx(jensen_shannon({"stop": 100}, {"stop": 50, "length": 50}))
    # a key absent on one side counts as zero there
    assert jensen_shannon({"en": 80, "de": 20}, {"en": 100, "de": 0}) == jensen_shannon({"en": 80, "de": 20}, {"en": 100})


def test_jensen_shannon_threshold_sits_above_sampling_noise() -> None:
    rng = np.random.default_rng(8)
    mix = ["stop"] * 90 + ["length"] * 8 + ["content_filter"] * 2

    def window(n: int, choices: list[str]) -> dict[str, float]:
        values, counts = np.unique(rng.choice(choices, n), return_counts=True)
        return dict(zip(values.tolist(), counts.tolist(), strict=True))

    noise = [jensen_shannon(window(200, mix), window(200, mix)) for _ in range(50)]
    assert max(noise) < JS_THRESHOLD  # measured: 95th percentile 0.11, max 0.14 at 200 a side
    truncating = ["stop"] * 60 + ["length"] * 40
    assert jensen_shannon(window(200, truncating), window(200, mix)) > JS_THRESHOLD


# -- rate change ------------------------------------------------------------------------------

def test_rate_change_z_by_hand() -> None:
    change = rate_change(30, 200, 10, 200)
    pooled = 40 / 400
    assert change.current == 0.15 and change.baseline == 0.05
    assert change.z == pytest.approx(0.10 / math.sqrt(pooled * (1 - pooled) * (2 / 200)))
    assert change.p_value < 0.01
    from scipy.stats import norm                              # the p-value is scipy's two-sided one
    for args in ((30, 200, 10, 200), (3, 100, 1, 100), (10, 200, 30, 200), (500, 1000, 5, 1000)):
        got = rate_change(*args)
        assert got.p_value == pytest.approx(2 * norm.sf(abs(got.z)), rel=1e-9, abs=1e-300)
    assert rate_change(0, 100, 0, 100).z == 0.0
    assert math.isnan(rate_change(0, 0, 3, 100).z)


# -- degenerate inputs --------------------------------------------------------------------------

def test_too_few_rows_are_nan_and_malformed_input_raises() -> None:
    rng = np.random.default_rng(9)
    small, big = unit_rows(rng, 5, 8), unit_rows(rng, 100, 8)
    assert math.isnan(classifier_auc(small, big)) and math.isnan(mmd(big, small))
    assert math.isnan(psi(np.arange(5), np.arange(100)))
    assert math.isnan(jensen_shannon({}, {"stop": 3}))
    with pytest.raises(ValueError, match="dimension mismatch"):
        classifier_auc(big, unit_rows(rng, 100, 9))
    with pytest.raises(ValueError, match="2-D"):
        mmd(np.arange(100.0), big)
    with pytest.raises(ValueError, match="NaN"):
        psi(np.array([1.0, np.nan] * 10), np.arange(100))
    with pytest.raises(ValueError, match=">= 0"):
        jensen_shannon({"stop": -1}, {"stop": 3})
    with pytest.raises(ValueError, match="hits"):
        rate_change(5, 3, 0, 10)


# -- real embeddings: two topics through the local MiniLM -------------------------------------

DISHES = ["risotto", "banana bread", "lasagna", "pad thai", "sourdough", "chili", "pancakes", "roast chicken",
          "tiramisu", "miso soup", "paella", "brownies", "curry", "gnocchi", "omelette"]
COOKING = ["How long should I bake {}?", "What can I use instead of eggs in {}?", "Why does my {} turn out dry?",
           "Can I freeze leftover {}?", "What wine goes well with {}?", "How do I make {} without an oven?",
           "Give me a quick recipe for {} for four people.", "What spices make {} taste better?"]
TAX_ITEMS = ["capital gains", "a home office deduction", "self-employment income", "charitable donations",
             "a rental property", "student loan interest", "estimated quarterly payments", "a 401k withdrawal",
             "crypto sales", "dependent care credits", "an inheritance", "foreign income", "medical expenses",
             "a small business vehicle", "stock options"]
TAX = ["How do I report {} on my tax return?", "Is {} deductible this year?", "What forms do I need for {}?",
       "How is {} taxed if I live abroad?", "Can I amend last year's return to include {}?",
       "What records should I keep for {}?", "Does {} change my tax bracket?", "When is the deadline to file for {}?"]
ASIDES = ["", " I'm a beginner.", " Please keep it short.", " Explain step by step."]


def questions(subjects: list[str], templates: list[str], n: int, seed: int) -> list[str]:
    texts = [t.format(s) + aside for s, t, aside in itertools.product(subjects, templates, ASIDES)]
    random.Random(seed).shuffle(texts)
    return texts[:n]


@pytest.fixture(scope="module")
def topic_embeddings(model_cache_dir: Path) -> Iterator[dict[str, np.ndarray]]:
    from cache.embedders import LocalEmbedder

    embedder = LocalEmbedder(model_cache_dir)
    asyncio.run(embedder.start())
    try:
        yield {
            "cooking": np.vstack(embedder.embed_sync(questions(DISHES, COOKING, 400, seed=0))),
            "tax": np.vstack(embedder.embed_sync(questions(TAX_ITEMS, TAX, 100, seed=0))),
        }
    finally:
        asyncio.run(embedder.aclose())


def test_thresholds_separate_a_topic_shift_in_real_embeddings(topic_embeddings: dict[str, np.ndarray]) -> None:
    cooking, tax = topic_embeddings["cooking"], topic_embeddings["tax"]
    assert classifier_auc(tax, cooking[:100]) > 0.95 > AUC_THRESHOLD
    assert mmd(tax, cooking[:100]) > 10 * MMD_THRESHOLD  # measured ~0.23


def test_same_topic_windows_stay_under_the_thresholds(topic_embeddings: dict[str, np.ndarray]) -> None:
    cooking = topic_embeddings["cooking"]
    # 200 a side: the null AUC's spread is ~0.045 at 100 a side, ~0.03 at 200 (docs/monitoring.md)
    assert classifier_auc(cooking[:200], cooking[200:]) < AUC_THRESHOLD
    assert mmd(cooking[:200], cooking[200:]) < MMD_THRESHOLD / 2  # measured null sd ~0.0015 at 200


def test_a_partial_topic_shift_raises_both_statistics(topic_embeddings: dict[str, np.ndarray]) -> None:
    cooking, tax = topic_embeddings["cooking"], topic_embeddings["tax"]
    half_tax = np.vstack([cooking[:100], tax[:100]])  # half the traffic moved to a new topic
    assert classifier_auc(half_tax, cooking[200:]) > AUC_THRESHOLD
    assert mmd(half_tax, cooking[200:]) > MMD_THRESHOLD
