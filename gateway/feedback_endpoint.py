"""The `POST /v1/feedback` route: authenticate, parse, verify the rated request belongs to
the caller's tenant, queue the row (gateway/feedback.py has the rules and the service)."""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import orjson

from gateway.errors import GatewayError
from gateway.feedback import FeedbackStoreUnavailable, RatedRequestNotFound, parse_feedback
from gateway.feedback_store import FeedbackUnavailable
from gateway.http import header, parse_json_object, read_body, send_bytes
from gateway.types import Receive, Scope, Send, WireFormat
from telemetry.feedback import FeedbackRow

if TYPE_CHECKING:
    from gateway.runtime import Gateway

log = logging.getLogger("sluice.feedback")


class FeedbackEndpoint:
    """`POST /v1/feedback` (see the module docstring)."""

    def __init__(self, gw: Gateway) -> None:
        self._gw = gw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fmt = WireFormat.ANTHROPIC if header(scope, b"anthropic-version") is not None else WireFormat.OPENAI
        gw = self._gw
        try:
            principal = await gw.keys.authenticate_async(scope["headers"])
            raw = await read_body(scope, receive, gw.cfg.server.max_body_bytes)
            given = parse_feedback(parse_json_object(raw, gw.limits.max_json_depth), gw.cfg.feedback)
            try:
                rated = await gw.feedback.store.find(principal.tenant, given.request_id, given.trace_id)
            except FeedbackUnavailable as exc:
                raise FeedbackStoreUnavailable(f"Feedback cannot be verified now: {exc}; retry later",
                                               headers={"retry-after": "5"}) from None
            if rated is None:
                what = f"request '{given.request_id}'" if given.request_id else f"trace '{given.trace_id}'"
                raise RatedRequestNotFound(f"No {what} for this key's tenant (a request is found once its "
                                           f"answer is logged, within seconds)",
                                           param="request_id" if given.request_id else "trace_id")
            row = FeedbackRow(
                ts=datetime.now(timezone.utc), feedback_id=os.urandom(12).hex(), request_id=rated.request_id,
                trace_id=rated.trace_id, tenant=principal.tenant, key_id=principal.key_id,
                user=given.user or rated.user,
                source="explicit", kind=given.kind, score=given.score, comment=given.comment,
                correction=given.correction, public_model=rated.public_model, deployment=rated.deployment,
                prompt_fingerprint=rated.prompt_fingerprint)
            gw.feedback.store.write(row)
        except GatewayError as err:
            headers = [(k.encode(), v.encode()) for k, v in err.headers.items()]
            await send_bytes(send, err.status, err.body(fmt), headers)
            return
        except Exception:
            log.exception("feedback: unhandled error")
            err = GatewayError("Internal gateway error while recording feedback")
            await send_bytes(send, err.status, err.body(fmt), [])
            return
        body = orjson.dumps({"object": "feedback", "id": row.feedback_id, "request_id": row.request_id,
                             "trace_id": row.trace_id, "status": "accepted"})
        await send_bytes(send, 202, body, [])
