"""The official SDKs, pointed at Sluice by base_url only, against the mock providers."""

from __future__ import annotations

import base64
import struct

from tests.conftest import BACKUP_KEY, PRIMARY_KEY

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_chat_plain(oai, primary):
    resp = oai.chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": "hello gateway"}])
    completion = resp.parse()
    assert "hello gateway" in completion.choices[0].message.content
    assert completion.usage.total_tokens > 0
    assert resp.headers["x-sluice-deployment"] == "primary/m1"
    assert resp.headers["x-sluice-attempts"] == "1"
    assert len(resp.headers["x-sluice-request-id"]) == 24
    [seen] = primary.requests()
    # The provider key from config went upstream; the client's key did not.
    assert seen["headers"]["authorization"] == f"Bearer {PRIMARY_KEY}"
    assert "client-key-not-forwarded" not in str(seen)
    assert seen["body"]["model"] == "m1"


def test_chat_stream_with_usage(oai):
    stream = oai.chat.completions.create(model="gpt", stream=True, stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "stream please"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "stream please" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_stream_without_usage_request_gets_no_usage_chunk(oai, primary):
    chunks = list(oai.chat.completions.create(model="gpt", stream=True,
                                              messages=[{"role": "user", "content": "hi"}]))
    assert all(c.choices for c in chunks)          # no usage-only chunk leaked to the caller
    # ...but the gateway asked upstream for usage, so the stream is costed.
    assert primary.requests()[-1]["body"]["stream_options"] == {"include_usage": True}


def test_chat_tools_and_unknown_fields_pass_through(oai, primary):
    completion = oai.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "weather in Paris?"}], tools=[WEATHER_TOOL],
        response_format={"type": "text"}, n=1, extra_body={"vendor_flag": {"x": 1}})
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and completion.choices[0].finish_reason == "tool_calls"
    body = primary.requests()[-1]["body"]
    assert body["vendor_flag"] == {"x": 1} and body["tools"][0]["function"]["name"] == "get_weather"


def test_chat_n_choices(oai):
    completion = oai.chat.completions.create(model="gpt", n=3, messages=[{"role": "user", "content": "hi"}])
    assert [c.index for c in completion.choices] == [0, 1, 2]


def test_embeddings_base64_and_float(oai):
    emb = oai.embeddings.create(model="embed", input=["one", "two"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 8
    raw = oai.embeddings.create(model="embed", input="one", encoding_format="float")
    assert raw.data[0].embedding == emb.data[0].embedding


def test_models_lists_public_names(oai, claude):
    names = {m.id for m in oai.models.list()}
    assert {"gpt", "claude", "chat-default", "embed"} <= names
    assert "m1" not in names
    assert {m.id for m in claude.models.list()} == names


def test_responses_pass_through(oai, primary):
    resp = oai.responses.create(model="gpt", input="say hi")
    assert resp.output_text
    assert primary.requests()[-1]["path"] == "/v1/responses"


def test_messages_plain(claude, backup):
    msg = claude.messages.create(model="claude", max_tokens=64,
                                 messages=[{"role": "user", "content": "hello anthropic"}])
    assert "hello anthropic" in msg.content[0].text and msg.stop_reason == "end_turn"
    seen = backup.requests()[-1]
    assert seen["headers"]["x-api-key"] == BACKUP_KEY and seen["body"]["model"] == "claude-x"


def test_messages_stream(claude):
    with claude.messages.stream(model="claude", max_tokens=64,
                                messages=[{"role": "user", "content": "stream anthropic"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "stream anthropic" in text
    # message_delta carries the stop reason and the final output usage: it must pass through.
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 1


def test_messages_tools(claude):
    msg = claude.messages.create(model="claude", max_tokens=64, messages=[{"role": "user", "content": "weather?"}],
                                 tools=[{"name": "get_weather", "input_schema": {
                                     "type": "object", "properties": {"city": {"type": "string"}}}}])
    assert msg.stop_reason == "tool_use" and msg.content[-1].name == "get_weather"


def test_openai_caller_to_anthropic_deployment(oai, backup):
    completion = oai.chat.completions.create(
        model="claude", messages=[{"role": "system", "content": "be brief"},
                                  {"role": "user", "content": "translated hello"}], max_tokens=50)
    assert "translated hello" in completion.choices[0].message.content
    assert completion.model == "claude-x" and completion.usage.prompt_tokens > 0
    sent = backup.requests()[-1]
    assert sent["path"] == "/v1/messages" and sent["body"]["system"] == "be brief"
    assert sent["body"]["max_tokens"] == 50


def test_openai_stream_from_anthropic_deployment_with_tools(oai):
    stream = oai.chat.completions.create(model="claude", stream=True, tools=[WEATHER_TOOL],
                                         stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "weather in Oslo"}])
    chunks = list(stream)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["tool_calls"] and chunks[-1].usage.total_tokens > 0


def test_anthropic_caller_to_openai_deployment(claude, primary):
    msg = claude.messages.create(model="gpt", max_tokens=64, system="sys prompt",
                                 messages=[{"role": "user", "content": "cross hello"}])
    assert "cross hello" in msg.content[0].text and msg.usage.input_tokens > 0
    body = primary.requests()[-1]["body"]
    assert body["messages"][0] == {"role": "system", "content": "sys prompt"}


def test_anthropic_stream_from_openai_deployment(claude):
    with claude.messages.stream(model="gpt", max_tokens=64,
                                messages=[{"role": "user", "content": "cross stream"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "cross stream" in text and final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_azure_deployment_url_and_header(oai, primary):
    oai.chat.completions.create(model="azure-gpt", messages=[{"role": "user", "content": "hi azure"}])
    seen = primary.requests()[-1]
    assert seen["path"] == "/openai/deployments/my-deployment/chat/completions"
    assert "api-version=2024-10-21" in seen["query"]
    assert seen["headers"]["api-key"] == PRIMARY_KEY and "authorization" not in seen["headers"]


def test_embedding_vector_decodes(oai):
    emb = oai.embeddings.create(model="embed", input="abc", encoding_format="base64")
    vec = emb.data[0].embedding
    if isinstance(vec, str):           # older SDKs leave base64 undecoded
        vec = struct.unpack(f"<{len(base64.b64decode(vec)) // 4}f", base64.b64decode(vec))
    assert abs(sum(v * v for v in vec) - 1.0) < 1e-3
