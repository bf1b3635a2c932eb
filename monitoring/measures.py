"""The metrics of one segment: from its aggregates (SQL) and its samples (Python).

Each function returns `Measurement`s with the metric's fixed name; a metric that cannot be
computed still comes back, with value None and a note that says why (no cache lookups, no
text logged, no embeddings and no embedder, ...), so `sluice report drift` can tell "fine"
from "not measured".

Every statistic also gets `z`: how many standard errors it stands above what sampling
noise alone gives at these sample sizes (judge.py gates crossings on `min_z`). The
thresholds (AUC 0.55, PSI 0.2, ...) are meant for large windows; at 30 requests a side the
noise alone exceeds some of them (the null PSI of 10 bins is ~0.3 at 30 vs 300), and a
stable stream would page someone every few windows. The nulls:
- rates: the two-proportion z (statistics.rate_change);
- classifier AUC: the Mann-Whitney null, sd = sqrt((n1 + n2 + 1) / (12 n1 n2)) around 0.5;
- PSI (a Jeffreys divergence): N_eff * PSI ~ chi2(k - 1) with 1/N_eff = 1/n1 + 1/n2;
- Jensen-Shannon: the chi-square test of the 2 x k count table (p -> z);
- MMD: its spread over `MMD_PERMUTATIONS` random re-splits of the pooled sample (only
  computed when the value crosses the threshold: it is the one costly null).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from monitoring import statistics
from monitoring.aggregates import SideStats
from monitoring.verdicts import Measurement


def _value(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _rate(metric: str, cur_hits: int, cur_n: int, base_hits: int, base_n: int, empty_note: str) -> Measurement:
    if cur_n == 0 and base_n == 0:
        return Measurement(metric, None, None, 0, 0, empty_note)
    change = statistics.rate_change(cur_hits, cur_n, base_hits, base_n)
    return Measurement(metric, _value(change.current), _value(change.baseline), cur_n, base_n, z=change.z)


def _quantity(metric: str, cur: float | None, base: float | None, cur_n: int, base_n: int,
              empty_note: str) -> Measurement:
    note = empty_note if cur is None and base is None else ""
    return Measurement(metric, cur, base, cur_n, base_n, note)


def _expand(histogram: dict[int, int]) -> np.ndarray:
    if not histogram:
        return np.zeros(0)
    keys = np.fromiter(histogram.keys(), dtype=np.float64, count=len(histogram))
    counts = np.fromiter(histogram.values(), dtype=np.int64, count=len(histogram))
    return np.repeat(keys, counts)


LANGUAGE_CHARS = 400         # a text's language shows in its first sentences; detection cost grows with length
AUC_FOLDS = 3                # 3 fits a segment, not 5: the fits were a run's largest Python cost at 72 segments
MMD_PERMUTATIONS = 20
MMD_PERMUTATION_ROWS = 200   # per side, for the permutation null


def _psi(metric: str, cur: dict[int, int], base: dict[int, int]) -> Measurement:
    current, baseline = _expand(cur), _expand(base)
    value = statistics.psi(current, baseline) if len(current) and len(baseline) else math.nan
    if not math.isfinite(value):
        return Measurement(metric, None, None, len(current), len(baseline), "too few token counts")
    bins = len(statistics.psi_bin_edges(baseline)) + 1        # (-inf, c_1), ..., [c_last, inf)
    scale = 1.0 / len(current) + 1.0 / len(baseline)
    mean, spread = (bins - 1) * scale, math.sqrt(2.0 * (bins - 1)) * scale
    return Measurement(metric, value, None, len(current), len(baseline), z=(value - mean) / spread)


def _js(metric: str, cur: dict[str, float], base: dict[str, float], cur_n: int, base_n: int,
        empty_note: str) -> Measurement:
    value = statistics.jensen_shannon(cur, base) if cur and base else math.nan
    if not math.isfinite(value):
        return Measurement(metric, None, None, cur_n, base_n, empty_note)
    return Measurement(metric, value, None, cur_n, base_n, z=_contingency_z(cur, base))


def _contingency_z(cur: dict[str, float], base: dict[str, float]) -> float:
    """The chi-square test of the two count vectors, as a one-sided z."""
    from scipy.stats import chi2_contingency, norm

    keys = sorted(k for k in set(cur) | set(base) if cur.get(k, 0) + base.get(k, 0) > 0)
    if len(keys) < 2:
        return 0.0
    table = np.array([[cur.get(k, 0) for k in keys], [base.get(k, 0) for k in keys]], dtype=np.float64)
    p_value = float(chi2_contingency(table, correction=False)[1])
    return float(norm.isf(max(p_value, 1e-300)))


def from_aggregates(cur: SideStats, base: SideStats) -> list[Measurement]:
    """Every metric ClickHouse aggregated for this segment."""
    return [
        _rate("error_rate", cur.n_errors, cur.n_all, base.n_errors, base.n_all, "no requests"),
        _rate("guardrail_block_rate", cur.n_blocked, cur.n_all, base.n_blocked, base.n_all, "no requests"),
        _rate("cache_hit_rate", cur.n_hits, cur.n_lookups, base.n_hits, base.n_lookups, "no cache lookups"),
        _rate("empty_answer_rate", cur.n_empty, cur.n_fresh, base.n_empty, base.n_fresh, "no answers"),
        _rate("json_valid_rate", cur.n_json_valid, cur.n_json, base.n_json_valid, base.n_json,
              "no response_format requests"),
        _quantity("latency_p50_ms", cur.latency_p50, base.latency_p50, cur.n_fresh, base.n_fresh, "no answers"),
        _quantity("latency_p95_ms", cur.latency_p95, base.latency_p95, cur.n_fresh, base.n_fresh, "no answers"),
        _quantity("ttft_p50_ms", cur.ttft_p50, base.ttft_p50, cur.n_ttft, base.n_ttft, "no streamed answers"),
        _quantity("cost_per_request", cur.cost_mean, base.cost_mean, cur.n_cost, base.n_cost, "no priced answers"),
        _js("finish_reason_js", cur.finish_reasons, base.finish_reasons, cur.n_fresh, base.n_fresh, "no answers"),
        _psi("prompt_tokens_psi", cur.prompt_tokens, base.prompt_tokens),
        _psi("completion_tokens_psi", cur.completion_tokens, base.completion_tokens),
    ]


def from_texts(cur: Sequence[tuple[str, str]], base: Sequence[tuple[str, str]], *,
               is_refusal: Callable[[list[str]], list[bool]] | None,
               detect_languages: Callable[[list[str]], list[str]] | None, note: str = "",
               wanted: Callable[[str], bool] = lambda metric: True) -> list[Measurement]:
    """refusal_rate, language_js (answers) and prompt_language_js from sampled texts (the
    `wanted` ones: detectors cost time per text)."""
    cur_answers = [c for _, c in cur if c]
    base_answers = [c for _, c in base if c]
    cur_prompts = [p for p, _ in cur if p]
    base_prompts = [p for p, _ in base if p]
    out: list[Measurement] = []
    if not wanted("refusal_rate"):
        pass
    elif is_refusal is None or note:
        out.append(Measurement("refusal_rate", None, None, len(cur_answers), len(base_answers),
                               note or "refusal detector unavailable"))
    else:
        cur_hits, base_hits = sum(is_refusal(cur_answers)), sum(is_refusal(base_answers))
        out.append(_rate("refusal_rate", cur_hits, len(cur_answers), base_hits, len(base_answers),
                         "no answer text logged"))
    for metric, cur_texts, base_texts in (("language_js", cur_answers, base_answers),
                                          ("prompt_language_js", cur_prompts, base_prompts)):
        if not wanted(metric):
            continue
        if detect_languages is None or note:
            out.append(Measurement(metric, None, None, len(cur_texts), len(base_texts),
                                   note or "language detector unavailable"))
            continue
        cur_mix = Counter(detect_languages([t[:LANGUAGE_CHARS] for t in cur_texts]))
        base_mix = Counter(detect_languages([t[:LANGUAGE_CHARS] for t in base_texts]))
        out.append(_js(metric, dict(cur_mix), dict(base_mix), len(cur_texts), len(base_texts),
                       "no text logged"))
    return out


def from_embeddings(cur: np.ndarray | None, base: np.ndarray | None, *, seed: int, max_samples: int,
                    source: str, note: str = "", mmd_threshold: float = 0.0) -> list[Measurement]:
    """prompt_embedding_auc and prompt_embedding_mmd from two samples of prompt vectors."""
    n_cur = 0 if cur is None else len(cur)
    n_base = 0 if base is None else len(base)
    if note or cur is None or base is None or not n_cur or not n_base:
        why = note or "no prompt embeddings"
        return [Measurement(m, None, None, n_cur, n_base, why) for m in ("prompt_embedding_auc",
                                                                          "prompt_embedding_mmd")]
    if cur.shape[1] != base.shape[1]:
        why = f"embedding dimensions differ ({cur.shape[1]} vs {base.shape[1]}): the embedder changed"
        return [Measurement(m, None, None, n_cur, n_base, why) for m in ("prompt_embedding_auc",
                                                                          "prompt_embedding_mmd")]
    auc = statistics.classifier_auc(cur, base, seed=seed, max_samples=max_samples, folds=AUC_FOLDS)
    distance = statistics.mmd(cur, base, seed=seed, max_samples=max_samples)
    n1, n2 = min(n_cur, max_samples), min(n_base, max_samples)
    auc_z = (auc - 0.5) / math.sqrt((n1 + n2 + 1) / (12.0 * n1 * n2)) if math.isfinite(auc) else None
    return [Measurement("prompt_embedding_auc", _value(auc), None, n_cur, n_base, source, z=auc_z),
            Measurement("prompt_embedding_mmd", _value(distance), None, n_cur, n_base, source,
                        z=_MmdNull(cur, base, seed).z(distance) if _value(distance) and distance > mmd_threshold
                        else None)]


class _MmdNull:
    """MMD of random re-splits of the pooled sample: what the statistic is without drift."""

    def __init__(self, cur: np.ndarray, base: np.ndarray, seed: int) -> None:
        self._cur, self._base, self._seed = cur, base, seed

    def z(self, observed: float) -> float:
        rng = random.Random(self._seed)
        cur = self._cur[: MMD_PERMUTATION_ROWS]
        base = self._base[: MMD_PERMUTATION_ROWS]
        pooled = np.vstack([cur, base])
        nulls = []
        for _ in range(MMD_PERMUTATIONS):
            order = list(range(len(pooled)))
            rng.shuffle(order)
            left, right = pooled[order[: len(cur)]], pooled[order[len(cur):]]
            nulls.append(statistics.mmd(left, right, seed=self._seed, max_samples=MMD_PERMUTATION_ROWS))
        mean, spread = float(np.mean(nulls)), float(np.std(nulls)) or 1e-12
        return (observed - mean) / spread
