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

State is an in-memory LRU per process (`regenerate_max_entries` conversations; with the
recent-request index ~13 MB at the defaults, measured): a regenerate that lands on another
replica, or another `--workers` process, is not seen. With `feedback.implicit.redis_url`
the same state lives in Redis, one key per conversation expiring after the window, shared
by every replica (docs/monitoring.md, "Feedback").
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Coroutine
from datetime import datetime, timezone
from typing import Any, NamedTuple

import orjson

from gateway.context import RequestContext
from gateway.feedback_config import ImplicitSignals
from gateway.feedback_store import RatedRequest
from gateway.types import Operation, WireFormat
from telemetry.feedback import FeedbackRow

log = logging.getLogger("sluice.feedback")
ANSWERED = (200, 499)
REDIS_PREFIX = "sluice:regenerate:"


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
    """Turns finished requests into implicit feedback rows (called once per request).

    `observe` returns the rows it can tell at once and, with a Redis store, a coroutine
    that finds the regenerate (the caller runs it as a tracked task, off the request)."""

    def __init__(self, cfg: ImplicitSignals, redis: Any = None) -> None:
        self.cfg = cfg
        self._answered: OrderedDict[bytes, _Answered] = OrderedDict()
        self._redis = redis                 # redis.asyncio.Redis, or None: this process's LRU
        self.redis_errors = 0

    def observe(self, ctx: RequestContext, rated: RatedRequest
                ) -> tuple[list[FeedbackRow], Coroutine[Any, Any, list[FeedbackRow]] | None]:
        if ctx.operation is not Operation.CHAT or ctx.principal.evaluator or ctx.status not in ANSWERED:
            return [], None
        rows: list[FeedbackRow] = []
        user = end_user(ctx)
        key_id = ctx.principal.key_id
        if self.cfg.abandon and ctx.status == 499 and ctx.stream:
            rows.append(_row(key_id, rated, user, "abandon", None))
        if not self.cfg.regenerate or not (user or not self.cfg.require_user):
            return rows, None
        digest = conversation_digest(ctx, user)
        if digest is None:
            return rows, None
        answered, started = _Answered(rated, time.time(), user), ctx.start_ns / 1e9
        if self._redis is not None:
            return rows, self._regenerated_in_redis(digest, answered, started, key_id)
        earlier = self._swap(digest, answered)
        if self._regenerates(earlier, started):
            rows.append(_row(key_id, earlier.rated, earlier.user, "regenerate", 0.0))
        return rows, None

    def _regenerates(self, earlier: _Answered | None, started: float) -> bool:
        """A regenerate: started after the earlier answer finished, within the window."""
        return earlier is not None and earlier.finished <= started <= earlier.finished + self.cfg.regenerate_window_s

    def _swap(self, digest: bytes, answered: _Answered) -> _Answered | None:
        """Remember this answered conversation (LRU); the one it replaces, if any."""
        earlier = self._answered.pop(digest, None)
        self._answered[digest] = answered
        while len(self._answered) > self.cfg.regenerate_max_entries:
            self._answered.popitem(last=False)
        return earlier

    async def _regenerated_in_redis(self, digest: bytes, answered: _Answered, started: float,
                                    key_id: str) -> list[FeedbackRow]:
        """The same swap in Redis, shared by every replica: one `SET key value PX window GET`
        (atomic: of two replicas seeing the same conversation, each gets the other's)."""
        value = orjson.dumps([*answered.rated[:6], answered.finished, answered.user])
        try:
            old = await self._redis.set(REDIS_PREFIX + digest.hex(), value, get=True,
                                        px=int(self.cfg.regenerate_window_s * 1000))
        except Exception as exc:
            self.redis_errors += 1
            if self.redis_errors == 1 or self.redis_errors % 1000 == 0:
                log.warning("feedback: regenerate state in Redis unavailable (%d errors so far): %s: %s",
                            self.redis_errors, type(exc).__name__, str(exc)[:200])
            return []
        if old is None:
            return []
        *fields, finished, user = orjson.loads(old)
        earlier = _Answered(RatedRequest(*fields), float(finished), user)
        if not self._regenerates(earlier, started):
            return []
        return [_row(key_id, earlier.rated, earlier.user, "regenerate", 0.0)]

    def __len__(self) -> int:
        return len(self._answered)


def _row(key_id: str, rated: RatedRequest, user: str, kind: str, score: float | None) -> FeedbackRow:
    return FeedbackRow(
        ts=datetime.now(timezone.utc), feedback_id=os.urandom(12).hex(), request_id=rated.request_id,
        trace_id=rated.trace_id, tenant=rated.tenant, key_id=key_id, user=user,
        source="implicit", kind=kind, score=score, comment="", correction="", public_model=rated.public_model,
        deployment=rated.deployment, prompt_fingerprint=rated.prompt_fingerprint)
