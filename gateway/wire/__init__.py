"""The caller-facing side of each wire format: request validation, reading answers
(complete or streamed) into a `ResponseSummary`, and stream error events."""
