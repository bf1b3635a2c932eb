"""Shape checks shared by both formats: enough to give a clear 400 naming the field,
not a re-implementation of the providers' schemas (unknown fields pass through)."""

from __future__ import annotations

from typing import Any

from gateway.errors import BadRequest

_TYPES: dict[type, str] = {str: "a string", list: "an array", dict: "an object", bool: "a boolean",
                           int: "an integer", float: "a number"}


def require(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in body or body[name] is None:
        raise BadRequest(f"Missing required parameter: '{name}'", param=name)
    return expect(body, name, kind)


def expect(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if value is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int subclass in Python; JSON says they differ.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        described = " or ".join(_TYPES.get(k, k.__name__) for k in kinds)
        raise BadRequest(f"Invalid type for '{name}': expected {described}", param=name)
    return value


def require_messages(body: dict[str, Any], roles: frozenset[str]) -> list[Any]:
    """The messages array, each an object whose `role` is one the format defines: a role
    the provider does not know is the caller's 400 here, not a provider's after a retry."""
    messages = require(body, "messages", list)
    if not messages:
        raise BadRequest("'messages' must contain at least one message", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"Invalid message at messages[{i}]: expected an object with a 'role'",
                             param=f"messages[{i}]")
        if m["role"] not in roles:
            raise BadRequest(f"Invalid value for messages[{i}].role: {m['role'][:40]!r}; "
                             f"expected one of {', '.join(sorted(roles))}", param=f"messages[{i}].role")
    return messages


def require_model(body: dict[str, Any]) -> str:
    model = require(body, "model", str)
    if not model:
        raise BadRequest("'model' must not be empty", param="model")
    return model
