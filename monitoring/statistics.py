"""Two-sample statistics for drift: is the current window distributed like the baseline?

Pure functions over numpy arrays and count maps (no I/O), deterministic for a seed. The
runner pulls bounded samples out of ClickHouse and calls these; each function bounds its
own cost by subsampling, so a caller passing too much data gets a slower-but-bounded run,
never an unbounded one.

Inputs that are malformed (wrong shape, mismatched dimensions, NaN or inf, negative
counts) raise ValueError: that is a caller's bug. Well-formed inputs too small to measure
anything (fewer than `MIN_ROWS` rows on a side, an empty count map) return math.nan: that
is a quiet window, and the runner records "too few samples" rather than a number.

Thresholds below are defaults for the runner's config; docs/monitoring.md has the
measurements they come from (same-topic vs shifted-topic MiniLM embeddings, null
distributions at the sample sizes the runner uses).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Defaults for the runner's thresholds (values above them are drift).
AUC_THRESHOLD = 0.55   # Evidently's default for its classifier embedding-drift method
MMD_THRESHOLD = 0.02   # squared MMD, RBF kernel, median bandwidth: ~30% of traffic on a new topic
PSI_THRESHOLD = 0.2    # the industry rule of thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 shift
JS_THRESHOLD = 0.2     # Jensen-Shannon distance (base 2), see jensen_shannon()

MIN_ROWS = 10          # per side; below it every statistic here is nan

_CV_FOLDS = 5


def _as_matrix(name: str, rows: np.ndarray) -> np.ndarray:
    matrix = np.asarray(rows, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows x dimensions), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return matrix


def _paired_matrices(current: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cur, base = _as_matrix("current", current), _as_matrix("baseline", baseline)
    if cur.shape[1] != base.shape[1]:
        raise ValueError(f"dimension mismatch: current has {cur.shape[1]} columns, baseline {base.shape[1]}")
    return cur, base


def _subsample(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if limit < 1:
        raise ValueError(f"max_samples must be >= 1, got {limit}")
    if len(rows) <= limit:
        return rows
    return rows[rng.choice(len(rows), size=limit, replace=False)]


def classifier_auc(current: np.ndarray, baseline: np.ndarray, *, seed: int = 0, max_samples: int = 1000,
                   folds: int = _CV_FOLDS, regularization: float = 1.0) -> float:
    """ROC-AUC of a logistic regression telling current rows from baseline rows, cross-validated.

    The classifier two-sample test (Evidently's default for embedding drift): if a model
    can tell the windows apart on rows it was not trained on, they differ. 0.5 means it
    cannot (same distribution), 1.0 means perfectly separable; above AUC_THRESHOLD (0.55)
    is drift. Each side is subsampled to `max_samples` rows (seeded), the AUC is the mean
    over `folds` stratified folds of the held-out AUC. Unequal sides are fine: AUC does not
    depend on class balance (`class_weight="balanced"` keeps the model from leaning on it).

    Noise: with no shift the AUC spreads like the Mann-Whitney null, sd about
    sqrt((n1 + n2 + 1) / (12 n1 n2)): measured 0.053 at 100 rows a side (a window crosses
    0.55 about one time in six), 0.027 at 500. 0.55 is a large-sample threshold: small
    windows need a noise gate and consecutive runs (docs/monitoring.md has the figures).
    Returns nan below MIN_ROWS rows on either side.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    cur, base = _paired_matrices(current, baseline)
    if min(len(cur), len(base)) < max(MIN_ROWS, folds):
        return math.nan
    rng = np.random.default_rng(seed)
    cur, base = _subsample(cur, max_samples, rng), _subsample(base, max_samples, rng)
    features = np.vstack([cur, base])
    labels = np.concatenate([np.ones(len(cur), dtype=np.int8), np.zeros(len(base), dtype=np.int8)])
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores: list[float] = []
    for train, test in splitter.split(features, labels):
        # liblinear: 5-10x faster than lbfgs here (measured 0.06 s vs 0.5 s per fit on 1600 x 384).
        model = LogisticRegression(C=regularization, solver="liblinear", class_weight="balanced")
        model.fit(features[train], labels[train])
        scores.append(float(roc_auc_score(labels[test], model.decision_function(features[test]))))
    return float(np.mean(scores))


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(sq, 0.0)


def mmd(current: np.ndarray, baseline: np.ndarray, *, seed: int = 0, max_samples: int = 500) -> float:
    """Squared maximum mean discrepancy (unbiased), RBF kernel with the median-heuristic bandwidth.

    The cheap embedding-drift statistic: no model is trained, one pairwise kernel matrix
    over at most 2 * max_samples rows. The kernel is exp(-d^2 / median(d^2)) over the
    pooled sample's pairwise squared distances, so the value is scale-free and comparable
    across embedders. The unbiased estimate has expectation 0 under "same distribution"
    and can be slightly negative; larger means more different (at most 2). Above
    MMD_THRESHOLD is drift. Measured on MiniLM embeddings: a whole topic replaced gives
    ~0.23, and the value grows with the square of the shifted fraction, so 0.02 is about
    30% of the traffic on a new topic (0.01, a fifth, paged on a stable stream of 60-request
    windows: the permutation null of 20 re-splits is too coarse for a 3-sd gate there); with no shift the sd is 0.003 at 100 rows a side,
    0.0005 at 500 (docs/monitoring.md has the figures).
    Returns nan below MIN_ROWS rows on either side.
    """
    cur, base = _paired_matrices(current, baseline)
    if min(len(cur), len(base)) < MIN_ROWS:
        return math.nan
    rng = np.random.default_rng(seed)
    cur, base = _subsample(cur, max_samples, rng), _subsample(base, max_samples, rng)
    pooled = np.vstack([cur, base])
    distances = _squared_distances(pooled, pooled)
    off_diagonal = distances[~np.eye(len(pooled), dtype=bool)]
    bandwidth = float(np.median(off_diagonal))
    if bandwidth <= 0.0:  # over half the pairs are identical rows: use the spread that is there
        positive = off_diagonal[off_diagonal > 0]
        if positive.size == 0:
            return 0.0  # every row is the same point: no discrepancy at all
        bandwidth = float(positive.mean())
    kernel = np.exp(-distances / bandwidth)
    n, m = len(cur), len(base)
    k_cc, k_bb, k_cb = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    within_current = (k_cc.sum() - np.trace(k_cc)) / (n * (n - 1))
    within_baseline = (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(within_current + within_baseline - 2.0 * k_cb.mean())


def _as_vector(name: str, values: np.ndarray) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float64)
    if vector.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of values, got shape {vector.shape}")
    if not np.isfinite(vector).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return vector


def psi_bin_edges(baseline: np.ndarray, bins: int = 10) -> np.ndarray:
    """The edges between PSI's bins: the baseline's interior quantiles (sorted, unique).

    The bins are (-inf, c_1), [c_1, c_2), ..., [c_last, inf): len(edges) + 1 of them.

    Token counts tie a lot (a scripted upstream answers with the same length every time),
    so duplicate quantiles collapse into fewer bins. When ties pile up at the baseline's
    maximum (it is itself a cut), a cut just above it is added, so that a current window
    entirely above the baseline's range still lands in a bin of its own; the bin below the
    lowest cut does the same for windows below it. Ordinary baselines get plain outer bins
    (-inf, c_1) and [c_last, inf): a separate bin beyond each extreme would turn the odd
    new maximum into a large term of its own (measured: null PSI 0.3 at 100 a side).
    """
    cuts = np.unique(np.quantile(baseline, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    top = float(baseline.max())
    if cuts.size == 0 or cuts[-1] >= top:
        cuts = np.append(cuts[cuts < top], [top, np.nextafter(top, np.inf)])
    return cuts


def _bin_counts(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Counts over (-inf, c_1), [c_1, c_2), ..., [c_last, inf)."""
    index = np.searchsorted(cuts, values, side="right")
    return np.bincount(index, minlength=len(cuts) + 1).astype(np.float64)


def psi(current: np.ndarray, baseline: np.ndarray, *, bins: int = 10, epsilon: float | None = None) -> float:
    """Population stability index of `current` against `baseline` (token counts, lengths).

    PSI = sum over bins of (p_cur - p_base) * ln(p_cur / p_base), with bins at the
    baseline's quantiles (each holds ~1/bins of it; ties handled by psi_bin_edges).
    Empty bins get `epsilon` instead of 0 so the log stays finite; by default half an
    observation of that side (0.5 / n), so one empty bin in a small window costs about
    0.1 rather than the 0.7 a fixed 1e-4 gives (measured: null PSI max 1.0 -> 0.6 at 100
    a side), while a window wholly outside the baseline still scores > 5. 0 is identical;
    > PSI_THRESHOLD (0.2) is the usual "significant shift".

    Noise: PSI is a chi-square-like statistic, its expectation with no shift at all is
    about (bins - 1) * (1/n_current + 1/n_baseline): 0.18 at 100 a side with 10 bins,
    0.1 at 100 against 1000. Small windows need fewer bins or a larger baseline
    (docs/monitoring.md has the measured null quantiles).
    Returns nan below MIN_ROWS values on either side.
    """
    cur, base = _as_vector("current", current), _as_vector("baseline", baseline)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if min(len(cur), len(base)) < MIN_ROWS:
        return math.nan
    cuts = psi_bin_edges(base, bins)
    p_cur = _bin_counts(cur, cuts) / len(cur)
    p_base = _bin_counts(base, cuts) / len(base)
    empty_cur = epsilon if epsilon is not None else 0.5 / len(cur)
    empty_base = epsilon if epsilon is not None else 0.5 / len(base)
    p_cur, p_base = np.where(p_cur > 0, p_cur, empty_cur), np.where(p_base > 0, p_base, empty_base)
    return float(np.sum((p_cur - p_base) * np.log(p_cur / p_base)))


def jensen_shannon(current: Mapping[str, float], baseline: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two categorical count maps.

    For finish-reason and language mixes: {"stop": 930, "length": 70}. Counts or
    proportions, either works (each map is normalised); a key missing from one side counts
    as 0 there. 0 is the same mix, 1 is disjoint categories. This is the distance (the
    square root of the divergence), as scipy returns it. Above JS_THRESHOLD (0.2) is
    drift. Sampling noise is larger than intuition says, because rare categories (2%
    content_filter) swing a lot: measured with no shift, 95th percentile 0.15 at 100
    requests a side, 0.11 at 200, 0.05 at 1000; a stop/length mix going from 90/8 to
    60/40 scores 0.33. Returns nan when either side has no counts at all.
    """
    from scipy.spatial.distance import jensenshannon

    keys = sorted(set(current) | set(baseline))
    p = np.array([float(current.get(k, 0.0)) for k in keys])
    q = np.array([float(baseline.get(k, 0.0)) for k in keys])
    for name, counts in (("current", p), ("baseline", q)):
        if not np.isfinite(counts).all() or (counts < 0).any():
            raise ValueError(f"{name}: counts must be finite and >= 0")
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    return float(min(max(jensenshannon(p / p.sum(), q / q.sum(), base=2), 0.0), 1.0))


@dataclass(frozen=True)
class RateChange:
    current: float    # hits / n in the current window
    baseline: float   # hits / n in the baseline
    z: float          # two-proportion z statistic (pooled); + means the rate went up
    p_value: float    # two-sided


def rate_change(current_hits: int, current_n: int, baseline_hits: int, baseline_n: int) -> RateChange:
    """Compare a rate (refusals, errors, empty answers, cache hits) between two windows.

    A fixed threshold on a rate alone alerts on noise at small n (3 refusals in 100 vs 1
    in 100 is nothing); the z statistic says how many standard errors the change is, so
    the runner can require both a material change and z beyond ~3. A side with n = 0 gives
    nan rates and a nan z; equal rates (including both 0) give z = 0.
    """
    for name, hits, n in (("current", current_hits, current_n), ("baseline", baseline_hits, baseline_n)):
        if n < 0 or hits < 0 or hits > n:
            raise ValueError(f"{name}: need 0 <= hits <= n, got hits={hits}, n={n}")
    if current_n == 0 or baseline_n == 0:
        nan = math.nan
        return RateChange(current_hits / current_n if current_n else nan,
                          baseline_hits / baseline_n if baseline_n else nan, nan, nan)
    cur, base = current_hits / current_n, baseline_hits / baseline_n
    pooled = (current_hits + baseline_hits) / (current_n + baseline_n)
    spread = math.sqrt(pooled * (1.0 - pooled) * (1.0 / current_n + 1.0 / baseline_n))
    if spread == 0.0:
        return RateChange(cur, base, 0.0, 1.0)
    z = (cur - base) / spread
    # two-sided normal tail, 2 * norm.sf(|z|) = erfc(|z| / sqrt 2): the same number, ~0.1 µs
    # against scipy's ~30 µs per scalar call (called per segment and rate metric each run)
    return RateChange(cur, base, z, math.erfc(abs(z) / math.sqrt(2.0)))
