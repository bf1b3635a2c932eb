"""pydantic-ai agents against Sluice through its OpenAI and Anthropic providers (both take
a base_url), each against both deployments: a tool, structured output (pydantic-ai's
default output tool, and native structured outputs), text streaming and usage."""

from __future__ import annotations

import pytest
from pydantic_ai import Agent, NativeOutput
from pydantic_ai.messages import ToolReturnPart
from pydantic_ai.models import Model
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.profiles.anthropic import anthropic_model_profile
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider

from tests.clients.conftest import CLIENT_KEY, CLIENT_MODELS, OPENAI_NATIVE
from tests.clients.weather import (
    PROMPT,
    TOOL_NAME,
    Weather,
    assert_answer_text,
    assert_tool_answer_text,
    tool_result,
    tool_result_reached,
)
from tests.conftest import Mock
from tests.gateway_server import RunningGateway

CLIENTS = ("openai", "anthropic")


# pydantic-ai picks features by model name; a public name like ours says nothing, so the
# Anthropic model is told what the deployment serves (a Claude with structured outputs).
ANTHROPIC_PROFILE = anthropic_model_profile("claude-sonnet-4-5")


def agent_model(client: str, model: str, gateway: RunningGateway) -> Model:
    if client == "openai":
        return OpenAIChatModel(model, provider=OpenAIProvider(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY))
    return AnthropicModel(model, provider=AnthropicProvider(base_url=gateway.url, api_key=CLIENT_KEY),
                          profile=ANTHROPIC_PROFILE)


def weather_agent(model: Model, output_type: object) -> tuple[Agent, list[str]]:
    """An agent whose tool records the cities it was really called with."""
    cities: list[str] = []
    agent = Agent(model, output_type=output_type, instructions="Use the tool, then answer.", retries=0)

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """Current weather at a city."""
        cities.append(city)
        return tool_result(city)

    return agent, cities


def tool_returns(result) -> list[object]:
    return [part.content for message in result.all_messages() for part in message.parts
            if isinstance(part, ToolReturnPart) and part.tool_name == TOOL_NAME]


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("client", CLIENTS)
async def test_text_and_usage(client: str, model: str, clients_gateway: RunningGateway) -> None:
    agent = Agent(agent_model(client, model, clients_gateway))
    result = await agent.run(PROMPT)
    assert_answer_text(result.output)
    usage = result.usage
    assert usage.requests == 1 and usage.input_tokens > 0 and usage.output_tokens == 16
    assert result.all_messages()[-1].finish_reason == "stop"


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("client", CLIENTS)
async def test_tool_then_structured_output(client: str, model: str, clients_gateway: RunningGateway,
                                           upstream: Mock) -> None:
    """pydantic-ai's default: the output is a `final_result` tool call the model makes after using the tool."""
    agent, cities = weather_agent(agent_model(client, model, clients_gateway), Weather)
    result = await agent.run(PROMPT)
    assert isinstance(result.output, Weather) and result.output.city == "mock"
    assert cities == ["mock"] and tool_returns(result) == [tool_result()]
    requests = upstream.requests()
    assert len(requests) == 2 and tool_result_reached(requests[1]["body"])
    usage = result.usage
    assert usage.requests == 2 and usage.input_tokens > 0 and usage.output_tokens > 0


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("client", CLIENTS)
async def test_native_structured_output(client: str, model: str, clients_gateway: RunningGateway,
                                        upstream: Mock) -> None:
    """NativeOutput: OpenAI `response_format` json_schema, Anthropic `output_config.format`,
    translated by Sluice when the deployment speaks the other format."""
    agent = Agent(agent_model(client, model, clients_gateway), output_type=NativeOutput(Weather), retries=0)
    result = await agent.run(PROMPT)
    assert isinstance(result.output, Weather) and result.output.tags
    body = upstream.requests()[-1]["body"]
    native = body.get("response_format") or (body.get("output_config") or {}).get("format")
    assert native is not None and native["type"] == "json_schema" and not body.get("tools")


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("client", CLIENTS)
async def test_streamed_text_after_a_tool(client: str, model: str, clients_gateway: RunningGateway,
                                          upstream: Mock) -> None:
    agent, cities = weather_agent(agent_model(client, model, clients_gateway), str)
    async with agent.run_stream(PROMPT) as run:
        deltas = [delta async for delta in run.stream_text(delta=True, debounce_by=None)]
        text = "".join(deltas)
    assert len(deltas) > 1
    assert_tool_answer_text(text)
    assert cities == ["mock"] and tool_result_reached(upstream.requests()[-1]["body"])
    assert run.usage.requests == 2
    final = run.all_messages()[-1]                     # the streamed answer, as the client assembled it
    assert final.finish_reason == "stop" and final.usage.input_tokens > 0 and final.usage.output_tokens == 16


@pytest.mark.parametrize("model", [OPENAI_NATIVE])
async def test_responses_model_tool_then_structured_output(model: str, clients_gateway: RunningGateway,
                                                           upstream: Mock) -> None:
    responses = OpenAIResponsesModel(model, provider=OpenAIProvider(base_url=f"{clients_gateway.url}/v1",
                                                                    api_key=CLIENT_KEY))
    agent, cities = weather_agent(responses, Weather)
    result = await agent.run(PROMPT)
    assert isinstance(result.output, Weather) and cities == ["mock"]
    assert [r["path"] for r in upstream.requests()] == ["/v1/responses", "/v1/responses"]
