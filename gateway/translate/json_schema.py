"""A caller's JSON Schema in the subset Anthropic's structured outputs accept.

OpenAI callers send `response_format: {type: json_schema}` with any schema; Anthropic's
`output_config.format` constrains decoding only to a subset: every object closed
(`additionalProperties: false`), string `format`s from a short list, `minItems` 0 or 1,
no numeric or length bounds. Keywords outside the subset are not dropped silently: like
the Anthropic SDK does for its own callers, they are written into the `description`, so
the model still sees them, and the answer stays valid against the caller's schema in
every case the constrained decoder can express.
"""

from __future__ import annotations

from typing import Any

from gateway.translate.errors import TranslationError

MAX_SCHEMA_DEPTH = 32          # pydantic models nest a few levels; a deeper schema is hostile

_STRING_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "uri",
                             "ipv4", "ipv6", "uuid"})
# Keywords carried over as they are (the rest of the subset is handled per type below).
_KEPT = ("title", "description", "enum", "const")
# Keywords that only annotate or that the subset handles: never moved to the description.
_IGNORED = frozenset({"$schema", "$id", "strict", "examples", "nullable", "readOnly", "writeOnly", "deprecated"})
_COMBINATORS = ("anyOf", "oneOf", "allOf")


def anthropic_output_schema(schema: Any) -> dict[str, Any]:
    """`schema` rewritten for Anthropic's `output_config.format`; a new dict, the input is not changed."""
    if not isinstance(schema, dict):
        raise TranslationError("response_format.json_schema.schema must be a JSON object")
    return _node(schema, 0)


def _node(schema: Any, depth: int) -> Any:
    if not isinstance(schema, dict):
        return schema                                   # `true` / `false` schemas
    if depth > MAX_SCHEMA_DEPTH:
        raise TranslationError(f"response_format schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
    rest = dict(schema)
    out: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        defs = rest.pop(key, None)
        if isinstance(defs, dict):
            out[key] = {name: _node(sub, depth + 1) for name, sub in defs.items()}
    if "$ref" in rest:
        out["$ref"] = rest.pop("$ref")
    for key in _KEPT:
        if key in rest:
            out[key] = rest.pop(key)
    for key in _COMBINATORS:
        options = rest.pop(key, None)
        if isinstance(options, list):
            # oneOf has no constrained form; anyOf accepts the same documents for disjoint options.
            out["anyOf" if key == "oneOf" else key] = [_node(o, depth + 1) for o in options]
    kind = rest.pop("type", None)
    if kind is not None:
        out["type"] = kind
    kinds = set(kind) if isinstance(kind, list) else {kind}
    if "object" in kinds or (kind is None and "properties" in rest):
        properties = rest.pop("properties", None) or {}
        out["properties"] = {name: _node(sub, depth + 1) for name, sub in properties.items()}
        if "required" in rest:
            out["required"] = rest.pop("required")
        rest.pop("additionalProperties", None)
        out["additionalProperties"] = False
    if "array" in kinds:
        if "items" in rest:
            out["items"] = _node(rest.pop("items"), depth + 1)
        if rest.get("minItems") in (0, 1):
            out["minItems"] = rest.pop("minItems")
    if "string" in kinds and rest.get("format") in _STRING_FORMATS:
        out["format"] = rest.pop("format")
    for key in _IGNORED:
        rest.pop(key, None)
    if rest:
        hints = ", ".join(f"{key}: {value}" for key, value in rest.items())
        out["description"] = f"{out['description']}\n\n{{{hints}}}" if out.get("description") else f"{{{hints}}}"
    return out


def openai_strict_compatible(schema: Any, depth: int = 0) -> bool:
    """Whether OpenAI's strict structured outputs accept `schema` as it is: every object
    closed and every property required. Anthropic's `output_config.format` always
    constrains decoding; on an OpenAI deployment only `strict: true` does the same."""
    if not isinstance(schema, dict):
        return isinstance(schema, bool)
    if depth > MAX_SCHEMA_DEPTH:
        return False
    properties = schema.get("properties")
    if schema.get("type") == "object" or properties is not None:
        if schema.get("additionalProperties") is not False:
            return False
        if not isinstance(properties, dict) or set(schema.get("required") or ()) != set(properties):
            return False
    children: list[Any] = list((properties or {}).values())
    for key in ("$defs", "definitions"):
        children.extend((schema.get(key) or {}).values())
    for key in ("anyOf", "allOf"):
        children.extend(schema.get(key) or ())
    if "items" in schema:
        children.append(schema["items"])
    if "oneOf" in schema:
        return False                                    # strict mode has no oneOf
    return all(openai_strict_compatible(child, depth + 1) for child in children)
