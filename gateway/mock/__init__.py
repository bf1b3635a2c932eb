"""The mock model provider: the one fake in the project, speaking the real wire formats.

    app.py              the raw ASGI app: routes, auth, request log, faults, latency, pacing
    openai_wire.py      chat completions (+ Azure), embeddings, models
    responses_wire.py   the OpenAI Responses API
    anthropic_wire.py   Anthropic Messages
    content.py          deterministic answers, token counts, schema examples, embeddings
    faults.py           failure injection rules (and the fail-* / slow-* model names)
    script.py           scripted answers (POST /_mock/script): text, length, model, fingerprint, latency
    replies.py          the Reply value and the providers' error shapes
    server.py, cli.py   uvicorn serving and `python -m gateway.mock`
"""

from gateway.mock.app import ASGIApp, MockUpstream, create_mock_app
from gateway.mock.faults import FaultRule
from gateway.mock.options import MockOptions
from gateway.mock.server import mock_server, run_mock_upstream

__all__ = ["ASGIApp", "FaultRule", "MockOptions", "MockUpstream", "create_mock_app", "mock_server",
           "run_mock_upstream"]
