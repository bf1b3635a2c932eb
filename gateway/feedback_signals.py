"""Implicit feedback: what users' behaviour says about an answer, recorded with `source = implicit`.

- **regenerate**: a chat request whose conversation is the same as an earlier answered
  request's, from the same tenant, key and end user, started after that one finished and
  within `feedback.implicit.regenerate_window_s` of it. "The same conversation" is the
  same hash (BLAKE2b) of the system prompt and the messages up to the last user turn
  (trailing assistant turns, an Anthropic prefill or an answer the client kept, left out),
  as the provider would see them (after input guardrails); the model may differ (a user
  who switches model and regenerates rejected the first answer all the same). The earlier
  request gets the row: kind `regenerate`, score 0. A resend after a failed request (5xx,
  429) is a retry, not a regenerate: only answered requests (200, or a stream the client
  left) are remembered. Two identical requests in flight together (an app sampling in
  parallel) are not a regenerate either: the second must start after the first finished.
- **abandon**: a stream the client left before its end (the 499 `client_disconnected` of
  gateway/answer.py): kind `abandon`, no score (the user may have read enough).

State is an in-memory LRU per process (`regenerate_max_entries` conversations, ~150 bytes
each): a regenerate that lands on another replica, or another `--workers` process, is not
seen (docs/monitoring.md, "Feedback").
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import NamedTuple

import orjson

from gateway.context import RequestContext
from gateway.feedback_config import ImplicitSignals
from gateway.feedback_store import RatedRequest
from gateway.types import Operation, WireFormat
from telemetry.feedback import FeedbackRow

ANSWERED = (200, 499)


class _Answered(NamedTuple):
    rated: RatedRequest
    finished: float           # wall clock, seconds
    user: str


def end_user(ctx: RequestContext) -> str:
    """The end user the request names: OpenAI `user`, Anthropic `metadata.user_id`."""
    params = ctx.params
    user = params.get("user")
    if ctx.api_format is WireFormat.ANTHROPIC:
        metadata = params.get("metadata")
        user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return user if isinstance(user, str) else ""


def conversation_digest(ctx: RequestContext, user: str) -> bytes | None:
    """The regenerate key of a chat request (see the module docstring); None when it has no
    user turn to compare."""
    params = ctx.params
    messages = params.get("messages")
    if not isinstance(messages, list):
        return None
    end = len(messages)
    while end and isinstance(messages[end - 1], dict) and messages[end - 1].get("role") == "assistant":
        end -= 1
    if not end:
        return None
    try:
        payload = orjson.dumps([params.get("system"), messages[:end]], option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return None
    principal = ctx.principal
    h = hashlib.blake2b(digest_size=16)
    for part in (principal.tenant, principal.key_id, user):
        h.update(part.encode())
        h.update(b"\0")
    h.update(payload)
    return h.digest()


class ImplicitFeedback:
    """Turns finished requests into implicit feedback rows (called once per request)."""

    def __init__(self, cfg: ImplicitSignals) -> None:
        self.cfg = cfg
        self._answered: OrderedDict[bytes, _Answered] = OrderedDict()

    def observe(self, ctx: RequestContext, rated: RatedRequest) -> list[FeedbackRow]:
        if ctx.operation is not Operation.CHAT or ctx.principal.evaluator or ctx.status not in ANSWERED:
            return []
        rows: list[FeedbackRow] = []
        user = end_user(ctx)
        if self.cfg.abandon and ctx.status == 499 and ctx.stream:
            rows.append(_row(ctx, rated, user, "abandon", None))
        if self.cfg.regenerate and (user or not self.cfg.require_user):
            earlier = self._remember(ctx, rated, user)
            if earlier is not None:
                rows.append(_row(ctx, earlier.rated, earlier.user, "regenerate", 0.0))
        return rows

    def _remember(self, ctx: RequestContext, rated: RatedRequest, user: str) -> _Answered | None:
        """Remember this answered conversation; the earlier answer it regenerates, if any."""
        digest = conversation_digest(ctx, user)
        if digest is None:
            return None
        now = time.time()
        started = ctx.start_ns / 1e9
        earlier = self._answered.pop(digest, None)
        self._answered[digest] = _Answered(rated, now, user)
        while len(self._answered) > self.cfg.regenerate_max_entries:
            self._answered.popitem(last=False)
        if earlier is None or started < earlier.finished or started - earlier.finished > self.cfg.regenerate_window_s:
            return None
        return earlier

    def __len__(self) -> int:
        return len(self._answered)


def _row(ctx: RequestContext, rated: RatedRequest, user: str, kind: str, score: float | None) -> FeedbackRow:
    return FeedbackRow(
        ts=datetime.now(timezone.utc), feedback_id=os.urandom(12).hex(), request_id=rated.request_id,
        trace_id=rated.trace_id, tenant=rated.tenant, key_id=ctx.principal.key_id, user=user,
        source="implicit", kind=kind, score=score, comment="", correction="", public_model=rated.public_model,
        deployment=rated.deployment, prompt_fingerprint=rated.prompt_fingerprint)
