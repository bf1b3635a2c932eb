"""The OpenAPI description of `POST /v1/feedback` (gateway/feedback.py), with the lengths of
the running gateway's `feedback:` config. The schema is no looser than the endpoint's own
checks (tests/fuzz: a body the schema refuses must be refused), which are a little stricter
(a body with nothing to record, a `comment` of "" alone)."""

from __future__ import annotations

from typing import Any

from gateway.feedback_config import FeedbackConfig

_ERRORS = {
    "400": "A malformed body: unknown field, both or neither of request_id and trace_id, score outside 0..1, "
           "score and thumbs together, a field too long, nothing to record (the message names the field)",
    "401": "Missing or unknown gateway key",
    "404": "No request (or trace) by that id for this key's tenant: another tenant's ids are not found either",
    "413": "Body larger than server.max_body_bytes",
    "503": "The rated request cannot be looked up now (ClickHouse down or slow); retry after Retry-After",
}


def feedback_schemas(cfg: FeedbackConfig) -> dict[str, Any]:
    nullable_text = lambda limit, about: {"type": ["string", "null"], "maxLength": limit,  # noqa: E731
                                          "description": about}
    return {
        "FeedbackRequest": {
            "type": "object", "additionalProperties": False,
            "description": "A rating of one answer: exactly one of request_id (the x-sluice-request-id header "
                           "of the answer) or trace_id (rates the trace's latest request); score or thumbs, "
                           "and/or a kind, comment or correction",
            "properties": {
                "request_id": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
                "trace_id": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
                "score": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                          "description": "0 to 1, higher is better"},
                "thumbs": {"enum": ["up", "down", None], "description": "up = score 1, down = score 0"},
                "kind": {"type": ["string", "null"], "pattern": "^[a-z][a-z0-9_]{0,31}$",
                         "description": "accept, accept_edited, copy, regenerate, report, ... (default rating)"},
                "comment": nullable_text(cfg.max_comment_chars, "Free text"),
                "correction": nullable_text(cfg.max_correction_chars, "What the answer should have been"),
                "user": nullable_text(cfg.max_user_chars, "The end user who rated (your id for them)"),
            },
            "oneOf": [{"required": ["request_id"]}, {"required": ["trace_id"]}],
            "not": {"required": ["score", "thumbs"]},
            "anyOf": [{"required": [name]} for name in ("score", "thumbs", "kind", "comment", "correction")],
        },
        "FeedbackAccepted": {
            "type": "object", "required": ["object", "id", "request_id", "trace_id", "status"],
            "properties": {"object": {"const": "feedback"}, "id": {"type": "string"},
                           "request_id": {"type": "string"}, "trace_id": {"type": "string"},
                           "status": {"const": "accepted"}},
        },
    }


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def feedback_paths(server_errors: dict[str, Any]) -> dict[str, Any]:
    error = _json("AnyError")
    responses = {"202": {"description": "Verified and queued for the feedback table",
                         "content": _json("FeedbackAccepted")},
                 **{status: {"description": text, "content": error} for status, text in _ERRORS.items()},
                 **server_errors}
    return {"/v1/feedback": {"post": {
        "summary": "Rate an answer (stored in the feedback table; docs/monitoring.md, Feedback)",
        "requestBody": {"required": True, "content": _json("FeedbackRequest")},
        "responses": responses}}}
