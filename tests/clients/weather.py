"""The one task every client performs: a weather question, a tool, a structured answer.

The mock provider answers deterministically, so each expectation below is what a client
must see when Sluice relays the provider faithfully (see gateway/mock/content.py):
text is "Mock answer to: <prompt>" padded to 16 words, a tool call carries arguments built
from the tool's schema ("mock" for strings), and the answer after a tool result is
"Mock answer from tool result: <the result>".
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field

PROMPT = "What is the weather in Paris today?"
ANSWER_START = f"Mock answer to: {PROMPT}"
ANSWER_WORDS = 16                      # the mock's default answer length (MockOptions.output_tokens)
TOOL_ANSWER_START = "Mock answer from tool result:"
TOOL_NAME = "get_weather"
TOOL_DESCRIPTION = "Current weather at a city."


class Sky(str, Enum):
    SUNNY = "sunny"
    RAINY = "rainy"


class Reading(BaseModel):
    celsius: float
    taken_at: datetime


class Weather(BaseModel):
    """A schema shaped like real ones: a nested model ($defs + $ref), an enum, a
    date-time, a bounded integer, a nullable field and a non-empty list."""

    city: str
    sky: Sky
    reading: Reading
    humidity: int = Field(ge=0, le=100)
    warning: str | None
    tags: list[str] = Field(min_length=1)


def get_weather(city: str) -> str:
    """Current weather at a city."""
    return f"Sunny and 21 degrees in {city}"


def tool_result(city: str = "mock") -> str:
    """What the tool returns for the arguments the mock's tool call carries."""
    return get_weather(city)


def assert_answer_text(text: str) -> None:
    """The echo of PROMPT, padded to the mock's answer length."""
    assert text.startswith(ANSWER_START), text
    assert len(text.split()) == ANSWER_WORDS, text


def assert_tool_answer_text(text: str, result: str | None = None) -> None:
    """The model's text after the tool result: it mentions what the tool returned."""
    assert text.startswith(f"{TOOL_ANSWER_START} {result or tool_result()}"), text


def tool_result_reached(body: dict[str, Any], result: str | None = None) -> bool:
    """Whether a provider request (any wire format) carries the tool result."""
    return (result or tool_result()) in json.dumps(body)
