"""The admin API (gateway/admin.py) in /openapi.json: served only by a gateway that has
`admin.master_key`, so the document stays true for the gateway serving it."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_LIMITS: Schema = {
    "type": "object", "additionalProperties": False,
    "properties": {"rpm": {"type": ["integer", "null"], "minimum": 1},
                   "tpm": {"type": ["integer", "null"], "minimum": 1},
                   "max_parallel": {"type": ["integer", "null"], "minimum": 1}},
}
_BUDGET: Schema = {
    "type": ["object", "null"], "additionalProperties": False, "required": ["usd"],
    "properties": {"usd": {"type": "number", "exclusiveMinimum": 0},
                   "period": {"enum": ["day", "month", "total"], "default": "month"}},
}
_USAGE: Schema = {
    "type": ["object", "null"],
    "description": "Counted this rate window (window_s, 60 s) and in flight now",
    "properties": {"window_s": {"type": "number"}, "requests": {"type": "integer"},
                   "tokens": {"type": "integer"}, "in_flight": {"type": "integer"}},
}


def admin_schemas() -> dict[str, Schema]:
    key_fields = {
        "id": {"type": "string"}, "tenant": {"type": "string"}, "name": {"type": ["string", "null"]},
        "models": {"type": ["array", "null"], "items": {"type": "string"}},
        "limits": _ref("RateLimits"), "budget": _ref("Budget"),
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
        "metadata": {"type": "object"}, "status": {"enum": ["active", "revoked", "expired"]},
        "source": {"enum": ["api", "config"]},
    }
    return {
        "RateLimits": _LIMITS,
        "Budget": _BUDGET,
        "KeyCreate": {
            "type": "object", "additionalProperties": False, "required": ["tenant"],
            "properties": {"tenant": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"},
                           "name": {"type": ["string", "null"], "maxLength": 128},
                           "models": {"type": ["array", "null"], "items": {"type": "string"}},
                           "limits": _ref("RateLimits"), "budget": _ref("Budget"),
                           "expires_at": {"type": ["string", "number", "null"],
                                          "description": "ISO 8601 time or epoch seconds"},
                           "metadata": {"type": "object", "description": "At most 4 KB of JSON"}},
        },
        "KeyPatch": {
            "type": "object", "additionalProperties": False,
            "description": "Fields present replace the key's (limits are merged field by field; null clears)",
            "properties": _patch_props(),
        },
        "Key": {"type": "object", "properties": key_fields},
        "KeyWithSecret": {"type": "object", "required": ["id", "key"],
                          "properties": {**key_fields, "key": {"type": "string",
                                                               "description": "Shown once; only its hash is kept"}}},
        "KeyUsage": {"type": "object", "properties": {
            **key_fields, "usage": _USAGE, "spend_usd": {"type": ["number", "null"]},
            "reserved_usd": {"type": ["number", "null"]}, "budget_remaining_usd": {"type": ["number", "null"]},
            "period_start": {"type": ["string", "null"], "format": "date-time"},
            "period_end": {"type": ["string", "null"], "format": "date-time"}}},
        "KeyList": {"type": "object", "properties": {"object": {"const": "list"},
                                                     "data": {"type": "array", "items": _ref("Key")}}},
        "TenantUpdate": {"type": "object", "additionalProperties": False,
                         "properties": {"limits": _ref("RateLimits"), "budget": _ref("Budget")}},
        "Tenant": {"type": "object", "properties": {
            "name": {"type": "string"}, "source": {"enum": ["api", "config", "none"]},
            "limits": _ref("RateLimits"), "budget": _ref("Budget"), "usage": _USAGE,
            "spend_usd": {"type": ["number", "null"]}, "period_start": {"type": ["string", "null"]}}},
        "TenantList": {"type": "object", "properties": {"object": {"const": "list"},
                                                        "data": {"type": "array", "items": _ref("Tenant")}}},
    }


def _patch_props() -> dict[str, Schema]:
    return {"name": {"type": ["string", "null"]}, "models": {"type": ["array", "null"], "items": {"type": "string"}},
            "limits": _ref("RateLimits"), "budget": _ref("Budget"),
            "expires_at": {"type": ["string", "number", "null"]}, "metadata": {"type": ["object", "null"]}}


def _op(summary: str, ok: tuple[str, str, str], body: str | None = None, path_param: str | None = None,
        errors: tuple[int, ...] = (400, 401, 404, 409, 503)) -> dict[str, Any]:
    status, description, schema = ok
    texts = {400: "Invalid body (the message names the field)", 401: "Missing or wrong master key",
             404: "No such key", 409: "A key from sluice.yaml, or a revoked key", 503: "Redis is unavailable"}
    op: dict[str, Any] = {
        "summary": summary, "tags": ["admin"], "security": [{"bearer": []}, {"apiKey": []}],
        "responses": {status: {"description": description, "content": _json(_ref(schema))},
                      **{str(e): {"description": texts[e], "content": _json(_ref("OpenAIError"))} for e in errors},
                      "405": {"description": "Method not allowed on this path", "content": _json(_ref("AnyError"))}},
    }
    if body:
        op["requestBody"] = {"required": True, "content": _json(_ref(body))}
    if path_param:
        op["parameters"] = [{"name": path_param, "in": "path", "required": True, "schema": {"type": "string"}}]
    return op


def admin_paths() -> dict[str, Any]:
    """Every /admin/* route, authenticated by the master key (Bearer or x-api-key)."""
    return {
        "/admin/keys": {
            "get": _op("Every key, from sluice.yaml and the API (no secrets)", ("200", "The keys", "KeyList"),
                       errors=(401, 503)),
            "post": _op("Create a virtual key; its secret is in this answer only",
                        ("201", "The key and its secret", "KeyWithSecret"), body="KeyCreate", errors=(400, 401, 503)),
        },
        "/admin/keys/{key_id}": {
            "get": _op("One key: limits, budget, usage this window and in flight, spend this period",
                       ("200", "The key", "KeyUsage"), path_param="key_id", errors=(401, 404, 503)),
            "patch": _op("Change a key (limits, budget, models, name, expiry, metadata)", ("200", "The key", "Key"),
                         body="KeyPatch", path_param="key_id"),
            "delete": _op("Revoke a key: refused by every replica within limits.key_cache_s",
                          ("200", "The revoked key", "Key"), path_param="key_id", errors=(401, 404, 409, 503)),
        },
        "/admin/keys/{key_id}/rotate": {
            "post": _op("A new secret for the key (same id and counters); the old one is refused",
                        ("200", "The key and its new secret", "KeyWithSecret"), path_param="key_id",
                        errors=(401, 404, 409, 503)),
        },
        "/admin/tenants": {
            "get": _op("Every tenant with limits (sluice.yaml and the API)", ("200", "The tenants", "TenantList"),
                       errors=(401, 503)),
        },
        "/admin/tenants/{name}": {
            "get": _op("A tenant's limits, budget, usage and spend", ("200", "The tenant", "Tenant"),
                       path_param="name", errors=(400, 401, 503)),
            "put": _op("Set a tenant's limits and budget (over limits.tenants)", ("200", "The tenant", "Tenant"),
                       body="TenantUpdate", path_param="name", errors=(400, 401, 503)),
            "patch": _op("Change some of a tenant's limits or its budget", ("200", "The tenant", "Tenant"),
                         body="TenantUpdate", path_param="name", errors=(400, 401, 503)),
            "delete": _op("Drop the API's record (back to limits.tenants)", ("200", "The tenant", "Tenant"),
                          path_param="name", errors=(400, 401, 503)),
        },
    }
