"""`POST /v1/feedback`: a user's rating of an answer, and the service behind it.

    {"request_id": "9f2c..." | "trace_id": "4bf92f35...",       exactly one
     "score": 0.8 | "thumbs": "up" | "down",                    at most one (thumbs: 1 or 0)
     "kind": "accept" | "accept_edited" | "copy" | "regenerate" | "report" | ...,
     "comment": "...", "correction": "...", "user": "end-user-id"}

    -> 202 {"object": "feedback", "id": "...", "request_id": "...", "trace_id": "...", "status": "accepted"}

Authenticated with the same keys as the proxy endpoints; a key rates its own tenant's
requests only: another tenant's request id and an unknown one both get a 404 (in the
caller's wire format: Anthropic's with the `anthropic-version` header). The request is
verified before the answer (FeedbackStore.find: this process's recent requests, else
`llm_requests` off the event loop within `feedback.lookup_timeout_s`, else 503); the row
is written afterwards, queued. Why verify first rather than accept and check later: the
caller must learn at once that an id is wrong (a 202 for a typo would lose the rating
silently), and an answer that differed between "not yours" and "not yet written" would
tell one tenant which ids another has. `trace_id` rates the trace's latest request of the
caller's tenant (an agent run: its final answer); both ids are stored.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any


from gateway.context import RequestContext
from gateway.errors import BadRequest, GatewayError
from gateway.feedback_config import FeedbackConfig
from gateway.feedback_signals import ImplicitFeedback
from gateway.feedback_store import FeedbackStore, RatedRequest
from telemetry.feedback import FeedbackRow

if TYPE_CHECKING:
    from telemetry import RequestRecord, Telemetry

log = logging.getLogger("sluice.feedback")
FIELDS = ("request_id", "trace_id", "score", "thumbs", "kind", "comment", "correction", "user")
REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")          # fullmatch: "$" would pass a trailing newline
TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
THUMBS = {"up": 1.0, "down": 0.0}
MAX_PENDING_CHECKS = 1000       # regenerate checks waiting on Redis; past it they are skipped


class RatedRequestNotFound(GatewayError):
    status, type, code = 404, "invalid_request_error", "request_not_found"


class FeedbackStoreUnavailable(GatewayError):
    status, type, code = 503, "service_unavailable", "feedback_unavailable"


@dataclass(frozen=True, slots=True)
class FeedbackInput:
    """A validated feedback body."""

    request_id: str | None
    trace_id: str | None
    score: float | None
    kind: str
    comment: str
    correction: str
    user: str


def _text(body: dict[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string", param=name)
    if len(value) > limit:
        raise BadRequest(f"'{name}' is longer than {limit} characters", param=name)
    return value


def parse_feedback(body: dict[str, Any], cfg: FeedbackConfig) -> FeedbackInput:
    """The body checked field by field; BadRequest names the field and what is wrong."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadRequest(f"Unknown field(s) {', '.join(map(repr, unknown))}; feedback takes {', '.join(FIELDS)}",
                         param=unknown[0])
    request_id, trace_id = body.get("request_id"), body.get("trace_id")
    if ("request_id" in body) == ("trace_id" in body):
        raise BadRequest("Send exactly one of 'request_id' (the x-sluice-request-id header of the answer) "
                         "or 'trace_id'", param="request_id")
    if "request_id" in body and not (isinstance(request_id, str) and REQUEST_ID.fullmatch(request_id)):
        raise BadRequest("'request_id' must be a request id: 1-64 letters, digits or _.:-", param="request_id")
    if "trace_id" in body and not (isinstance(trace_id, str) and TRACE_ID.fullmatch(trace_id)):
        raise BadRequest("'trace_id' must be 32 hexadecimal digits (W3C trace id)", param="trace_id")
    score, thumbs = body.get("score"), body.get("thumbs")
    if score is not None and thumbs is not None:
        raise BadRequest("Send 'score' or 'thumbs', not both", param="score")
    if score is not None:
        if score.__class__ not in (int, float) or not math.isfinite(score) or not 0 <= score <= 1:
            raise BadRequest("'score' must be a number from 0 to 1 (higher is better)", param="score")
        score = float(score)
    elif thumbs is not None:
        if not isinstance(thumbs, str) or thumbs not in THUMBS:
            raise BadRequest("'thumbs' must be \"up\" or \"down\"", param="thumbs")
        score = THUMBS[thumbs]
    kind = body.get("kind")
    if kind is not None and not (isinstance(kind, str) and KIND.fullmatch(kind)):
        raise BadRequest("'kind' must be a lower-case word of at most 32 letters, digits or _ "
                         "(accept, accept_edited, copy, regenerate, report, ...)", param="kind")
    comment = _text(body, "comment", cfg.max_comment_chars)
    correction = _text(body, "correction", cfg.max_correction_chars)
    user = _text(body, "user", cfg.max_user_chars)
    if score is None and kind is None and not comment and not correction:
        raise BadRequest("Nothing to record: send 'score' or 'thumbs', a 'kind', a 'comment' or a 'correction'",
                         param="score")
    return FeedbackInput(request_id if "request_id" in body else None,
                         trace_id.lower() if isinstance(trace_id, str) else None,
                         score, kind or "rating", comment, correction, user)


class FeedbackService:
    """What the gateway holds: the store (look-ups, writes) and the implicit signals."""

    def __init__(self, cfg: FeedbackConfig, telemetry: Telemetry, models: frozenset[str] = frozenset()) -> None:
        self.cfg = cfg
        self.store = FeedbackStore(cfg, telemetry, telemetry.metrics.registry, models)
        self._redis = None
        if cfg.implicit.redis_url:
            from gateway.quota.directory import redis_client
            self._redis = redis_client(cfg.implicit.redis_url, 1.0)
        self.implicit = ImplicitFeedback(cfg.implicit, self._redis)
        self._pending: set[asyncio.Task] = set()

    def observe(self, ctx: RequestContext, rec: RequestRecord | None) -> None:
        """A finished request (on the event loop, after its answer): remember it for
        look-ups, and record the implicit signals it completes. Never raises."""
        if rec is None or ctx.principal.evaluator:
            return
        rated = RatedRequest(rec.request_id, rec.trace_id, rec.tenant, rec.public_model, rec.deployment,
                             rec.prompt_fingerprint, rec.user)
        self.store.recent.add(rated)
        rows, pending = self.implicit.observe(ctx, rated)
        for row in rows:
            self.store.write(row)
        if pending is not None:                              # the regenerate check in Redis
            if len(self._pending) >= MAX_PENDING_CHECKS:         # Redis this slow: skip, counted
                pending.close()
                self.implicit.redis_errors += 1
                return
            task = asyncio.ensure_future(self._write_when_known(pending))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _write_when_known(self, pending: Coroutine[Any, Any, list[FeedbackRow]]) -> None:
        for row in await pending:
            self.store.write(row)

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=2.0)
        await self.store.aclose()
        if self._redis is not None:
            await self._redis.aclose()
