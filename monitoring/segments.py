"""Segments: the groups of requests the monitor compares with themselves over time.

A segment is (public_model, deployment, tenant, prompt_fingerprint): one application
prompt of one tenant on one upstream deployment. Keeping the prompt fingerprint in the key
is what makes a team's own prompt change a new segment (and a model_events row) instead of
drift of the old one. `monitoring.segment_by` can drop dimensions (they are "" then);
a column the table does not have yet (an older schema) is "" too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from monitoring.config import SEGMENT_DIMENSIONS, MonitoringConfig


class Segment(NamedTuple):
    public_model: str
    deployment: str
    tenant: str
    prompt_fingerprint: str

    def label(self) -> str:
        """`model/deployment/tenant/fingerprint`, "-" for an empty dimension (report, logs)."""
        return "/".join(part or "-" for part in self)


# The key as a SQL tuple literal of these aliases, for `IN {segments:...}` filters.
SEGMENT_PARAM_TYPE = "Array(Tuple(String, String, String, String))"


class SegmentColumns:
    """The SQL expressions of the segment key, given the config and the table's columns."""

    def __init__(self, cfg: MonitoringConfig, columns: Iterable[str]) -> None:
        have = set(columns)
        self.expressions: tuple[str, ...] = tuple(
            f"toString({dim})" if dim in cfg.segment_by and dim in have else "''" for dim in SEGMENT_DIMENSIONS)
        # Users' traffic only: not the evaluators' own calls through the gateway (migration 8).
        self.user_traffic = " AND traffic = 'user'" if "traffic" in have else ""

    def select(self) -> str:
        """`expr AS seg_public_model, ...`: what a query selects and groups by."""
        return ", ".join(f"{expr} AS seg_{dim}" for expr, dim in zip(self.expressions, SEGMENT_DIMENSIONS))

    def group(self) -> str:
        return ", ".join(f"seg_{dim}" for dim in SEGMENT_DIMENSIONS)

    def key_tuple(self) -> str:
        """The key as a tuple expression over the table's columns (for WHERE ... IN)."""
        return f"tuple({', '.join(self.expressions)})"


def matches(pattern: Segment, segment: Segment) -> bool:
    """A pinned baseline's pattern: "" in a dimension matches any value."""
    return all(p == "" or p == s for p, s in zip(pattern, segment))


def specificity(pattern: Segment) -> int:
    return sum(1 for part in pattern if part)


def parse_segment(text: str) -> Segment:
    """ "public_model=gpt,tenant=team-a" -> Segment("gpt", "", "team-a", ""); ValueError names
    the bad part. Dimensions left out match any value."""
    values = dict.fromkeys(SEGMENT_DIMENSIONS, "")
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = {"model": "public_model", "fingerprint": "prompt_fingerprint"}.get(name.strip(), name.strip())
        if not sep or name not in values:
            raise ValueError(f"--segment: expected dimension=value pairs with dimensions "
                             f"{', '.join(SEGMENT_DIMENSIONS)}, got {part!r}")
        values[name] = value.strip()
    return Segment(**values)
