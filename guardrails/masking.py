"""Mask-and-restore: per-request placeholders such as ``<EMAIL_ADDRESS_1>``.

A Restorer lives exactly as long as one request: the gateway gets it from
``check_input`` and hands it to the output side; nothing else keeps a reference, so
the mapping from placeholder to value is never stored, logged or traced.
"""

from __future__ import annotations

import re

_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")


class Restorer:
    """Hands out placeholders (same value -> same placeholder) and puts values back."""

    def __init__(self) -> None:
        self._placeholder_for: dict[tuple[str, str], str] = {}
        self._value_for: dict[str, str] = {}
        self._counters: dict[str, int] = {}
        self.max_placeholder_len = 0

    def __len__(self) -> int:
        return len(self._value_for)

    def placeholder(self, entity: str, value: str) -> str:
        key = (entity, value)
        existing = self._placeholder_for.get(key)
        if existing is not None:
            return existing
        number = self._counters.get(entity, 0) + 1
        self._counters[entity] = number
        token = f"<{entity}_{number}>"
        self._placeholder_for[key] = token
        self._value_for[token] = value
        self.max_placeholder_len = max(self.max_placeholder_len, len(token))
        return token

    def restore(self, text: str) -> str:
        if not self._value_for or "<" not in text:
            return text
        return _PLACEHOLDER.sub(lambda m: self._value_for.get(m.group(0), m.group(0)), text)

    def holdback_start(self, text: str) -> int:
        """Index where a possibly unfinished placeholder starts at the end of `text`.

        Returns len(text) when the tail cannot be the beginning of one of this
        request's placeholders, so the hold-back is never longer than a placeholder.
        """
        if not self._value_for:
            return len(text)
        start = text.rfind("<", max(0, len(text) - self.max_placeholder_len + 1))
        if start == -1:
            return len(text)
        tail = text[start:]
        if any(p.startswith(tail) and p != tail for p in self._value_for):
            return start
        return len(text)
