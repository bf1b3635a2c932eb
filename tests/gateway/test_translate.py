"""Wire-format translation, checked against the official SDKs' own types and parsers.

Every translated response, chunk and event is validated with the `openai` / `anthropic`
pydantic types, and streams are replayed through the real SDK clients (SSE parsing and
stream accumulators) over an `httpx.MockTransport`, so "translated" means "what the
caller's SDK accepts", not "what this module's author believed".
"""

from __future__ import annotations

import base64
import copy
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from gateway.translate import (
    DEFAULT_MAX_TOKENS,
    AnthropicStreamToOpenAI,
    OpenAIStreamToAnthropic,
    TranslationError,
    anthropic_error_to_openai,
    anthropic_error_type,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_error_to_anthropic,
    openai_error_type,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)
from gateway.translate.json_schema import anthropic_output_schema

FIXTURES = Path(__file__).parent / "fixtures" / "translate"
RAW_EVENT = TypeAdapter(RawMessageStreamEvent)
PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
PDF_B64 = base64.b64encode(b"%PDF-1.4 tiny").decode()

WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["location"],
        },
    },
}
WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": WEATHER_TOOL_OPENAI["function"]["parameters"],
}


def sse_data(name: str) -> list[dict]:
    """The `data` objects of a recorded SSE stream, in order, without the [DONE] sentinel."""
    out = []
    for line in (FIXTURES / name).read_text().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(orjson.loads(line[6:]))
    return out


def openai_sse(chunks: list[dict]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def anthropic_sse(events: list[tuple[str, dict]]) -> bytes:
    return b"".join(f"event: {kind}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n" for kind, data in events)


def serve(http: Any, body: bytes, seen: list[dict]) -> Any:
    """A client of `http` (httpx, or httpx2 for the anthropic SDK) answering every request with one SSE body."""

    def handler(request: Any) -> Any:
        seen.append(orjson.loads(request.content))
        return http.Response(200, content=body, headers={"content-type": "text/event-stream"})

    return http.Client(transport=http.MockTransport(handler))


def openai_client(body: bytes, seen: list[dict]) -> openai.OpenAI:
    http_client = serve(httpx, body, seen)
    return openai.OpenAI(api_key="sk-test", base_url="http://sluice.test/v1", http_client=http_client, max_retries=0)


def anthropic_client(body: bytes, seen: list[dict]) -> anthropic.Anthropic:
    http_client = serve(httpx2, body, seen)
    return anthropic.Anthropic(api_key="sk-test", base_url="http://sluice.test", http_client=http_client, max_retries=0)


# ---------------------------------------------------------------- OpenAI request -> Anthropic


def test_openai_request_full_conversation() -> None:
    body = {
        "model": "claude-public",
        "messages": [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer briefly."}]},
            {
                "role": "user",
                "name": "ada",
                "content": [
                    {"type": "text", "text": "What is this, and the weather in SF and Paris?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": "A cat. Checking the weather.",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "SF"}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, fog"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "24C, sun"}]},
            {"role": "user", "content": "Thanks! Which is warmer?"},
        ],
        "max_completion_tokens": 300,
        "max_tokens": 999,
        "temperature": 1.5,
        "top_p": 0.9,
        "stop": "END",
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "user-42",
        "tools": [WEATHER_TOOL_OPENAI],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.1,
        "seed": 7,
        "logprobs": True,
        "logit_bias": {"50256": -100},
        "metadata": {"trace": "x"},
        "store": True,
    }
    out = openai_request_to_anthropic(body, "claude-sonnet-4-5")
    assert out == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 300,
        "system": [{"type": "text", "text": "You are a weather bot."}, {"type": "text", "text": "Answer briefly."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this, and the weather in SF and Paris?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "A cat. Checking the weather."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "SF"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"location": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, fog"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "24C, sun"}]},
                    {"type": "text", "text": "Thanks! Which is warmer?"},
                ],
            },
        ],
        "temperature": 1.0,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": True,
        "metadata": {"user_id": "user-42"},
        "tools": [WEATHER_TOOL_ANTHROPIC],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    }


def test_openai_request_defaults_and_simple_shapes() -> None:
    body = {"model": "m", "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]}
    out = openai_request_to_anthropic(body, "claude-haiku")
    assert out == {"model": "claude-haiku", "max_tokens": DEFAULT_MAX_TOKENS, "system": "Be kind.", "messages": [{"role": "user", "content": "Hi"}]}
    assert openai_request_to_anthropic({**body, "max_tokens": 50}, "c")["max_tokens"] == 50
    assert openai_request_to_anthropic(body, "c", default_max_tokens=1024)["max_tokens"] == 1024
    assert openai_request_to_anthropic({**body, "stop": ["a", "b"], "n": 1}, "c")["stop_sequences"] == ["a", "b"]
    # the input is not mutated
    assert body == {"model": "m", "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]}


def test_openai_request_merges_same_role_turns_and_drops_empty_ones() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "second", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "third"},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}, {"type": "refusal", "refusal": "but no"}]},
            {"role": "system", "content": "late system note"},
        ]
    }
    out = openai_request_to_anthropic(body, "c")
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "first"},
                {"type": "text", "text": "second", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "third"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": "but no"}]},
    ]
    assert out["system"] == "late system note"
    roles = [m["role"] for m in out["messages"]]
    assert all(a != b for a, b in zip(roles, roles[1:]))


def test_openai_request_tool_ids_are_sanitised_consistently_and_results_come_first() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [{"id": "functions.lookup:0", "type": "function", "function": {"name": "lookup", "arguments": ""}}]},
            {"role": "user", "content": "(also, hurry)"},
            {"role": "tool", "tool_call_id": "functions.lookup:0", "content": ""},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
    }
    out = openai_request_to_anthropic(body, "c")
    assistant, results = out["messages"][1], out["messages"][2]
    assert assistant["content"] == [{"type": "tool_use", "id": "functions_lookup_0", "name": "lookup", "input": {}}]
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "functions_lookup_0"},
        {"type": "text", "text": "(also, hurry)"},
    ]
    assert out["tools"] == [{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}]
    assert "tool_choice" not in out


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        ({"type": "function", "function": {"name": "get_weather"}}, False, {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, True, None),
    ],
)
def test_openai_tool_choice(choice: object, parallel: object, expected: dict | None) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL_OPENAI], "tool_choice": choice, "parallel_tool_calls": parallel}
    assert openai_request_to_anthropic(body, "c").get("tool_choice") == expected


def test_openai_json_schema_becomes_anthropic_native_structured_output() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body = {
        "messages": [{"role": "system", "content": "Extract."}, {"role": "user", "content": "I live in Oslo"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}},
    }
    out = openai_request_to_anthropic(body, "c")
    assert out["system"] == "Extract."                      # a constraint, not an instruction
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        "additionalProperties": False}}}
    assert schema == {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    json_object = openai_request_to_anthropic({**body, "response_format": {"type": "json_object"}}, "c")
    assert "JSON object" in json_object["system"][1]["text"] and "output_config" not in json_object
    assert openai_request_to_anthropic({**body, "response_format": {"type": "text"}}, "c")["system"] == "Extract."


def test_json_schema_rewritten_to_anthropics_subset() -> None:
    # What pydantic emits for a model with a nested model, a bounded int and an Optional field.
    schema = {
        "$defs": {"Item": {"type": "object", "title": "Item", "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": 9, "title": "N"}}, "required": ["n"]}},
        "type": "object", "title": "Order", "additionalProperties": True,
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 2},
                       "note": {"anyOf": [{"type": "string", "maxLength": 10}, {"type": "null"}], "default": None},
                       "kind": {"oneOf": [{"const": "a"}, {"const": "b"}]}},
        "required": ["items", "kind"],
    }
    out = anthropic_output_schema(schema)
    assert out["additionalProperties"] is False and out["required"] == ["items", "kind"]
    item = out["$defs"]["Item"]
    assert item["additionalProperties"] is False
    assert item["properties"]["n"] == {"type": "integer", "title": "N", "description": "{minimum: 1, maximum: 9}"}
    assert out["properties"]["items"] == {"type": "array", "items": {"$ref": "#/$defs/Item"},
                                          "description": "{minItems: 2}"}
    assert out["properties"]["note"]["anyOf"][0] == {"type": "string", "description": "{maxLength: 10}"}
    assert out["properties"]["kind"] == {"anyOf": [{"const": "a"}, {"const": "b"}]}
    deep: dict = {"type": "object", "properties": {}}
    node = deep
    for _ in range(100):
        node["properties"]["x"] = node = {"type": "object", "properties": {}}
    with pytest.raises(TranslationError, match="nests deeper"):
        anthropic_output_schema(deep)


def test_openai_request_pdf_file_part() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "file", "file": {"filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PDF_B64}"}}]}]}
    block = openai_request_to_anthropic(body, "c")["messages"][0]["content"][0]
    assert block == {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}, "title": "a.pdf"}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"n": 2}, "'n' > 1"),
        ({"functions": [{"name": "f"}]}, "deprecated"),
        ({"messages": []}, "non-empty"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}]}]}, "jpeg, png"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}, "http(s)"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]}, "input_audio"),
        ({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}]}, "PDF"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]}]}, "not valid JSON"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}, "JSON object"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "deprecated"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "wizard"),
        ({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]}, "only text"),
        ({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}, "custom"),
        ({"response_format": {"type": "xml"}}, "xml"),
        ({"max_tokens": 0}, "positive"),
        ({"messages": ["not an object"]}, "malformed"),
        ({"tools": [{"type": "function"}]}, "malformed"),
        ({"temperature": "hot"}, "malformed"),
    ],
)
def test_openai_request_untranslatable(patch: dict, message: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **patch}
    with pytest.raises(TranslationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        openai_request_to_anthropic(body, "c")


def test_translation_error_is_a_value_error() -> None:
    assert issubclass(TranslationError, ValueError)
    with pytest.raises(TranslationError):
        openai_request_to_anthropic("not a dict", "c")  # type: ignore[arg-type]
    with pytest.raises(TranslationError):
        anthropic_request_to_openai([], "c")  # type: ignore[arg-type]


# --------------------------------------------------------------- Anthropic response -> OpenAI

ANTHROPIC_TOOL_MESSAGE = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBCgIYAhIM"},
        {"type": "text", "text": "I'll check that."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 400, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000, "output_tokens": 60, "service_tier": "standard"},
}


def test_anthropic_response_to_openai_with_tool_use() -> None:
    out = anthropic_response_to_openai(ANTHROPIC_TOOL_MESSAGE, "my-claude")
    completion = ChatCompletion.model_validate(out)
    assert completion.id == "chatcmpl-msg_01Aq9w938a90dw8q"
    assert completion.model == "claude-sonnet-4-5-20250929" and completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check that."
    (call,) = choice.message.tool_calls
    assert call.id == "toolu_01A09q90qw90lq917835lq9" and call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"location": "San Francisco, CA", "unit": "celsius"}
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2500, 60, 2560)
    assert usage.prompt_tokens_details.cached_tokens == 2000
    assert abs(out["created"] - time.time()) < 5


def test_anthropic_response_to_openai_tool_only_has_null_content() -> None:
    resp = {**ANTHROPIC_TOOL_MESSAGE, "content": ANTHROPIC_TOOL_MESSAGE["content"][2:]}
    message = ChatCompletion.model_validate(anthropic_response_to_openai(resp, "m")).choices[0].message
    assert message.content is None and len(message.tool_calls) == 1


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter"), ("model_context_window_exceeded", "length")],
)
def test_anthropic_stop_reasons(stop_reason: str, finish_reason: str) -> None:
    resp = {**ANTHROPIC_TOOL_MESSAGE, "content": [{"type": "text", "text": "x"}], "stop_reason": stop_reason}
    out = ChatCompletion.model_validate(anthropic_response_to_openai(resp, "m"))
    assert out.choices[0].finish_reason == finish_reason
    assert out.choices[0].message.content == "x"


# ----------------------------------------------------------------- Anthropic stream -> OpenAI


def translate_anthropic_stream(events: list[dict], include_usage: bool) -> tuple[list[dict], AnthropicStreamToOpenAI]:
    translator = AnthropicStreamToOpenAI("my-claude", include_usage=include_usage)
    chunks = [chunk for event in events for chunk in translator.feed(event)]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    return chunks, translator


def test_anthropic_text_stream_to_openai_chunks() -> None:
    chunks, translator = translate_anthropic_stream(sse_data("anthropic_stream_text.sse"), include_usage=True)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {c["id"] for c in chunks} == {"chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL"}
    assert {c["model"] for c in chunks} == {"claude-sonnet-4-5-20250929"}  # the model that answered, as the provider names it
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello! How can I help you today?"
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 25, "completion_tokens": 12, "total_tokens": 37, "prompt_tokens_details": {"cached_tokens": 0}}
    assert all(c["usage"] is None for c in chunks[:-1])
    assert translator.usage == usage["usage"]
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]) == 1


def test_anthropic_stream_without_include_usage_has_no_usage_chunk() -> None:
    chunks, translator = translate_anthropic_stream(sse_data("anthropic_stream_text.sse"), include_usage=False)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c and c["choices"] for c in chunks)
    assert translator.usage["completion_tokens"] == 12  # still known to the gateway for telemetry


def test_anthropic_tool_stream_through_the_openai_sdk() -> None:
    chunks, _ = translate_anthropic_stream(sse_data("anthropic_stream_tool_use.sse"), include_usage=True)
    seen: list[dict] = []
    client = openai_client(openai_sse(chunks), seen)
    state = ChatCompletionStreamState()
    stream = client.chat.completions.create(
        model="my-claude",
        messages=[{"role": "user", "content": "Weather in SF and Paris, and the time?"}],
        tools=[WEATHER_TOOL_OPENAI],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Okay, let me check the weather in both cities."
    calls = choice.message.tool_calls
    assert [c.id for c in calls] == ["toolu_01T1x1fJ34qAmk2tNTrN7Up6", "toolu_01AbCdEfGhIjKlMnOpQrStUv", "toolu_01ZyXwVuTsRqPoNmLkJiHgFe"]
    assert [orjson.loads(c.function.arguments) for c in calls] == [
        {"location": "San Francisco, CA", "unit": "fahrenheit"},
        {"location": "Paris, France"},
        {},
    ]
    assert [c.function.name for c in calls] == ["get_weather", "get_weather", "get_time"]
    assert final.usage.prompt_tokens == 472 + 1024 and final.usage.completion_tokens == 89
    assert final.usage.prompt_tokens_details.cached_tokens == 1024
    # the request the SDK sent translates for an Anthropic deployment
    upstream = openai_request_to_anthropic(seen[0], "claude-sonnet-4-5")
    assert upstream["stream"] is True and upstream["tools"] == [WEATHER_TOOL_ANTHROPIC]


def test_anthropic_tool_call_deltas_carry_index_id_and_name_first() -> None:
    chunks, _ = translate_anthropic_stream(sse_data("anthropic_stream_tool_use.sse"), include_usage=False)
    tool_deltas = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    firsts = {}
    for delta in tool_deltas:
        firsts.setdefault(delta["index"], delta)
    assert [firsts[i]["id"] for i in range(3)] == ["toolu_01T1x1fJ34qAmk2tNTrN7Up6", "toolu_01AbCdEfGhIjKlMnOpQrStUv", "toolu_01ZyXwVuTsRqPoNmLkJiHgFe"]
    assert all(d["function"]["arguments"] != "" for d in tool_deltas if "id" not in d)  # empty fragments skipped


def test_anthropic_thinking_blocks_are_skipped_in_openai_chunks() -> None:
    events = [
        {"type": "message_start", "message": {**ANTHROPIC_TOOL_MESSAGE, "content": [], "stop_reason": None}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm, tools."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"location": "Rome"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 30}},
        {"type": "message_stop"},
    ]
    chunks, _ = translate_anthropic_stream(events, include_usage=False)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1]["tool_calls"][0] == {"index": 0, "id": "toolu_9", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    assert deltas[2]["tool_calls"][0] == {"index": 0, "function": {"arguments": '{"location": "Rome"}'}}
    assert len(chunks) == 4 and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_anthropic_stream_error_event_reaches_the_openai_sdk_as_an_error() -> None:
    events = sse_data("anthropic_stream_text.sse")[:4] + [{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    translator = AnthropicStreamToOpenAI("m", include_usage=False)
    chunks = [c for e in events for c in translator.feed(e)]
    assert chunks[-1] == {"error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}}
    client = openai_client(openai_sse(chunks), [])
    with pytest.raises(openai.APIError, match="Overloaded"):
        for _ in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True):
            pass


# ---------------------------------------------------------------- Anthropic request -> OpenAI


def test_anthropic_request_full_conversation() -> None:
    body = {
        "model": "gpt-public",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are a weather bot."}, {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                    {"type": "text", "text": "What is this, and the weather in SF and Paris?"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Need tools.", "signature": "sig"},
                    {"type": "text", "text": "A cat. Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "SF"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, fog"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "24C"}, {"type": "text", "text": "sun"}], "is_error": False},
                    {"type": "text", "text": "Which is warmer?"},
                ],
            },
        ],
        "temperature": 0.2,
        "top_p": 0.8,
        "top_k": 40,
        "stop_sequences": ["END", "STOP"],
        "stream": True,
        "metadata": {"user_id": "user-42"},
        "tools": [WEATHER_TOOL_ANTHROPIC],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "service_tier": "auto",
    }
    out = anthropic_request_to_openai(body, "gpt-4o")
    assert out == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a weather bot.\n\nBe brief."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    {"type": "text", "text": "What is this, and the weather in SF and Paris?"},
                ],
            },
            {
                "role": "assistant",
                "content": "A cat. Checking.",
                "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"SF"}'}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C, fog"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "24C\nsun"},
            {"role": "user", "content": "Which is warmer?"},
        ],
        "max_tokens": 1024,
        "temperature": 0.2,
        "top_p": 0.8,
        "stop": ["END", "STOP"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "user-42",
        "tools": [WEATHER_TOOL_OPENAI],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }


def test_anthropic_request_options_and_simple_shapes() -> None:
    body = {"max_tokens": 64, "system": "Be kind.", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    out = anthropic_request_to_openai(body, "o3", max_tokens_field="max_completion_tokens")
    assert out == {
        "model": "o3",
        "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        "max_completion_tokens": 64,
    }
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    structured = anthropic_request_to_openai({**body, "output_config": {"format": {"type": "json_schema", "schema": schema}}}, "g")
    assert structured["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    # A schema OpenAI's strict mode accepts is sent strict: constrained there as on Anthropic.
    closed = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "array", "items": {
        "type": "object", "properties": {"c": {"type": "string"}}, "required": ["c"], "additionalProperties": False}}},
        "required": ["a", "b"], "additionalProperties": False}
    strict = anthropic_request_to_openai({**body, "output_config": {"format": {"type": "json_schema", "schema": closed}}}, "g")
    assert strict["response_format"]["json_schema"]["strict"] is True
    optional_c = copy.deepcopy(closed)
    optional_c["properties"]["b"]["items"]["required"] = []
    loose = anthropic_request_to_openai({**body, "output_config": {"format": {"type": "json_schema", "schema": optional_c}}}, "g")
    assert "strict" not in loose["response_format"]["json_schema"]
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}}
    doc = anthropic_request_to_openai({"max_tokens": 5, "messages": [{"role": "user", "content": [pdf]}]}, "g")
    assert doc["messages"][0]["content"] == [{"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF_B64}", "filename": "document.pdf"}}]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"), ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}})],
)
def test_anthropic_tool_choice(choice: dict, expected: object) -> None:
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL_ANTHROPIC], "tool_choice": choice}
    out = anthropic_request_to_openai(body, "g")
    assert out["tool_choice"] == expected and "parallel_tool_calls" not in out


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}, "server tool"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]}]}]}, "only carry text"),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}]}, "PDF"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}]}, "file"),
        ({"messages": [{"role": "user", "content": [{"type": "search_result", "source": "s", "title": "t", "content": []}]}]}, "search_result"),
        ({"messages": [{"role": "system", "content": "x"}]}, "system"),
        ({"messages": []}, "non-empty"),
        ({"tools": [{"name": "no_schema"}]}, "malformed"),
        ({"output_config": {"format": {"type": "regex", "schema": {}}}}, "regex"),
    ],
)
def test_anthropic_request_untranslatable(patch: dict, message: str) -> None:
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **patch}
    with pytest.raises(TranslationError, match=message):
        anthropic_request_to_openai(body, "g")


def test_request_round_trip_keeps_the_conversation() -> None:
    """OpenAI -> Anthropic -> OpenAI reproduces a well-formed conversation (ids, args, order)."""
    original = {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"SF"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "fog"},
            {"role": "assistant", "content": "Foggy."},
        ],
        "max_tokens": 100,
        "tools": [WEATHER_TOOL_OPENAI],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "stop": ["x"],
    }
    back = anthropic_request_to_openai(openai_request_to_anthropic(copy.deepcopy(original), "c"), "g")
    assert back == {"model": "g", **original}


# --------------------------------------------------------------- OpenAI response -> Anthropic

OPENAI_TOOL_COMPLETION = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
                    {"id": "call_def", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Oslo"'}},
                ],
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}


def test_openai_response_to_anthropic_with_tool_calls() -> None:
    out = openai_response_to_anthropic(OPENAI_TOOL_COMPLETION, "my-gpt")
    message = Message.model_validate(out)
    assert message.id == "msg_chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG" and message.model == "gpt-4o-2024-08-06"
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["tool_use", "tool_use"]
    assert message.content[0].input == {"location": "Paris"} and message.content[0].id == "call_abc"
    assert message.content[1].input == {"_raw_arguments": '{"location": "Oslo"'}  # kept, not lost
    assert message.usage.input_tokens == 93 and message.usage.cache_read_input_tokens == 1024
    assert message.usage.output_tokens == 46


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal"), (None, "end_turn")],
)
def test_openai_finish_reasons(finish_reason: str | None, stop_reason: str) -> None:
    resp = copy.deepcopy(OPENAI_TOOL_COMPLETION)
    resp["choices"][0].update(finish_reason=finish_reason, message={"role": "assistant", "content": "Hi"})
    message = Message.model_validate(openai_response_to_anthropic(resp, "m"))
    assert message.stop_reason == stop_reason and message.content[0].text == "Hi"


def test_openai_refusal_and_stop_after_tool_calls() -> None:
    refusal = copy.deepcopy(OPENAI_TOOL_COMPLETION)
    refusal["choices"][0].update(finish_reason="stop", message={"role": "assistant", "content": None, "refusal": "I can't help with that."})
    message = Message.model_validate(openai_response_to_anthropic(refusal, "m"))
    assert message.stop_reason == "refusal" and message.content[0].text == "I can't help with that."
    lax = copy.deepcopy(OPENAI_TOOL_COMPLETION)
    lax["choices"][0]["finish_reason"] = "stop"  # some compatible servers do this
    assert openai_response_to_anthropic(lax, "m")["stop_reason"] == "tool_use"


# ----------------------------------------------------------------- OpenAI stream -> Anthropic


def translate_openai_stream(chunks: list[dict]) -> tuple[list[tuple[str, dict]], OpenAIStreamToAnthropic]:
    translator = OpenAIStreamToAnthropic("my-gpt")
    events = [event for chunk in chunks for event in translator.feed(chunk)] + translator.finish()
    for kind, data in events:
        assert RAW_EVENT.validate_python(data).type == kind
    return events, translator


def assert_well_formed(events: list[tuple[str, dict]]) -> None:
    """Anthropic's event grammar: start, (block start, deltas, block stop)*, message_delta, stop."""
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    open_index, expected_next = None, 0
    for kind, data in events[1:-2]:
        if kind == "content_block_start":
            assert open_index is None and data["index"] == expected_next
            open_index, expected_next = data["index"], expected_next + 1
        elif kind == "content_block_delta":
            assert data["index"] == open_index
        else:
            assert kind == "content_block_stop" and data["index"] == open_index
            open_index = None
    assert open_index is None


def test_openai_text_stream_through_the_anthropic_sdk() -> None:
    events, translator = translate_openai_stream(sse_data("openai_stream_text.sse"))
    assert_well_formed(events)
    seen: list[dict] = []
    client = anthropic_client(anthropic_sse(events), seen)
    with client.messages.stream(model="my-gpt", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello! How can I help you today?"
    assert final.id == "msg_chatcmpl-C3mGq8d1kzQ5oV7hWq0l4JpB2xYzA" and final.model == "gpt-4o-mini-2024-07-18"
    assert final.stop_reason == "end_turn" and final.content[0].text == text
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (138, 1152, 12)
    assert translator.usage == {"input_tokens": 138, "output_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1152}
    upstream = anthropic_request_to_openai(seen[0], "gpt-4o-mini")
    assert upstream["stream_options"] == {"include_usage": True}


def test_openai_tool_call_stream_through_the_anthropic_sdk() -> None:
    events, _ = translate_openai_stream(sse_data("openai_stream_tool_calls.sse"))
    assert_well_formed(events)
    client = anthropic_client(anthropic_sse(events), [])
    with client.messages.stream(model="my-gpt", max_tokens=100, messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL_ANTHROPIC]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.id, b.name, b.input) for b in final.content] == [
        ("tool_use", "call_Xq8kPz1Vb2Nc3Md4Le5Kf6Jg", "get_weather", {"location": "San Francisco, CA"}),
        ("tool_use", "call_Rt7yUi8Op9As0Df1Gh2Jk3Lz", "get_weather", {"location": "Paris, France"}),
    ]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (82, 51)


def test_openai_stream_text_then_tool_call_without_ids_or_usage() -> None:
    """A lax compatible server: no tool id, whole call in one chunk, 'stop', no usage chunk."""
    base = {"id": "x1", "object": "chat.completion.chunk", "created": 1, "model": "local"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me look."}}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "lookup", "arguments": '{"q": "sluice"}'}}]}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    events, translator = translate_openai_stream(chunks)
    assert_well_formed(events)
    client = anthropic_client(anthropic_sse(events), [])
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "Let me look."
    assert final.content[1].name == "lookup" and final.content[1].input == {"q": "sluice"}
    assert final.content[1].id.startswith("toolu_")
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 0
    assert translator.usage is None


def test_openai_empty_stream_and_refusal_stream() -> None:
    events, _ = translate_openai_stream([])
    assert [k for k, _ in events] == ["message_start", "message_delta", "message_stop"]
    chunk = {"id": "r", "object": "chat.completion.chunk", "created": 1, "model": "g", "choices": [{"index": 0, "delta": {"refusal": "No."}, "finish_reason": "stop"}]}
    events, _ = translate_openai_stream([chunk])
    assert_well_formed(events)
    assert events[-2][1]["delta"]["stop_reason"] == "refusal"


def test_openai_stream_error_reaches_the_anthropic_sdk_as_an_error() -> None:
    translator = OpenAIStreamToAnthropic("m")
    events = translator.feed(sse_data("openai_stream_text.sse")[0]) + translator.feed({"error": {"message": "upstream exploded", "type": "server_error"}})
    assert events[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "upstream exploded"}})
    client = anthropic_client(anthropic_sse(events), [])
    with pytest.raises(anthropic.APIStatusError, match="upstream exploded"):
        with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as stream:
            stream.get_final_message()


# ----------------------------------------------------------------------------- error shapes


@pytest.mark.parametrize(
    ("status", "anthropic_type", "openai_type"),
    [
        (400, "invalid_request_error", "invalid_request_error"),
        (401, "authentication_error", "authentication_error"),
        (403, "permission_error", "permission_error"),
        (404, "not_found_error", "not_found_error"),
        (422, "invalid_request_error", "invalid_request_error"),
        (429, "rate_limit_error", "rate_limit_error"),
        (500, "api_error", "server_error"),
        (529, "overloaded_error", "server_error"),
    ],
)
def test_error_types(status: int, anthropic_type: str, openai_type: str) -> None:
    assert anthropic_error_type(status) == anthropic_type
    assert openai_error_type(status) == openai_type


def test_error_bodies_translate_both_ways() -> None:
    anthropic_body = {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}}
    as_openai = anthropic_error_to_openai(anthropic_body, 429)
    assert as_openai == {"error": {"message": anthropic_body["error"]["message"], "type": "rate_limit_error", "param": None, "code": None}}
    openai_body = {"error": {"message": "The model `gpt-9` does not exist", "type": "invalid_request_error", "param": None, "code": "model_not_found"}}
    as_anthropic = openai_error_to_anthropic(openai_body, 404)
    assert ErrorResponse.model_validate(as_anthropic).error.type == "not_found_error"
    assert as_anthropic["error"]["message"] == "The model `gpt-9` does not exist"
    assert openai_error_to_anthropic(b"<html>bad gateway</html>", 502)["error"]["message"] == "upstream provider error"


def test_translators_hold_no_state_between_requests() -> None:
    """Two translators fed the same stream produce the same events: nothing shared."""
    chunks = sse_data("openai_stream_tool_calls.sse")
    first, _ = translate_openai_stream(chunks)
    second, _ = translate_openai_stream(chunks)
    assert first == second



def test_malformed_request_errors_speak_json_not_python() -> None:
    with pytest.raises(TranslationError) as caught:
        openai_request_to_anthropic({"messages": [{"role": "user", "content": [5]}]}, "c")
    assert "Error" not in str(caught.value) and "'int' object" not in str(caught.value)
    assert "wrong type" in str(caught.value)
