"""The mock upstream speaks the real wire formats: the official SDKs are its clients."""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from collections.abc import Iterator
from datetime import datetime
from enum import Enum
from typing import Literal
from uuid import UUID

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel, ConfigDict, Field

from gateway.mock.content import example_from_schema
from gateway.mock.faults import fault_from_model
from tests.mock_server import start_mock

KEY = "sk-mock-test"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather at a place",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "f"]},
                           "days": {"type": "integer"}},
            "required": ["location"],
        },
    },
}
USER = [{"role": "user", "content": "What is the weather in Paris today?"}]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    url, stop = start_mock(api_key=KEY)
    yield url
    stop()


@pytest.fixture(scope="module")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {KEY}"}, trust_env=False,
                      timeout=10) as client:
        yield client


@pytest.fixture(autouse=True)
def clean_mock(http: httpx.Client) -> None:
    http.delete("/_mock/faults").raise_for_status()
    http.delete("/_mock/requests").raise_for_status()


@pytest.fixture(scope="module")
def oai(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def claude(base_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=base_url, api_key=KEY, max_retries=0) as client:
        yield client


# --- OpenAI chat -----------------------------------------------------------------------------


def test_chat_plain_is_deterministic_and_counts_tokens(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(model="m1", messages=USER)
    second = oai.chat.completions.create(model="m1", messages=USER)
    assert first.id.startswith("chatcmpl-") and first.id != second.id
    assert first.object == "chat.completion" and first.model == "m1"
    choice = first.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert choice.message.content == second.choices[0].message.content
    assert choice.message.content.startswith("Mock answer to: What is the weather in Paris today?")
    assert len(choice.message.content.split()) == 16
    # 7 prompt words + 3 per message
    assert (first.usage.prompt_tokens, first.usage.completion_tokens, first.usage.total_tokens) == (10, 16, 26)


def test_chat_n_and_max_tokens_truncate_with_length(oai: openai.OpenAI) -> None:
    result = oai.chat.completions.create(model="m1", messages=USER, n=2, max_completion_tokens=5)
    assert [c.index for c in result.choices] == [0, 1]
    assert all(c.finish_reason == "length" for c in result.choices)
    assert result.choices[1].message.content == "Mock answer to: What is"
    assert result.usage.completion_tokens == 10


def test_chat_stream_matches_plain_and_reports_usage(oai: openai.OpenAI) -> None:
    plain = oai.chat.completions.create(model="m1", messages=USER).choices[0].message.content
    chunks = list(oai.chat.completions.create(model="m1", messages=USER, stream=True,
                                              stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_chat_stream_ends_with_done_on_the_wire(http: httpx.Client) -> None:
    body = {"model": "m1", "messages": USER, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    assert "usage" not in json.loads(lines[-2][6:])  # no include_usage: no usage chunk


def test_chat_tools_call_the_first_tool_with_schema_arguments(oai: openai.OpenAI) -> None:
    result = oai.chat.completions.create(model="m1", messages=USER, tools=[WEATHER_TOOL])
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "mock", "unit": "celsius", "days": 1}
    none = oai.chat.completions.create(model="m1", messages=USER, tools=[WEATHER_TOOL], tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"


def test_chat_tools_stream_in_openai_delta_shape(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="m1", messages=USER, tools=[WEATHER_TOOL], stream=True))
    first = chunks[0].choices[0].delta.tool_calls[0]
    assert first.index == 0 and first.id.startswith("call_") and first.function.name == "get_weather"
    arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments for c in chunks
                        if c.choices[0].delta.tool_calls)
    assert json.loads(arguments)["location"] == "mock"
    assert len(chunks) > 3 and chunks[-1].choices[0].finish_reason == "tool_calls"


def test_chat_response_format_json(oai: openai.OpenAI) -> None:
    class Forecast(BaseModel):
        city: str
        temperature: float
        sunny: bool

    parsed = oai.chat.completions.parse(model="m1", messages=USER, response_format=Forecast)
    assert parsed.choices[0].message.parsed == Forecast(city="mock", temperature=1.5, sunny=True)
    plain = oai.chat.completions.create(model="m1", messages=USER, response_format={"type": "json_object"})
    assert json.loads(plain.choices[0].message.content)["answer"].startswith("Mock answer to:")


# --- embeddings, models, responses ----------------------------------------------------------


def test_embeddings_base64_default_and_float_agree(oai: openai.OpenAI, http: httpx.Client) -> None:
    result = oai.embeddings.create(model="mock-embed", input=["hello world", "other", "hello world"])
    vectors = [d.embedding for d in result.data]
    assert [len(v) for v in vectors] == [64, 64, 64]
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    assert math.isclose(math.fsum(x * x for x in vectors[1]), 1.0, rel_tol=1e-5)
    assert result.usage.prompt_tokens == 5  # whitespace words of the three inputs
    raw = http.post("/v1/embeddings", json={"model": "e", "input": "hello world", "encoding_format": "base64"}).json()
    decoded = list(struct.unpack("<64f", base64.b64decode(raw["data"][0]["embedding"])))
    floats = http.post("/v1/embeddings", json={"model": "e", "input": "hello world"}).json()
    assert decoded == floats["data"][0]["embedding"] == vectors[0]


def test_embeddings_tokens_and_dimensions(oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(model="e", input=[[1, 2, 3], [4, 5]], dimensions=8, encoding_format="float")
    assert [len(d.embedding) for d in result.data] == [8, 8] and result.usage.prompt_tokens == 5
    with pytest.raises(openai.BadRequestError) as error:
        oai.embeddings.create(model="e", input=[])
    assert error.value.body["param"] == "input"


def test_models_list(oai: openai.OpenAI) -> None:
    assert [m.id for m in oai.models.list()] == ["m1", "m2", "mock-chat", "mock-embed"]
    assert oai.models.retrieve("m2").owned_by == "sluice-mock"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("nope")


def test_responses_plain_and_stream(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="m1", input="Tell me a story", max_output_tokens=100)
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text.startswith("Mock answer to: Tell me a story")
    assert response.usage.input_tokens == 7 and response.usage.output_tokens == 16
    events = list(oai.responses.create(model="m1", input="Tell me a story", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == response.output_text == events[-1].response.output_text


# --- Anthropic -------------------------------------------------------------------------------


def test_messages_plain_and_max_tokens(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="claude-mock", max_tokens=100, system="Be brief.", messages=USER)
    assert message.id.startswith("msg_") and message.type == "message" and message.model == "claude-mock"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Mock answer to: What is the weather")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 16)
    short = claude.messages.create(model="claude-mock", max_tokens=3, messages=USER)
    assert short.stop_reason == "max_tokens" and short.content[0].text == "Mock answer to:"


def test_messages_require_max_tokens_like_the_real_api(http: httpx.Client) -> None:
    response = http.post("/v1/messages", json={"model": "c", "messages": USER})
    assert response.status_code == 400
    assert response.json() == {"type": "error",
                               "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}}


def test_messages_stream(claude: anthropic.Anthropic, http: httpx.Client) -> None:
    plain = claude.messages.create(model="c", max_tokens=100, messages=USER).content[0].text
    with claude.messages.stream(model="c", max_tokens=100, messages=USER) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.content[0].text == plain and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 16 and final.usage.input_tokens == 10
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    body = {"model": "c", "max_tokens": 100, "messages": USER, "stream": True}
    with http.stream("POST", "/v1/messages", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines[0::2]]
    assert names[:3] == ["message_start", "content_block_start", "ping"] and names[-1] == "message_stop"
    assert all(line.startswith("data: {") for line in lines[1::2])


def test_messages_tools_plain_and_stream(claude: anthropic.Anthropic) -> None:
    tool = {"name": "get_weather", "description": "Weather",
            "input_schema": WEATHER_TOOL["function"]["parameters"]}
    message = claude.messages.create(model="c", max_tokens=100, messages=USER, tools=[tool])
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "get_weather"
    assert block.input == {"location": "mock", "unit": "celsius", "days": 1}
    with claude.messages.stream(model="c", max_tokens=100, messages=USER, tools=[tool]) as stream:
        final = stream.get_final_message()
    assert final.content[0].input == block.input and final.stop_reason == "tool_use"


# --- Azure, auth, errors, request log --------------------------------------------------------


def test_azure_deployment_paths_and_api_key_header(base_url: str, http: httpx.Client) -> None:
    with openai.AzureOpenAI(azure_endpoint=base_url, api_version="2024-10-21", api_key=KEY,
                            max_retries=0) as azure:
        chat = azure.chat.completions.create(model="my-gpt", messages=USER)
        vectors = azure.embeddings.create(model="my-embed", input="hi")
    assert chat.model == "my-gpt" and chat.choices[0].message.content.startswith("Mock answer")
    assert vectors.model == "my-embed" and len(vectors.data[0].embedding) == 64
    seen = http.get("/_mock/requests").json()
    assert seen[0]["path"] == "/openai/deployments/my-gpt/chat/completions"
    assert "api-version=2024-10-21" in seen[0]["query"] and seen[0]["headers"]["api-key"] == KEY
    missing_version = http.post("/openai/deployments/my-gpt/chat/completions", json={"messages": USER})
    assert missing_version.status_code == 404


def test_wrong_key_is_rejected_in_each_wire_format(base_url: str) -> None:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as oai_error:
            client.chat.completions.create(model="m1", messages=USER)
    assert oai_error.value.status_code == 401 and oai_error.value.code == "invalid_api_key"
    with anthropic.Anthropic(base_url=base_url, api_key="sk-wrong", max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError) as claude_error:
            client.messages.create(model="c", max_tokens=5, messages=USER)
    assert claude_error.value.body["error"]["type"] == "authentication_error"


def test_malformed_json_is_a_400(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert http.post("/v1/unknown", json={}).status_code == 404


def test_request_log_shows_what_reached_the_provider(oai: openai.OpenAI, http: httpx.Client) -> None:
    oai.chat.completions.create(model="m1", messages=USER, extra_headers={"x-trace": "t1"})
    (seen,) = http.get("/_mock/requests").json()
    assert seen["path"] == "/v1/chat/completions" and seen["method"] == "POST"
    assert seen["headers"]["authorization"] == f"Bearer {KEY}" and seen["headers"]["x-trace"] == "t1"
    assert seen["body"]["messages"] == USER
    assert http.delete("/_mock/requests").json() == {"cleared": 1}


# --- faults ----------------------------------------------------------------------------------


def test_status_fault_with_retry_after_applies_count_times(http: httpx.Client) -> None:
    rules = [{"mode": "status", "status": 503, "retry_after": 2, "count": 2, "path": "/v1/chat/completions"}]
    assert http.post("/_mock/faults", json=rules).json() == {"rules": 1}
    body = {"model": "m1", "messages": USER}
    assert http.post("/v1/embeddings", json={"model": "e", "input": "x"}).status_code == 200  # path filter
    first = http.post("/v1/chat/completions", json=body)
    assert first.status_code == 503 and first.headers["retry-after"] == "2"
    assert first.json()["error"]["type"] == "server_error"
    assert http.get("/_mock/faults").json()[0]["remaining"] == 1
    assert http.post("/v1/chat/completions", json=body).status_code == 503
    assert http.post("/v1/chat/completions", json=body).status_code == 200
    anthropic_body = {"model": "c", "max_tokens": 5, "messages": USER}
    http.post("/_mock/faults", json={"mode": "status", "status": 529, "model": "c"})
    overloaded = http.post("/v1/messages", json=anthropic_body)
    assert overloaded.status_code == 529 and overloaded.json()["error"]["type"] == "overloaded_error"


def test_invalid_fault_rules_are_rejected(http: httpx.Client) -> None:
    assert http.post("/_mock/faults", json=[{"mode": "explode"}]).status_code == 400


def test_drop_closes_without_a_response(http: httpx.Client) -> None:
    http.post("/_mock/faults", json=[{"mode": "drop", "count": 1}])
    with pytest.raises(httpx.RemoteProtocolError):
        http.post("/v1/chat/completions", json={"model": "m1", "messages": USER})
    assert http.post("/v1/chat/completions", json={"model": "m1", "messages": USER}).status_code == 200


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"model": "m1", "messages": USER, "stream": True}),
    ("/v1/messages", {"model": "c", "max_tokens": 50, "messages": USER, "stream": True}),
])
def test_midstream_drop_cuts_the_stream_before_its_end(http: httpx.Client, path: str, body: dict) -> None:
    http.post("/_mock/faults", json=[{"mode": "midstream_drop", "after_events": 3}])
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            received.extend(line for line in response.iter_lines() if line.startswith("data:"))
    assert len(received) == 3
    assert "[DONE]" not in received[-1] and "message_stop" not in received[-1]


def test_model_name_faults(http: httpx.Client) -> None:
    limited = http.post("/v1/chat/completions", json={"model": "fail-429", "messages": USER})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert http.post("/v1/chat/completions", json={"model": "fail-500", "messages": USER}).status_code == 500
    with pytest.raises(httpx.RemoteProtocolError):
        http.post("/v1/chat/completions", json={"model": "fail-drop", "messages": USER})
    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json={"model": "fail-timeout", "messages": USER}, timeout=0.3)
    assert time.perf_counter() - started < 2
    assert http.post("/v1/chat/completions", json={"model": "slow-50", "messages": USER}).status_code == 200
    assert fault_from_model("fail-midstream").mode == "midstream_drop"
    assert fault_from_model("m1") is None and fault_from_model("fail-999") is None


# --- latency and pacing ----------------------------------------------------------------------


def test_latency_and_stream_pacing() -> None:
    url, stop = start_mock(latency_ms=80, tokens_per_second=200, output_tokens=10)
    try:
        with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
            started = time.perf_counter()
            with client.stream("POST", "/v1/chat/completions",
                               json={"model": "m1", "messages": USER, "stream": True}) as response:
                first_byte = time.perf_counter() - started
                events = [line for line in response.iter_lines() if line]
            total = time.perf_counter() - started
    finally:
        stop()
    # 1 role + 10 words + 1 finish + [DONE] = 13 events, 5 ms apart after 80 ms of latency
    assert len(events) == 13
    assert 0.08 <= first_byte < 0.5
    assert total >= 0.08 + 12 * 0.005


# --- what agent clients need: tool results, structured outputs, schemas ----------------------

CITY_TOOL = {"type": "function", "function": {
    "name": "get_city", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}


def test_chat_answers_a_tool_result_with_text_about_it(oai: openai.OpenAI) -> None:
    """After a tool result the model answers (an agent loop ends) and mentions the result."""
    call = oai.chat.completions.create(model="m1", messages=USER, tools=[WEATHER_TOOL]).choices[0].message
    conversation = [*USER, call.model_dump(exclude_none=True),
                    {"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "Sunny, 21 C"}]
    answer = oai.chat.completions.create(model="m1", messages=conversation, tools=[WEATHER_TOOL])
    choice = answer.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert choice.message.content.startswith("Mock answer from tool result: Sunny, 21 C")
    streamed = list(oai.chat.completions.create(model="m1", messages=conversation, tools=[WEATHER_TOOL],
                                                stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == choice.message.content
    # tool_choice "required" still forces a call: the tool not called yet, as a model would
    forced = oai.chat.completions.create(model="m1", messages=conversation, tools=[WEATHER_TOOL, CITY_TOOL],
                                         tool_choice="required").choices[0]
    assert forced.finish_reason == "tool_calls" and forced.message.tool_calls[0].function.name == "get_city"
    # structured output after a tool result: JSON of the requested schema
    schema = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"],
              "additionalProperties": False}
    structured = oai.chat.completions.create(
        model="m1", messages=conversation, tools=[WEATHER_TOOL],
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}})
    assert json.loads(structured.choices[0].message.content) == {"summary": "mock"}


def test_messages_answer_a_tool_result_with_text_about_it(claude: anthropic.Anthropic) -> None:
    tool = {"name": "get_weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}
    city = {"name": "get_city", "input_schema": CITY_TOOL["function"]["parameters"]}
    call = claude.messages.create(model="c", max_tokens=100, messages=USER, tools=[tool, city])
    assert call.content[0].name == "get_weather"
    result = {"type": "tool_result", "tool_use_id": call.content[0].id,
              "content": [{"type": "text", "text": "Sunny, 21 C"}]}
    conversation = [*USER, {"role": "assistant", "content": call.model_dump()["content"]},
                    {"role": "user", "content": [result]}]
    answer = claude.messages.create(model="c", max_tokens=100, messages=conversation, tools=[tool, city])
    assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"
    assert answer.content[0].text.startswith("Mock answer from tool result: Sunny, 21 C")
    forced = claude.messages.create(model="c", max_tokens=100, messages=conversation, tools=[tool, city],
                                    tool_choice={"type": "any"})
    assert forced.stop_reason == "tool_use" and forced.content[0].name == "get_city"


def test_messages_stream_message_delta_carries_the_whole_usage(http: httpx.Client) -> None:
    """Like the current API: clients such as LangChain read input tokens from message_delta."""
    body = {"model": "c", "max_tokens": 100, "messages": USER, "stream": True}
    with http.stream("POST", "/v1/messages", json=body) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    (delta,) = [e for e in events if e["type"] == "message_delta"]
    assert delta["usage"]["input_tokens"] == 10 and delta["usage"]["output_tokens"] == 16


@pytest.mark.parametrize("field", ["output_config", "output_format"])
def test_messages_native_structured_output(claude: anthropic.Anthropic, http: httpx.Client, field: str) -> None:
    """`output_config.format` (and the earlier top-level `output_format`) make the text JSON of the schema."""

    class Forecast(BaseModel):
        city: str
        temperature: float

    schema = {**Forecast.model_json_schema(), "additionalProperties": False}
    spec = {"type": "json_schema", "schema": schema}
    extra = {"output_config": {"format": spec}} if field == "output_config" else {"output_format": spec}
    message = claude.messages.create(model="c", max_tokens=100, messages=USER, extra_body=extra)
    assert message.stop_reason == "end_turn"
    assert Forecast.model_validate_json(message.content[0].text) == Forecast(city="mock", temperature=1.5)
    body = {"model": "c", "max_tokens": 100, "messages": USER, "stream": True, **extra}
    with http.stream("POST", "/v1/messages", json=body) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == message.content[0].text


def test_responses_function_call_round_trip_plain_and_streamed(oai: openai.OpenAI) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["function"]["parameters"]}
    first = oai.responses.create(model="m1", input="Weather in Paris?", tools=[tool])
    (call,) = first.output
    assert call.type == "function_call" and json.loads(call.arguments)["location"] == "mock"
    follow_up = [{"role": "user", "content": "Weather in Paris?"}, call.model_dump(exclude_none=True),
                 {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}]
    answer = oai.responses.create(model="m1", input=follow_up, tools=[tool])
    assert answer.output[0].type == "message"
    assert answer.output_text.startswith("Mock answer from tool result: Sunny, 21 C")
    events = list(oai.responses.create(model="m1", input=follow_up, tools=[tool], stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == answer.output_text
    assert events[-1].type == "response.completed"
    streamed_call = list(oai.responses.create(model="m1", input="Weather?", tools=[tool], stream=True))
    arguments = "".join(e.delta for e in streamed_call if e.type == "response.function_call_arguments.delta")
    assert json.loads(arguments)["location"] == "mock"
    assert streamed_call[-1].response.output[0].type == "function_call"


def test_responses_json_schema_text_format(oai: openai.OpenAI) -> None:
    class Forecast(BaseModel):
        city: str
        sunny: bool

    parsed = oai.responses.parse(model="m1", input="Weather in Paris?", text_format=Forecast)
    assert parsed.output_parsed == Forecast(city="mock", sunny=True)
    plain = oai.responses.create(model="m1", input="Weather?", text={"format": {"type": "json_object"}})
    assert json.loads(plain.output_text)["answer"].startswith("Mock answer to: Weather?")


class _Sky(str, Enum):
    SUNNY = "sunny"
    RAINY = "rainy"


class _Reading(BaseModel):
    celsius: float = Field(gt=-90, lt=60)
    taken_at: datetime
    station: UUID


class _Node(BaseModel):
    name: str
    children: list[_Node] = []


class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sky: _Sky
    readings: list[_Reading] = Field(min_length=2, max_length=3)
    humidity: int = Field(ge=40, le=60, multiple_of=5)
    warning: str | None
    contact: str = Field(min_length=12, max_length=20)
    kind: Literal["daily"]
    pair: tuple[int, str]
    codes: set[str] = Field(min_length=2)
    tree: _Node
    extra: dict[str, int]
    site: str = Field(json_schema_extra={"format": "uri"})


def test_example_from_schema_satisfies_pydantic_models() -> None:
    """$defs/$ref, enums, nullable anyOf, bounds, formats, tuples, recursion, closed objects."""
    schema = _Report.model_json_schema()
    value = example_from_schema(schema)
    report = _Report.model_validate(value)
    assert report.sky is _Sky.SUNNY and report.warning == "mock" and len(report.readings) == 2
    assert report.humidity == 40 and len(report.codes) == 2 and report.kind == "daily"
    assert set(value) == set(schema["properties"])          # additionalProperties: false holds
    # litellm writes Anthropic refs as bare JSON pointers ("/$defs/Name")
    bare = json.loads(json.dumps(schema).replace('"#/$defs/', '"/$defs/'))
    assert _Report.model_validate(example_from_schema(bare)) == report


@pytest.mark.parametrize(("schema", "expected"), [
    ({"anyOf": [{"type": "null"}, {"type": "integer"}]}, 1),
    ({"type": ["null", "string"]}, "mock"),
    ({"enum": [None, "b"]}, "b"),
    ({"type": "integer", "exclusiveMinimum": 5}, 6),
    ({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.1}, 0.05),
    ({"type": "array", "items": {"type": "string"}, "maxItems": 0}, []),
    ({"type": "object", "required": ["k"], "additionalProperties": {"type": "boolean"}}, {"k": True}),
    ({"allOf": [{"$ref": "#/$defs/A"}], "$defs": {"A": {"type": "object", "properties": {"a": {"const": 2}}}}},
     {"a": 2}),
    ("not a schema", {}),
])
def test_example_from_schema_keywords(schema: object, expected: object) -> None:
    assert example_from_schema(schema) == expected
