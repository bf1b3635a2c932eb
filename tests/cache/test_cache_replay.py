"""Cached answers replayed as streams, parsed by the official openai and anthropic SDKs.

The SDK clients talk to an httpx MockTransport that serves the replayed bytes, so the
SDKs' own SSE decoders and stream accumulators do the parsing.
"""

from __future__ import annotations

import anthropic
import httpx
import httpx2
import orjson
import pydantic
from anthropic.types import RawMessageStreamEvent
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk

from cache.replay import anthropic_message_as_sse, openai_chat_as_sse
from tests.cache.cache_bodies import anthropic_message, completion


def sse_transport(lines: list[bytes], http=httpx):  # type: ignore[no-untyped-def]
    """`http`: httpx for the openai SDK, httpx2 for the anthropic SDK (2.x), same API."""

    def handler(request):  # type: ignore[no-untyped-def]
        return http.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(lines))

    return http.MockTransport(handler)


def data_lines(lines: list[bytes]) -> list[dict]:
    out = []
    for line in lines:
        for part in line.decode().splitlines():
            if part.startswith("data: ") and part != "data: [DONE]":
                out.append(orjson.loads(part[6:]))
    return out


TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def test_openai_chunks_validate() -> None:
    lines = openai_chat_as_sse(completion("Hello there."), include_usage=True)
    chunks = [ChatCompletionChunk.model_validate(d) for d in data_lines(lines)]
    assert lines[-1] == b"data: [DONE]\n\n"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there."
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 17
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_openai_without_usage_has_no_usage_chunk() -> None:
    chunks = data_lines(openai_chat_as_sse(completion("Hi"), include_usage=False))
    assert all(c["choices"] for c in chunks) and all("usage" not in c for c in chunks)


async def test_openai_sdk_stream_accumulates_the_cached_answer() -> None:
    response = completion("", finish_reason="tool_calls", tool_calls=[TOOL_CALL])
    response["choices"][0]["message"]["content"] = "Let me check."
    lines = openai_chat_as_sse(response, include_usage=True)
    client = AsyncOpenAI(api_key="k", base_url="http://sluice/v1",
                         http_client=httpx.AsyncClient(transport=sse_transport(lines)))
    async with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hi"}]) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Let me check."
    assert message.tool_calls is not None and message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.prompt_tokens == 12
    await client.close()


def test_anthropic_events_validate() -> None:
    adapter = pydantic.TypeAdapter(RawMessageStreamEvent)
    lines = anthropic_message_as_sse(anthropic_message("Hello there."))
    events = [adapter.validate_python(d) for d in data_lines(lines)]
    assert [e.type for e in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]
    for line in lines:  # the `event:` name matches the payload's type, as the SDK expects
        name, data = line.decode().split("\n", 1)
        assert name == f"event: {orjson.loads(data[6:])['type']}"


async def test_anthropic_sdk_stream_rebuilds_the_cached_message() -> None:
    cached = anthropic_message("Checking the weather.", stop_reason="tool_use")
    cached["content"] += [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "days": 3}},
    ]
    cached["content"].insert(0, {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig=="})
    client = anthropic.AsyncAnthropic(
        api_key="k", base_url="http://sluice",
        http_client=httpx2.AsyncClient(transport=sse_transport(anthropic_message_as_sse(cached), httpx2)),
    )
    async with client.messages.stream(model="m", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join([t async for t in s.text_stream])
        final = await s.get_final_message()
    assert text == "Checking the weather."
    assert final.model_dump(exclude_none=True)["content"] == cached["content"]
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 4 and final.usage.input_tokens == 10
    await client.close()
