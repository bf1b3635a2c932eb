"""A small JSON value that validates against a JSON Schema, as a real model's constrained
decoding would produce it.

Clients parse what the mock answers into their own types (pydantic models from
`response_format`, tool arguments, Anthropic and Responses structured outputs), so the
example must satisfy the schema they sent, as pydantic and the SDKs emit it: `$ref` into
`$defs`, nullable `anyOf`, enums, `required`, closed objects, `minItems`, string formats
and numeric bounds. Strings are "mock", integers 1, numbers 1.5, booleans true, unless a
keyword asks for something else.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 12          # a recursive model (a tree of nodes) stops here with the smallest value

_FORMATS: dict[str, str] = {
    "date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "time": "00:00:00Z", "duration": "P1D",
    "email": "mock@example.com", "idn-email": "mock@example.com", "hostname": "example.com",
    "idn-hostname": "example.com", "ipv4": "127.0.0.1", "ipv6": "::1", "uri": "https://example.com/mock",
    "iri": "https://example.com/mock", "uri-reference": "https://example.com/mock",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def example_from_schema(schema: Any) -> Any:
    """A value valid against `schema` (a dict; anything else gives `{}`)."""
    if not isinstance(schema, dict):
        return {}
    return _example(schema, schema, 0)


def _example(schema: Any, root: dict[str, Any], depth: int) -> Any:
    if schema is True or not isinstance(schema, dict):
        return "mock"
    schema = _resolved(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return next((value for value in enum if value is not None), enum[0])
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _example(_preferred(options, root, depth), root, depth + 1)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        return _all_of(schema, all_of, root, depth)
    kind = _kind(schema)
    if kind == "null" or (depth > MAX_DEPTH and kind in ("object", "array") and _nullable(schema)):
        return None
    if kind == "object":
        return _object(schema, root, depth)
    if kind == "array":
        return _array(schema, root, depth)
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(schema, kind)
    if kind == "boolean":
        return True
    return "mock"


def _resolved(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow local `$ref`s ("#/$defs/Name", "#/definitions/Name", "#"); sibling keys win."""
    seen = 0
    while isinstance(schema.get("$ref"), str) and seen < MAX_DEPTH:
        target = _pointer(root, schema["$ref"])
        if not isinstance(target, dict):
            return {key: value for key, value in schema.items() if key != "$ref"}
        schema = {**target, **{key: value for key, value in schema.items() if key != "$ref"}}
        seen += 1
    return schema


def _pointer(root: dict[str, Any], ref: str) -> Any:
    """The node a local ref points at: "#/$defs/Name", or the bare JSON pointer
    "/$defs/Name" that litellm writes into schemas for Anthropic."""
    if not ref.startswith(("#", "/")):
        return None
    node: Any = root
    for part in filter(None, ref.removeprefix("#").split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _preferred(options: list[Any], root: dict[str, Any], depth: int) -> Any:
    """The option a model would fill in: not `null`, and not an object past the depth limit."""
    def is_null(option: Any) -> bool:
        return isinstance(option, dict) and _kind(_resolved(option, root)) == "null"

    concrete = [option for option in options if not is_null(option)]
    if depth > MAX_DEPTH and len(concrete) < len(options):
        return {"type": "null"}                       # end a recursive structure with its null branch
    return concrete[0] if concrete else options[0]


def _nullable(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return isinstance(kind, list) and "null" in kind


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        concrete = [k for k in kind if k != "null"]
        return concrete[0] if concrete else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "additionalProperties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _all_of(schema: dict[str, Any], parts: list[Any], root: dict[str, Any], depth: int) -> Any:
    """Every part must hold: objects are merged; otherwise the first part decides."""
    rest = {key: value for key, value in schema.items() if key != "allOf"}
    values = [_example(part, root, depth + 1) for part in parts]
    if rest.get("properties") or rest.get("type") == "object":
        values.append(_object(rest, root, depth))
    if all(isinstance(value, dict) for value in values):
        merged: dict[str, Any] = {}
        for value in values:
            merged.update(value)
        return merged
    return values[0]


def _object(schema: dict[str, Any], root: dict[str, Any], depth: int) -> dict[str, Any]:
    """Every declared property (so `required` holds whatever it lists), nothing undeclared
    (so `additionalProperties: false` holds); past the depth limit, only the required ones."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    required = [name for name in required if isinstance(name, str)] if isinstance(required, list) else []
    names = [name for name in properties if depth <= MAX_DEPTH or name in required]
    value = {name: _example(properties[name], root, depth + 1) for name in names}
    extra = schema.get("additionalProperties")
    for name in required:
        if name not in value:                        # required but only allowed by additionalProperties
            value[name] = _example(extra if isinstance(extra, dict) else {}, root, depth + 1)
    return value


def _array(schema: dict[str, Any], root: dict[str, Any], depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    items = schema.get("items")
    value: list[Any] = []
    if isinstance(prefix, list):                     # tuples: one value per position
        value = [_example(item, root, depth + 1) for item in prefix]
    minimum = _int(schema.get("minItems"), 0)
    maximum = _int(schema.get("maxItems"), None)
    wanted = max(minimum, len(value), 0 if depth > MAX_DEPTH or items is False else 1)
    if maximum is not None:
        wanted = min(wanted, maximum)
    if len(value) < wanted and items is not False:
        item = _example(items if isinstance(items, dict) else {}, root, depth + 1)
        value.extend(_distinct(item, index) if schema.get("uniqueItems") else item
                     for index in range(len(value), wanted))
    return value[:wanted] if maximum is not None else value


def _distinct(item: Any, index: int) -> Any:
    """uniqueItems: vary strings and numbers by position (other kinds rarely ask for it)."""
    if isinstance(item, str) and index:
        return f"{item}{index + 1}"
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        return item + index
    return item


def _string(schema: dict[str, Any]) -> str:
    text = _FORMATS.get(schema.get("format") or "", "mock")
    minimum = _int(schema.get("minLength"), 0)
    maximum = _int(schema.get("maxLength"), None)
    if len(text) < minimum:
        text += "k" * (minimum - len(text))
    if maximum is not None:
        text = text[:maximum]
    return text


def _number(schema: dict[str, Any], kind: str) -> int | float:
    """1 or 1.5, moved inside minimum / maximum (inclusive or exclusive) and onto multipleOf."""
    integer = kind == "integer"
    value: float = 1 if integer else 1.5
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum", max)
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum", min)
    if low is not None and (value < low or (low_open and value <= low)):
        value = math.floor(low) + 1 if integer and (low_open or not float(low).is_integer()) else low
        if not integer and low_open:
            value = (low + high) / 2 if high is not None else low + 1
    if high is not None and (value > high or (high_open and value >= high)):
        value = math.ceil(high) - 1 if integer and (high_open or not float(high).is_integer()) else high
        if not integer and high_open:
            value = (low + high) / 2 if low is not None else high - 1
    multiple = schema.get("multipleOf")
    if _is_number(multiple) and multiple > 0 and value % multiple:
        value = math.ceil(value / multiple) * multiple
    return int(value) if integer else float(value)


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str, tighter: Any) -> tuple[Any, bool]:
    """The tighter of an inclusive and an exclusive bound: (bound or None, exclusive?)."""
    closed, opened = schema.get(inclusive), schema.get(exclusive)
    closed = closed if _is_number(closed) else None
    opened = opened if _is_number(opened) else None
    if opened is None:
        return closed, False
    if closed is None or tighter(closed, opened) == opened:
        return opened, True
    return closed, False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(value: Any, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
