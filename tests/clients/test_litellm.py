"""The litellm SDK with `api_base` pointing at Sluice, through its `openai/` and `anthropic/`
providers (litellm speaks OpenAI Chat Completions or Anthropic Messages to the base), each
against both deployments."""

from __future__ import annotations

import json
import math
from typing import Any

import litellm
import pytest

from gateway.mock.content import embedding_vector
from tests.clients.conftest import CLIENT_KEY, CLIENT_MODELS, EMBED
from tests.clients.weather import (
    PROMPT,
    TOOL_DESCRIPTION,
    TOOL_NAME,
    Weather,
    assert_answer_text,
    assert_tool_answer_text,
    tool_result,
    tool_result_reached,
)
from tests.conftest import Mock
from tests.gateway_server import RunningGateway

litellm.telemetry = False
litellm.suppress_debug_info = True
# litellm's own pydantic models warn on import and use; they say nothing about Sluice.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydantic.*", "ignore::DeprecationWarning")

PROVIDERS = ("openai", "anthropic")
MESSAGES = [{"role": "user", "content": PROMPT}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": TOOL_NAME, "description": TOOL_DESCRIPTION,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}


def target(provider: str, model: str, gateway: RunningGateway) -> dict[str, Any]:
    """The arguments that point litellm at Sluice: the provider prefix picks the wire format."""
    base = f"{gateway.url}/v1" if provider == "openai" else gateway.url
    return {"model": f"{provider}/{model}", "api_base": base, "api_key": CLIENT_KEY, "max_tokens": 512,
            "num_retries": 0, "timeout": 20}


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_completion_text_finish_reason_and_usage(provider: str, model: str, clients_gateway: RunningGateway,
                                                 upstream: Mock) -> None:
    response = litellm.completion(messages=MESSAGES, **target(provider, model, clients_gateway))
    choice = response.choices[0]
    assert_answer_text(choice.message.content)
    assert choice.finish_reason == "stop"
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens == 16
    assert response.usage.total_tokens == response.usage.prompt_tokens + 16
    assert len(upstream.requests()) == 1             # the deployment's own provider answered


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_acompletion_stream_assembles_the_same_answer(provider: str, model: str,
                                                            clients_gateway: RunningGateway) -> None:
    args = target(provider, model, clients_gateway)
    plain = await litellm.acompletion(messages=MESSAGES, **args)
    stream = await litellm.acompletion(messages=MESSAGES, stream=True, stream_options={"include_usage": True},
                                       **args)
    chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 1 and "".join(deltas) == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    built = litellm.stream_chunk_builder(chunks, messages=MESSAGES)
    assert built.choices[0].message.content == plain.choices[0].message.content
    assert built.usage.prompt_tokens > 0 and built.usage.completion_tokens == 16


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_call_and_result_round_trip(provider: str, model: str, clients_gateway: RunningGateway,
                                         upstream: Mock) -> None:
    args = target(provider, model, clients_gateway)
    first = litellm.completion(messages=MESSAGES, tools=[WEATHER_TOOL], **args)
    assert first.choices[0].finish_reason == "tool_calls"
    message = first.choices[0].message
    (call,) = message.tool_calls
    assert call.function.name == TOOL_NAME and json.loads(call.function.arguments) == {"city": "mock"}
    conversation = [*MESSAGES, message.model_dump(exclude_none=True),
                    {"role": "tool", "tool_call_id": call.id, "content": tool_result()}]
    final = litellm.completion(messages=conversation, tools=[WEATHER_TOOL], **args)
    assert not final.choices[0].message.tool_calls and final.choices[0].finish_reason == "stop"
    assert_tool_answer_text(final.choices[0].message.content)
    assert tool_result_reached(upstream.requests()[-1]["body"])


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_streamed_tool_call_has_parsed_arguments(provider: str, model: str,
                                                       clients_gateway: RunningGateway) -> None:
    stream = await litellm.acompletion(messages=MESSAGES, tools=[WEATHER_TOOL], stream=True,
                                       **target(provider, model, clients_gateway))
    chunks = [chunk async for chunk in stream]
    built = litellm.stream_chunk_builder(chunks, messages=MESSAGES)
    (call,) = built.choices[0].message.tool_calls
    assert call.function.name == TOOL_NAME and json.loads(call.function.arguments) == {"city": "mock"}
    assert built.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_structured_output_parses_into_the_model(provider: str, model: str,
                                                 clients_gateway: RunningGateway) -> None:
    response = litellm.completion(messages=MESSAGES, response_format=Weather,
                                  **target(provider, model, clients_gateway))
    weather = Weather.model_validate_json(response.choices[0].message.content)
    assert weather.city == "mock" and weather.tags and 0 <= weather.humidity <= 100


@pytest.mark.parametrize("model", [EMBED])
async def test_embedding_matches_the_provider(model: str, clients_gateway: RunningGateway, upstream: Mock) -> None:
    texts = ["hello world", "another text"]
    response = await litellm.aembedding(model=f"openai/{model}", input=texts, api_base=f"{clients_gateway.url}/v1",
                                        api_key=CLIENT_KEY, timeout=20)
    for text, item in zip(texts, response.data, strict=True):
        expected = embedding_vector(text.encode(), 64).tolist()
        vector = item["embedding"]
        assert len(vector) == 64 and all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(vector, expected))
    assert response.usage.prompt_tokens == 4          # whitespace words, as the provider counted them
    assert upstream.requests()[-1]["body"]["model"] == "text-embedding-upstream"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_errors_reach_litellm_as_its_exception_types(provider: str, clients_gateway: RunningGateway) -> None:
    """Sluice answers errors in the caller's wire format, so litellm maps them to its own types."""
    args = target(provider, CLIENT_MODELS[0], clients_gateway)
    with pytest.raises(litellm.AuthenticationError):
        litellm.completion(messages=MESSAGES, **{**args, "api_key": "sk-not-a-sluice-key"})
    with pytest.raises(litellm.NotFoundError):
        litellm.completion(messages=MESSAGES, **{**args, "model": f"{provider}/no-such-model"})
