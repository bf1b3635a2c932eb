"""One drift run: read `llm_requests`, write `drift_metrics` and `model_events`, return the rows.

    run_once(client, database, cfg, now=None, embedder=None) -> RunResult

`client` is anything with the clickhouse-connect Client subset `query`, `command`,
`insert` (a direct client, or monitoring/store.py's proxy to a running gateway's
collector). Blocking: callers run it off the event loop. Stateless: everything a run needs
from earlier runs (streaks for `alert_after_runs`, values already seen for events, pinned
baselines) is read back from the tables it writes.

A run, in order:
1. aggregates per segment and side in one SQL pass (aggregates.py), for the current window
   and the default baseline; segments with current traffic, the busiest `max_segments`;
2. again for the segments whose baseline is pinned (windows.py);
3. bounded samples: prompt embeddings (stored by the semantic cache, else prompt texts
   embedded here when an embedder is given) and answer/prompt texts (samples.py);
4. every metric measured (measures.py; quality scores from `feedback` and `evaluations`:
   feedback_drift.py), judged against its threshold (judge.py), and alerting only after
   `alert_after_runs` crossings in a row (alerting.py);
5. events: new response models, system fingerprints, prompt fingerprints (events.py);
6. the rows inserted, and returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from monitoring import statistics
from monitoring.aggregates import SideStats, side_stats
from monitoring.alerting import is_alerting, previous_crossings
from monitoring.config import DEFAULT_METRICS, MonitoringConfig
from monitoring.events import detect_events
from monitoring.feedback_drift import existing_tables, quality_measures
from monitoring.verdicts import Measurement, judge
from monitoring.measures import from_aggregates, from_embeddings, from_texts
from monitoring.samples import SideKey, embedding_samples, text_samples
from monitoring.segments import Segment, SegmentColumns
from telemetry.drift_tables import DRIFT_COLUMNS, DRIFT_METRICS, EVENT_COLUMNS, MODEL_EVENTS, DriftRow, ModelEvent
from monitoring.windows import Range, baseline_for, current_window, default_baseline, load_pins, utc

log = logging.getLogger("sluice.monitoring")

TextClassifier = Callable[[list[str]], list[bool]]
LanguageDetector = Callable[[list[str]], list[str]]


@dataclass(slots=True)
class RunResult:
    now: datetime
    window: Range
    metrics: list[DriftRow] = field(default_factory=list)
    events: list[ModelEvent] = field(default_factory=list)
    segments: int = 0
    seconds: float = 0.0

    @property
    def alerting(self) -> list[DriftRow]:
        return [row for row in self.metrics if row.alerting]


def run_once(client, database: str, cfg: MonitoringConfig, *, now: datetime | None = None, embedder=None,
             is_refusal: TextClassifier | None = None, detect_languages: LanguageDetector | None = None
             ) -> RunResult:
    """One whole run (see the module docstring). `embedder`: anything with
    `embed_sync(texts) -> list[vector | None]` (cache.embedders.LocalEmbedder), used for
    prompts that have no stored embedding. `is_refusal` / `detect_languages` default to
    monitoring.refusal and monitoring.language."""
    started = time.perf_counter()
    now = utc(now or datetime.now(timezone.utc))
    current = current_window(cfg, now)
    result = RunResult(now=now, window=current)
    columns = request_columns(client, database)
    seg_columns = SegmentColumns(cfg, columns)
    response_format = "toString(response_format)" if "response_format" in columns else "''"
    query = dict(operations=list(cfg.operations))

    # 1-2. aggregates; baselines (default or pinned) per segment
    default = default_baseline(cfg, now)
    stats = side_stats(client, database, seg_columns, current=current, baseline=default,
                       response_format=response_format, **query)
    segments = sorted((s for s, sides in stats.items() if 1 in sides),
                      key=lambda s: (-stats[s][1].n_all, s))[: cfg.max_segments]
    pins = load_pins(client, database)
    by_baseline: dict[Range, list[Segment]] = {}
    pinned: set[Segment] = set()
    for segment in segments:
        window, is_pinned = baseline_for(segment, pins, default)
        by_baseline.setdefault(window, []).append(segment)
        if is_pinned:
            pinned.add(segment)
    for window, group in by_baseline.items():
        if window != default:
            again = side_stats(client, database, seg_columns, current=current, baseline=window,
                               response_format=response_format, segments=group, **query)
            for segment in group:
                stats[segment] = {**again.get(segment, {}), 1: stats[segment][1]}

    # 3-4. samples, measurements, verdicts
    detectors = _Detectors(is_refusal, detect_languages, embedder if cfg.refusal_similarity else None)
    budget = [cfg.embed_max_texts]          # texts the monitor may still embed in this run
    measured: dict[Segment, list[Measurement]] = {}
    for window, group in by_baseline.items():
        sides = {s: (stats[s][1], stats[s].get(0, SideStats())) for s in group}
        samples = _Samples(client, database, seg_columns, cfg, current, window, query["operations"], embedder,
                           budget)
        samples.fetch(sides)
        for segment in group:
            cur, base = sides[segment]
            measurements = from_aggregates(cur, base)
            measurements += samples.embedding_measures(segment)
            measurements += samples.text_measures(segment, detectors)
            measured[segment] = measurements
    # 4b. quality: feedback and evaluator scores, per segment (feedback_drift.py)
    tables = existing_tables(client, database)
    for window, group in by_baseline.items():
        quality = quality_measures(client, database, seg_columns, current=current, baseline=window,
                                   segments=group, tables=tables)
        for segment, measurements in quality.items():
            measured[segment] += measurements
    result.metrics = _judged_rows(client, database, cfg, now, current, stats, measured, by_baseline, pinned)
    result.segments = len(segments)

    # 5. events
    # (over the baseline too: the first run learns the values in use before the window)
    result.events = detect_events(client, database, list(cfg.event_kinds), columns,
                                  scan=Range(default.start, current.end), operations=query["operations"], now=now)

    # 6. write
    if result.metrics:
        client.insert(f"{database}.{DRIFT_METRICS}", [r.as_row() for r in result.metrics],
                      column_names=list(DRIFT_COLUMNS))
    if result.events:
        client.insert(f"{database}.{MODEL_EVENTS}", [e.as_row() for e in result.events],
                      column_names=list(EVENT_COLUMNS))
    result.seconds = time.perf_counter() - started
    log.info("monitor: run at %s: %d segments, %d metrics (%d alerting), %d events in %.2f s",
             now.isoformat(timespec="seconds"), result.segments, len(result.metrics), len(result.alerting),
             len(result.events), result.seconds)
    return result


def request_columns(client, database: str) -> set[str]:
    """The columns `llm_requests` has (an older schema may lack prompt_fingerprint, response_format)."""
    rows = client.query("SELECT name FROM system.columns WHERE database = {db:String} AND table = 'llm_requests'",
                        parameters={"db": database}).result_rows
    if not rows:
        raise RuntimeError(f"no table {database}.llm_requests: run `sluice migrate` (or start the gateway) first")
    return {row[0] for row in rows}


def _judged_rows(client, database: str, cfg: MonitoringConfig, now: datetime, current: Range,
                 stats: dict[Segment, dict[int, SideStats]], measured: dict[Segment, list[Measurement]],
                 by_baseline: dict[Range, list[Segment]], pinned: set[Segment]) -> list[DriftRow]:
    streaks = previous_crossings(client, database, runs=cfg.alert_after_runs - 1, now=now,
                                 lookback_s=cfg.window_s + cfg.baseline_s, segments=list(measured))
    baseline_of = {s: window for window, group in by_baseline.items() for s in group}
    rows: list[DriftRow] = []
    for segment, measurements in measured.items():
        window = baseline_of[segment]
        for m in measurements:
            settings = cfg.metric(m.metric)
            if not settings.enabled:
                continue
            verdict = judge(m, settings, cfg.min_samples)
            previous = streaks.get((segment, m.metric), [])
            alerting = is_alerting(verdict.crossed, previous, cfg.alert_after_runs)
            note = verdict.note
            if verdict.crossed and not alerting:
                note = "; ".join(filter(None, [note, f"crossed, alerting after {cfg.alert_after_runs} runs in a row"]))
            if segment in pinned:
                note = "; ".join(filter(None, [note, "pinned baseline"]))
            rows.append(DriftRow(
                ts=now, window_start=current.start, window_end=current.end, baseline_start=window.start,
                baseline_end=window.end, public_model=segment.public_model, deployment=segment.deployment,
                tenant=segment.tenant, prompt_fingerprint=segment.prompt_fingerprint, metric=m.metric,
                method=settings.method, value=m.value, baseline=m.baseline, threshold=verdict.threshold,
                crossed=int(verdict.crossed), alerting=int(alerting), n_current=m.n_current,
                n_baseline=m.n_baseline, note=note))
    order = {name: i for i, name in enumerate(DEFAULT_METRICS)}
    rows.sort(key=lambda r: (r.public_model, r.deployment, r.tenant, r.prompt_fingerprint, order.get(r.metric, 99)))
    return rows


class _Detectors:
    """The refusal and language detectors, loaded on first use (a run with no text needs neither)."""

    def __init__(self, is_refusal: TextClassifier | None, detect_languages: LanguageDetector | None,
                 embedder=None) -> None:
        self._embedder = embedder          # the refusal detector's similarity half, when given
        self._is_refusal = is_refusal
        self._detect_languages = detect_languages
        self._languages_failed = False
        self.failure = ""

    def refusals(self) -> TextClassifier | None:
        if self._is_refusal is None and not self.failure:
            try:
                from monitoring.refusal import RefusalDetector
                detector = RefusalDetector(self._embedder)
                self._is_refusal = lambda texts: [s >= detector.threshold for s in detector.score_many(texts)]
            except Exception as exc:            # an optional model missing: the metric says so
                self.failure = f"refusal detector unavailable: {type(exc).__name__}"
                log.warning("monitor: %s", self.failure, exc_info=True)
        return self._is_refusal

    def languages(self) -> LanguageDetector | None:
        if self._detect_languages is None and not self._languages_failed:
            try:
                from monitoring.language import detect_many
                self._detect_languages = detect_many
            except Exception:
                self._languages_failed = True
                log.warning("monitor: language detector unavailable", exc_info=True)
        return self._detect_languages


class _Samples:
    """The bounded samples of one baseline group: fetched once, handed out per segment."""

    def __init__(self, client, database: str, columns: SegmentColumns, cfg: MonitoringConfig, current: Range,
                 baseline: Range, operations: list[str], embedder, budget: list[int]) -> None:
        self._budget = budget
        self._args = dict(current=current, baseline=baseline, operations=operations, seed=cfg.seed)
        self._client, self._database, self._columns, self._cfg = client, database, columns, cfg
        self._embedder = embedder if cfg.embed_prompt_text else None
        self._vectors: dict[SideKey, np.ndarray] = {}
        self._texts: dict[SideKey, list[tuple[str, str]]] = {}
        self._vector_source: dict[Segment, str] = {}
        self._text_note: dict[Segment, str] = {}
        self._embed_note: dict[Segment, str] = {}

    def fetch(self, sides: dict[Segment, tuple[SideStats, SideStats]]) -> None:
        cfg, rows = self._cfg, statistics.MIN_ROWS
        stored = [s for s, (cur, base) in sides.items() if min(cur.n_embeddings, base.n_embeddings) >= rows]
        with_text = [s for s, (cur, base) in sides.items() if min(cur.n_fresh, base.n_fresh) >= rows]
        embed_text = [s for s in with_text if s not in stored] if self._embedder is not None else []
        n_vectors = max(cfg.embedding_sample, cfg.min_samples)
        n_texts = max(cfg.text_sample, cfg.min_samples, n_vectors if embed_text else 0)
        self._vectors = embedding_samples(self._client, self._database, self._columns, segments=stored,
                                          n=n_vectors, **self._args)
        self._texts = text_samples(self._client, self._database, self._columns, segments=with_text,
                                   n=n_texts, **self._args)
        for segment in stored:
            self._vector_source[segment] = ""
        for segment in embed_text:             # busiest first: `sides` keeps the runner's order
            sides_prompts = [[p for p, _ in self._texts.get((segment, side), [])[:n_vectors] if p]
                             for side in (0, 1)]
            needed = sum(len(p) for p in sides_prompts)
            if needed > self._budget[0]:
                self._vector_source[segment] = ""
                self._embed_note[segment] = (f"not embedded: embed_max_texts ({self._cfg.embed_max_texts}) "
                                             f"used up by busier segments")
                continue
            self._budget[0] -= needed
            self._vector_source[segment] = "prompt_text embedded by the monitor"
            for side, prompts in enumerate(sides_prompts):
                vectors = [v for v in self._embedder.embed_sync(prompts) if v is not None] if prompts else []
                if vectors:
                    self._vectors[(segment, side)] = np.asarray(vectors, dtype=np.float32)
        for segment, (cur, base) in sides.items():
            if segment not in with_text:
                self._text_note[segment] = "too few answers to sample"
            elif min(cur.n_text, base.n_text) == 0:
                self._text_note[segment] = "no answer text logged (telemetry.log_prompts)"

    def embedding_measures(self, segment: Segment) -> list[Measurement]:
        if segment not in self._vector_source or segment in self._embed_note:
            note = self._embed_note.get(segment, "no prompt embeddings stored and no embedder to compute them")
            return from_embeddings(None, None, seed=0, max_samples=1, source="", note=note)
        return from_embeddings(self._vectors.get((segment, 1)), self._vectors.get((segment, 0)),
                               seed=self._cfg.seed, max_samples=max(self._cfg.embedding_sample, self._cfg.min_samples),
                               source=self._vector_source[segment],
                               mmd_threshold=self._cfg.metric("prompt_embedding_mmd").threshold)

    def text_measures(self, segment: Segment, detectors: _Detectors) -> list[Measurement]:
        note = self._text_note.get(segment, "")
        refusals = detectors.refusals() if not note else None
        languages = detectors.languages() if not note else None
        return from_texts(self._texts.get((segment, 1), []), self._texts.get((segment, 0), []),
                          is_refusal=refusals, detect_languages=languages, note=note,
                          wanted=lambda metric: self._cfg.metric(metric).enabled)
