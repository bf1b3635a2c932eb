"""/openapi.json of a gateway with the admin API documents exactly its routes, validly."""

from __future__ import annotations

import jsonschema
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR
from starlette.routing import Route

from gateway.app import create_app
from gateway.config import parse_config
from gateway.openapi import build_document
from gateway.wire.limits import RequestLimits
from tests.quota.conftest import MASTER_KEY

METHODS = {"get", "post", "put", "patch", "delete", "options"}


def test_admin_routes_are_documented_and_valid():
    app = create_app(parse_config({"admin": {"master_key": MASTER_KEY}}, {}))
    served = {(path, "post") for path in app._routes}
    for route in app.app.routes:
        assert isinstance(route, Route), route
        served |= {(route.path, m.lower()) for m in route.methods or () if m != "HEAD"}
    doc = build_document(RequestLimits(), admin=True)
    documented = {(path, m) for path, item in doc["paths"].items() for m in item if m in METHODS}
    assert documented == served
    assert {p for p, _ in served if p.startswith("/admin/")} == {
        "/admin/keys", "/admin/keys/{key_id}", "/admin/keys/{key_id}/rotate", "/admin/tenants",
        "/admin/tenants/{name}"}
    assert not [e.message for e in OPENAPI_31_VALIDATOR.iter_errors(doc)]
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for item in doc["paths"].values():
        for op in item.values():
            assert "405" in op["responses"]


def test_without_a_master_key_there_is_no_admin_api():
    app = create_app(parse_config({}, {}))
    assert not [r for r in app.app.routes if r.path.startswith("/admin")]
    assert not [p for p in build_document(RequestLimits())["paths"] if p.startswith("/admin")]
