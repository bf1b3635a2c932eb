"""`GET /openapi.json` describes exactly what the gateway serves (tests/fuzz/ drives the
gateway from it; this keeps it complete and valid)."""

from __future__ import annotations

import httpx
import jsonschema
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR
from starlette.routing import Route

from gateway.app import create_app
from gateway.config import parse_config
from gateway.openapi import build_document
from gateway.wire.limits import RequestLimits

METHODS = {"get", "post", "put", "patch", "delete", "options"}
POST_ERRORS = {"400", "401", "403", "404", "405", "408", "413", "429", "431", "502", "503", "504"}


def served_operations() -> set[tuple[str, str]]:
    app = create_app(parse_config({}, {}))
    served = {(path, "post") for path in app._routes}
    for route in app.app.routes:
        assert isinstance(route, Route), route
        served |= {(route.path, m.lower()) for m in route.methods or () if m != "HEAD"}
    return served


def documented_operations(doc: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items() for method in item if method in METHODS}


def test_every_served_route_is_documented_and_nothing_else():
    doc = build_document(RequestLimits())
    assert documented_operations(doc) == served_operations()


def test_the_document_is_valid_openapi_3_1():
    doc = build_document(RequestLimits())
    assert doc["openapi"] == "3.1.0"
    errors = [f"{list(e.instance_path)}: {e.message}" for e in OPENAPI_31_VALIDATOR.iter_errors(doc)]
    assert not errors
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_errors_are_documented_in_both_shapes():
    doc = build_document(RequestLimits())
    for path, shape in [("/v1/chat/completions", "OpenAIError"), ("/v1/embeddings", "OpenAIError"),
                        ("/v1/responses", "OpenAIError"), ("/v1/messages", "AnthropicError")]:
        responses = doc["paths"][path]["post"]["responses"]
        assert POST_ERRORS <= set(responses), path
        assert responses["400"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{shape}"}
    for path, item in doc["paths"].items():
        for op in item.values():
            assert "405" in op["responses"], path


def test_error_schemas_match_what_the_gateway_sends():
    schemas = build_document(RequestLimits())["components"]["schemas"]

    def valid(name: str, body: dict) -> bool:
        return jsonschema.Draft202012Validator({**schemas[name], "components": {"schemas": schemas}}).is_valid(body)

    openai_error = {"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": "x"}}
    anthropic_error = {"type": "error", "error": {"type": "invalid_request_error", "message": "m"}}
    assert valid("OpenAIError", openai_error) and not valid("AnthropicError", openai_error)
    assert valid("AnthropicError", anthropic_error)
    assert valid("AnyError", openai_error) and valid("AnyError", anthropic_error)


def test_served_document_states_the_limits(gateway):
    resp = httpx.get(f"{gateway.url}/openapi.json")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    doc = resp.json()
    chat = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert chat["properties"]["messages"]["maxItems"] == 2048
    assert chat["properties"]["n"]["maximum"] == 16
    assert "64 levels" in chat["description"]
    assert chat["additionalProperties"] is True       # unknown fields pass through
