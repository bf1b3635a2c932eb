"""Bounded random samples brought back to Python: prompt embeddings and texts.

`LIMIT n BY segment, side` keeps at most n rows per segment and side whatever the window
holds. The order is `cityHash64(request_id, seed)`: random with respect to content and time,
and the same rows on a re-run (a run is reproducible; `monitoring.seed` changes the draw).
Only the segments that passed the sample gate are asked for.
"""

from __future__ import annotations

import numpy as np

from monitoring.aggregates import segment_filter, side_expression, window_filter, window_parameters
from monitoring.segments import Segment, SegmentColumns
from monitoring.windows import Range

SideKey = tuple[Segment, int]
PROMPT_CHARS = 2000        # what a sample keeps of a text: refusals and languages show early
COMPLETION_CHARS = 2000


def _key(row: dict) -> SideKey:
    return (Segment(row["seg_public_model"], row["seg_deployment"], row["seg_tenant"],
                    row["seg_prompt_fingerprint"]), int(row["side"]))


def _sampled_sql(database: str, columns: SegmentColumns, where: str, condition: str, payload: str) -> str:
    """Two phases, so that the sort never carries text: the inner query orders only
    (segment, side, hash, request_id) and keeps n ids per segment and side; the outer one
    reads the payload columns of those rows alone. (One query sorting the texts themselves
    took 30 s over 1M rows, `python -m bench monitor`.)"""
    return f"""
SELECT {columns.select()}, {side_expression()} AS side, {payload}
FROM `{database}`.llm_requests
WHERE {where} AND {condition} AND request_id IN (
    SELECT request_id FROM (
        SELECT {columns.select()}, {side_expression()} AS side, request_id
        FROM `{database}`.llm_requests
        WHERE {where} AND {condition}
        ORDER BY cityHash64(request_id, {{seed:UInt64}})
        LIMIT {{n:UInt32}} BY {columns.group()}, side))
ORDER BY cityHash64(request_id, {{seed:UInt64}})
LIMIT {{n:UInt32}} BY {columns.group()}, side"""


def embedding_samples(client, database: str, columns: SegmentColumns, *, current: Range, baseline: Range,
                      operations: list[str], segments: list[Segment], n: int, seed: int
                      ) -> dict[SideKey, np.ndarray]:
    """Stored prompt embeddings (the semantic cache's vectors), up to n per segment and side."""
    if not segments:
        return {}
    parameters = window_parameters(current, baseline, operations)
    where = window_filter(columns) + segment_filter(columns, segments, parameters)
    parameters.update(n=n, seed=seed)
    sql = _sampled_sql(database, columns, where, "notEmpty(prompt_embedding)", "prompt_embedding")
    grouped: dict[SideKey, list] = {}
    for row in client.query(sql, parameters=parameters).named_results():
        grouped.setdefault(_key(row), []).append(row["prompt_embedding"])
    out: dict[SideKey, np.ndarray] = {}
    for key, vectors in grouped.items():
        dims = {len(v) for v in vectors}
        if len(dims) > 1:          # the embedder changed inside the window: keep the commonest size
            common = max(dims, key=lambda d: sum(1 for v in vectors if len(v) == d))
            vectors = [v for v in vectors if len(v) == common]
        out[key] = np.asarray(vectors, dtype=np.float32)
    return out


def text_samples(client, database: str, columns: SegmentColumns, *, current: Range, baseline: Range,
                 operations: list[str], segments: list[Segment], n: int, seed: int
                 ) -> dict[SideKey, list[tuple[str, str]]]:
    """(prompt_text, completion_text) of fresh successful answers, up to n per segment and side."""
    if not segments:
        return {}
    parameters = window_parameters(current, baseline, operations)
    where = window_filter(columns) + segment_filter(columns, segments, parameters)
    parameters.update(n=n, seed=seed)
    condition = ("status_code < 400 AND error_type = '' AND cache_status NOT IN ('hit', 'semantic-hit') "
                 "AND (notEmpty(prompt_text) OR notEmpty(completion_text))")
    payload = (f"substring(prompt_text, 1, {PROMPT_CHARS}) AS prompt, "
               f"substring(completion_text, 1, {COMPLETION_CHARS}) AS completion")
    out: dict[SideKey, list[tuple[str, str]]] = {}
    for row in client.query(_sampled_sql(database, columns, where, condition, payload),
                            parameters=parameters).named_results():
        out.setdefault(_key(row), []).append((row["prompt"], row["completion"]))
    return out
