"""`prompt_fingerprint` and `response_format` on every `llm_requests` row: real traffic
from the official SDKs through a running gateway to the mock providers, read back from chDB.

The fingerprint is the drift monitor's segment key for "one version of an application's
prompt": the same system prompt + tools give one value whatever the caller's wire format
or user message; an edited system prompt or tool gives another."""

from __future__ import annotations

import itertools

import anthropic
import openai
import pytest

from gateway.prompt_fingerprint import prompt_fingerprint, response_format
from gateway.types import Operation, WireFormat
from tests.conftest import BACKUP_KEY, PRIMARY_KEY
from tests.gateway_server import start_gateway

GATEWAY_KEY = "sluice-fingerprint-test-secret"
SYSTEM = "You are the weather desk of Example Corp. Answer in one sentence."
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OPENAI_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                "parameters": SCHEMA}}
ANTHROPIC_TOOL = {"name": "get_weather", "description": "Weather in a city", "input_schema": SCHEMA}
ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
                 "additionalProperties": False}
_db = itertools.count()


@pytest.fixture(scope="module")
def rows(primary, backup, chdb_url, ch):
    """Send the requests once; return {tag: row} read back from llm_requests."""
    database = f"fingerprint_{next(_db)}"
    gw = start_gateway({
        "telemetry": {"clickhouse_url": chdb_url, "database": database, "flush_interval_s": 0.05,
                      "writer": "thread"},     # the test process holds the session's chDB
        "cache": {"enabled": False},
        "keys": [{"key": GATEWAY_KEY, "tenant": "team-f"}],
        "providers": {
            "primary": {"type": "openai", "base_url": f"{primary.url}/v1", "api_key": PRIMARY_KEY},
            "backup": {"type": "anthropic", "base_url": backup.url, "api_key": BACKUP_KEY},
        },
        "models": {"gpt": {"deployments": [{"provider": "primary", "model": "m1"}]},
                   "claude": {"deployments": [{"provider": "backup", "model": "claude-x"}]}},
    })
    try:
        oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
        claude = anthropic.Anthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=0)
        sent = {}

        def chat(tag: str, messages: list[dict], **extra) -> None:
            resp = oai.chat.completions.with_raw_response.create(model="gpt", messages=messages, **extra)
            sent[resp.headers["x-sluice-request-id"]] = tag

        def message(tag: str, **extra) -> None:
            resp = claude.messages.with_raw_response.create(model="claude", max_tokens=50, **extra)
            sent[resp.headers["x-sluice-request-id"]] = tag

        chat("oai", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Paris?"}],
             tools=[OPENAI_TOOL])
        chat("oai-other-user", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Rome, today?"}],
             tools=[OPENAI_TOOL], temperature=0.9)
        chat("oai-stream", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Oslo?"}],
             tools=[OPENAI_TOOL], stream=True)
        chat("oai-edited", [{"role": "system", "content": SYSTEM + " Be brief."},
                            {"role": "user", "content": "Paris?"}], tools=[OPENAI_TOOL])
        chat("oai-no-tools", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Paris?"}])
        chat("oai-bare", [{"role": "user", "content": "Paris?"}])
        chat("oai-json", [{"role": "user", "content": "as JSON"}], response_format={"type": "json_object"})
        chat("oai-schema", [{"role": "user", "content": "as JSON"}], response_format={
            "type": "json_schema", "json_schema": {"name": "a", "schema": ANSWER_SCHEMA, "strict": True}})
        message("ant", system=SYSTEM, tools=[ANTHROPIC_TOOL],
                messages=[{"role": "user", "content": "Lisbon?"}])
        message("ant-blocks", system=[{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
                tools=[ANTHROPIC_TOOL], messages=[{"role": "user", "content": "Madrid?"}])
        message("ant-schema", messages=[{"role": "user", "content": "as JSON"}],
                extra_body={"output_config": {"format": {"type": "json_schema", "schema": ANSWER_SCHEMA}}})
        assert gw.gateway.telemetry.flush(timeout_s=10)
        got = ch.query(f"SELECT request_id, prompt_fingerprint, response_format, status_code "
                       f"FROM `{database}`.llm_requests").named_results()
        by_tag = {sent[r["request_id"]]: r for r in got}
        assert set(by_tag) == set(sent.values())
        assert all(r["status_code"] == 200 for r in by_tag.values())
        return by_tag
    finally:
        gw.stop()
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")


def test_same_system_and_tools_is_one_fingerprint_whatever_the_user_asks(rows):
    fp = rows["oai"]["prompt_fingerprint"]
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert rows["oai-other-user"]["prompt_fingerprint"] == fp
    assert rows["oai-stream"]["prompt_fingerprint"] == fp


def test_openai_and_anthropic_callers_with_the_same_prompt_share_it(rows):
    fp = rows["oai"]["prompt_fingerprint"]
    assert rows["ant"]["prompt_fingerprint"] == fp
    assert rows["ant-blocks"]["prompt_fingerprint"] == fp      # text blocks and cache_control: same prompt


def test_an_edited_system_prompt_or_tool_set_is_another_fingerprint(rows):
    fps = [rows[t]["prompt_fingerprint"] for t in ("oai", "oai-edited", "oai-no-tools")]
    assert len(set(fps)) == 3
    assert rows["oai-bare"]["prompt_fingerprint"] == ""      # no application prompt at all


def test_response_format_is_recorded(rows):
    assert rows["oai-json"]["response_format"] == "json_object"
    assert rows["oai-schema"]["response_format"] == "json_schema"
    assert rows["ant-schema"]["response_format"] == "json_schema"
    assert rows["oai"]["response_format"] == rows["ant"]["response_format"] == ""


def test_responses_api_instructions_and_flat_tools_match_chat():
    chat = {"messages": [{"role": "developer", "content": [{"type": "text", "text": SYSTEM}]},
                         {"role": "user", "content": "hi"}], "tools": [OPENAI_TOOL]}
    responses = {"instructions": SYSTEM, "input": "hi",
                 "tools": [{"type": "function", "strict": True, **OPENAI_TOOL["function"]}],
                 "text": {"format": {"type": "json_schema", "name": "a", "schema": ANSWER_SCHEMA}}}
    fp = prompt_fingerprint(chat, WireFormat.OPENAI, Operation.CHAT)
    assert prompt_fingerprint(responses, WireFormat.OPENAI, Operation.RESPONSES) == fp
    assert response_format(responses, WireFormat.OPENAI, Operation.RESPONSES) == "json_schema"
    # tool order is part of the prompt; a schema's key order is not
    other = {"type": "function", "function": {"name": "b", "parameters": {}}}
    assert prompt_fingerprint({**chat, "tools": [other, OPENAI_TOOL]}, WireFormat.OPENAI, Operation.CHAT) != \
        prompt_fingerprint({**chat, "tools": [OPENAI_TOOL, other]}, WireFormat.OPENAI, Operation.CHAT)
    reordered = {"type": "function", "function": {"parameters": dict(reversed(list(SCHEMA.items()))),
                                                  "description": "Weather in a city", "name": "get_weather"}}
    assert prompt_fingerprint({**chat, "tools": [reordered]}, WireFormat.OPENAI, Operation.CHAT) == fp


def test_odd_bodies_never_raise():
    for body in ({"system": 5, "tools": "x"}, {"messages": [None, {"role": "system", "content": {"a": 1}}]},
                 {"tools": [{"type": "function", "function": {"name": "f", "parameters": {1: float("nan")}}}]}):
        for fmt in WireFormat:
            assert isinstance(prompt_fingerprint(body, fmt, Operation.CHAT), str)
            assert response_format(body, fmt, Operation.CHAT) == ""
