"""The OpenAI Agents SDK against Sluice: an agent with a function tool and a pydantic
`output_type`, run by `Runner` through the Chat Completions model (both deployments)
and the Responses model. Tracing is off, so nothing leaves the machine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from agents import (
    Agent,
    Model,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from tests.clients.conftest import ANTHROPIC_NATIVE, CLIENT_KEY, CLIENT_MODELS, OPENAI_NATIVE
from tests.clients.weather import (
    PROMPT,
    TOOL_NAME,
    Weather,
    assert_tool_answer_text,
    tool_result,
    tool_result_reached,
)
from tests.conftest import Mock
from tests.gateway_server import RunningGateway

set_tracing_disabled(True)
RUN_CONFIG = RunConfig(tracing_disabled=True)


@pytest.fixture
async def client(clients_gateway: RunningGateway) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{clients_gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0,
                           timeout=20) as openai_client:
        yield openai_client


def weather_agent(model: Model, output_type: type | None = Weather,
                  settings: ModelSettings | None = None) -> tuple[Agent, list[str]]:
    """An agent whose tool records the cities it was really called with."""
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather at a city."""
        cities.append(city)
        return tool_result(city)

    agent = Agent(name="forecaster", instructions="Use the tool, then answer.", tools=[get_weather],
                  output_type=output_type, model=model, model_settings=settings or ModelSettings())
    return agent, cities


def assert_tool_round_trip(result, cities: list[str], upstream: Mock) -> None:
    """The tool ran with the model's arguments and its output went back to the provider."""
    assert cities == ["mock"]
    calls = [item for item in result.new_items if item.type == "tool_call_item"]
    outputs = [item.output for item in result.new_items if item.type == "tool_call_output_item"]
    assert len(calls) == 1 and calls[0].raw_item.name == TOOL_NAME and outputs == [tool_result()]
    requests = upstream.requests()
    assert len(requests) == 2 and tool_result_reached(requests[1]["body"])
    usage = result.context_wrapper.usage
    assert usage.requests == 2 and usage.input_tokens > 0 and usage.output_tokens > 0


@pytest.mark.parametrize("model", CLIENT_MODELS)
async def test_chat_completions_agent_tool_and_structured_output(model: str, client: AsyncOpenAI,
                                                                 upstream: Mock) -> None:
    agent, cities = weather_agent(OpenAIChatCompletionsModel(model=model, openai_client=client))
    result = await Runner.run(agent, PROMPT, run_config=RUN_CONFIG)
    assert isinstance(result.final_output, Weather) and result.final_output.city == "mock"
    assert_tool_round_trip(result, cities, upstream)


@pytest.mark.parametrize("model", CLIENT_MODELS)
async def test_chat_completions_agent_streamed(model: str, client: AsyncOpenAI, upstream: Mock) -> None:
    """Streamed: the tool call arrives in deltas, and the final text is the deltas joined."""
    agent, cities = weather_agent(OpenAIChatCompletionsModel(model=model, openai_client=client),
                                  output_type=None, settings=ModelSettings(include_usage=True))
    result = Runner.run_streamed(agent, PROMPT, run_config=RUN_CONFIG)
    deltas = [event.data.delta async for event in result.stream_events()
              if event.type == "raw_response_event" and event.data.type == "response.output_text.delta"]
    assert_tool_answer_text(result.final_output)
    assert len(deltas) > 1 and "".join(deltas) == result.final_output
    assert_tool_round_trip(result, cities, upstream)
    assert result.raw_responses[-1].usage.output_tokens == 16   # the streamed answer's own count


@pytest.mark.parametrize("model", [OPENAI_NATIVE])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_responses_agent_tool_and_structured_output(model: str, stream: bool, client: AsyncOpenAI,
                                                          upstream: Mock) -> None:
    """The Responses API: function_call, function_call_output and a json_schema text format."""
    agent, cities = weather_agent(OpenAIResponsesModel(model=model, openai_client=client))
    if stream:
        result = Runner.run_streamed(agent, PROMPT, run_config=RUN_CONFIG)
        kinds = [event.data.type async for event in result.stream_events() if event.type == "raw_response_event"]
        assert kinds.count("response.completed") == 2 and "response.function_call_arguments.delta" in kinds
    else:
        result = await Runner.run(agent, PROMPT, run_config=RUN_CONFIG)
    assert isinstance(result.final_output, Weather) and result.final_output.city == "mock"
    assert_tool_round_trip(result, cities, upstream)
    assert all(r["path"] == "/v1/responses" for r in upstream.requests())


@pytest.mark.parametrize("model", [ANTHROPIC_NATIVE])
async def test_responses_agent_on_an_anthropic_deployment_is_refused_clearly(model: str, client: AsyncOpenAI,
                                                                             upstream: Mock) -> None:
    """Sluice passes the Responses API through to OpenAI-type deployments only (README); on an
    Anthropic deployment the agent must get a clear 400 naming the model, and nothing reaches the provider."""
    agent, cities = weather_agent(OpenAIResponsesModel(model=model, openai_client=client))
    with pytest.raises(openai.BadRequestError) as error:
        await Runner.run(agent, PROMPT, run_config=RUN_CONFIG)
    assert model in str(error.value) and "responses" in str(error.value)
    assert cities == [] and upstream.requests() == []
