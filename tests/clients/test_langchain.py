"""LangChain's ChatOpenAI, ChatAnthropic and OpenAIEmbeddings with only the base URL changed.

Each chat model is driven against both deployments: one in its own wire format (passed
through) and one in the other (translated by Sluice).
"""

from __future__ import annotations

import math

import anthropic
import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import SecretStr

from gateway.mock.content import embedding_vector
from tests.clients.conftest import CLIENT_KEY, CLIENT_MODELS, EMBED
from tests.clients.weather import (
    PROMPT,
    TOOL_NAME,
    Weather,
    assert_answer_text,
    assert_tool_answer_text,
    get_weather,
    tool_result_reached,
)
from tests.conftest import Mock
from tests.gateway_server import RunningGateway

CLIENTS = ("openai", "anthropic")
weather_tool = tool(get_weather)


def chat_model(client: str, model: str, gateway: RunningGateway, key: str = CLIENT_KEY) -> BaseChatModel:
    if client == "openai":
        return ChatOpenAI(model=model, base_url=f"{gateway.url}/v1", api_key=SecretStr(key), max_retries=0,
                          timeout=20, stream_usage=True)
    return ChatAnthropic(model=model, base_url=gateway.url, api_key=SecretStr(key), max_retries=0,
                         timeout=20, max_tokens=512)


def finish_reason(client: str, message: AIMessage) -> str | None:
    key = "finish_reason" if client == "openai" else "stop_reason"
    return message.response_metadata.get(key)


DONE = {"openai": "stop", "anthropic": "end_turn"}
CALLED = {"openai": "tool_calls", "anthropic": "tool_use"}


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("client", CLIENTS)
def test_text_finish_reason_and_usage(client: str, model: str, clients_gateway: RunningGateway) -> None:
    answer = chat_model(client, model, clients_gateway).invoke(PROMPT)
    assert_answer_text(answer.text)
    assert finish_reason(client, answer) == DONE[client]
    usage = answer.usage_metadata
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] == 16
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("client", CLIENTS)
def test_stream_assembles_the_same_answer(client: str, model: str, clients_gateway: RunningGateway) -> None:
    llm = chat_model(client, model, clients_gateway)
    plain = llm.invoke(PROMPT)
    chunks = list(llm.stream(PROMPT))
    assert len([c for c in chunks if c.text]) > 1  # really streamed, not one block
    whole = sum(chunks[1:], chunks[0])
    assert isinstance(whole, AIMessageChunk)
    assert whole.text == plain.text
    assert finish_reason(client, whole) == DONE[client]
    assert whole.usage_metadata is not None
    assert whole.usage_metadata["input_tokens"] > 0 and whole.usage_metadata["output_tokens"] == 16


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("client", CLIENTS)
def test_tool_call_and_result_round_trip(client: str, model: str, clients_gateway: RunningGateway,
                                         upstream: Mock) -> None:
    """The model calls the tool, the client runs it and sends the result, the model answers."""
    llm = chat_model(client, model, clients_gateway).bind_tools([weather_tool])
    question = HumanMessage(PROMPT)
    call_message = llm.invoke([question])
    assert finish_reason(client, call_message) == CALLED[client]
    (call,) = call_message.tool_calls
    assert call["name"] == TOOL_NAME and call["args"] == {"city": "mock"} and call["id"]
    result = weather_tool.invoke(call)                 # a ToolMessage with the call's id
    final = llm.invoke([question, call_message, result])
    assert not final.tool_calls
    assert_tool_answer_text(final.text)
    assert finish_reason(client, final) == DONE[client]
    assert tool_result_reached(upstream.requests()[-1]["body"])


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("client", CLIENTS)
def test_streamed_tool_call_has_parsed_arguments(client: str, model: str, clients_gateway: RunningGateway) -> None:
    llm = chat_model(client, model, clients_gateway).bind_tools([weather_tool])
    chunks = list(llm.stream(PROMPT))
    whole = sum(chunks[1:], chunks[0])
    (call,) = whole.tool_calls
    assert call["name"] == TOOL_NAME and call["args"] == {"city": "mock"}
    assert finish_reason(client, whole) == CALLED[client]


STRUCTURED = [("openai", "json_schema"), ("openai", "function_calling"),
              ("anthropic", "function_calling"), ("anthropic", "json_schema")]


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize(("client", "method"), STRUCTURED)
def test_structured_output_parses_into_the_model(client: str, method: str, model: str,
                                                 clients_gateway: RunningGateway, upstream: Mock) -> None:
    """json_schema: OpenAI response_format / Anthropic output_config.format; function_calling: a
    forced tool. Either way the provider must get the schema as a constraint in its own format
    (translated when the deployment speaks the other one), not as a sentence in the prompt."""
    llm = chat_model(client, model, clients_gateway).with_structured_output(Weather, method=method,
                                                                           include_raw=True)
    result = llm.invoke(PROMPT)
    assert result["parsing_error"] is None
    weather = result["parsed"]
    assert isinstance(weather, Weather)
    assert weather.city == "mock" and weather.tags and 0 <= weather.humidity <= 100
    body = upstream.requests()[-1]["body"]
    if method == "json_schema":
        native = body.get("response_format") or (body.get("output_config") or {}).get("format")
        assert native is not None and native["type"] == "json_schema"
    else:
        assert body["tools"] and body["tool_choice"] not in (None, "auto", {"type": "auto"})


@pytest.mark.parametrize("client", CLIENTS)
def test_errors_reach_langchain_as_the_sdk_exception_types(client: str, clients_gateway: RunningGateway) -> None:
    """Sluice answers errors in the caller's wire format; each SDK raises its own typed error."""
    sdk = openai if client == "openai" else anthropic
    with pytest.raises(sdk.AuthenticationError):
        chat_model(client, CLIENT_MODELS[0], clients_gateway, key="sk-not-a-sluice-key").invoke(PROMPT)
    with pytest.raises(sdk.NotFoundError):
        chat_model(client, "no-such-model", clients_gateway).invoke(PROMPT)


def test_openai_embeddings_match_the_provider(clients_gateway: RunningGateway, primary: Mock) -> None:
    """OpenAIEmbeddings asks for base64 by default; the vectors must decode to the provider's floats."""
    embeddings = OpenAIEmbeddings(model=EMBED, base_url=f"{clients_gateway.url}/v1", api_key=CLIENT_KEY,
                                  max_retries=0, check_embedding_ctx_length=False)  # no tiktoken download
    texts = ["hello world", "another text"]
    vectors = embeddings.embed_documents(texts)
    query = embeddings.embed_query("hello world")
    for text, vector in zip(texts, vectors, strict=True):
        expected = embedding_vector(text.encode(), 64).tolist()
        assert len(vector) == 64 and all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(vector, expected))
    assert query == vectors[0]
    bodies = [r["body"] for r in primary.requests() if r["path"] == "/v1/embeddings"]
    assert bodies and bodies[0]["input"] == texts
    assert bodies[0]["encoding_format"] == "base64"      # relayed as asked, decoded by the client
