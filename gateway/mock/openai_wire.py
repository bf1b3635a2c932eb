"""OpenAI wire format of the mock: chat completions (plain and streamed), embeddings, models.

Azure OpenAI speaks the same bodies under /openai/deployments/{deployment}/...; the
server loop passes the deployment as the model, so these functions serve both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.mock.content import (
    embedding_base64,
    embedding_inputs,
    embedding_vector,
    example_from_schema,
    joined_text,
    fixed_fragments,
    last_user_text,
    limit_fragments,
    next_tool,
    prompt_tokens,
    reply_words,
    structured_fragments,
    tool_answer_words,
    word_fragments,
)
from gateway.mock.options import MockOptions
from gateway.mock.replies import (
    Reply,
    data_event,
    json_reply,
    new_id,
    openai_error,
    stream_reply,
)

SYSTEM_FINGERPRINT = "fp_mock"
DONE_EVENT = b"data: [DONE]\n\n"
MAX_EMBEDDING_DIM = 8192


@dataclass(slots=True)
class _Answer:
    """One generated choice: text fragments, or a tool call whose arguments are fragmented."""

    fragments: list[str]
    finish_reason: str
    tool_name: str | None = None
    tool_call_id: str | None = None


def chat_completions(body: dict[str, Any], model: str, options: MockOptions) -> Reply:
    """POST /v1/chat/completions: a `chat.completion` object or a stream of chunks."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return openai_error(400, "Missing required parameter: 'messages'.", param="messages",
                            code="missing_required_parameter")
    n = body.get("n")
    n = 1 if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        return openai_error(400, f"Invalid 'n': expected an integer between 1 and 128, got {n!r}.", param="n",
                            code="invalid_value")
    answer = _answer(body, messages, options)
    usage_prompt = prompt_tokens(messages)
    usage_completion = len(answer.fragments) * n
    usage = {"prompt_tokens": usage_prompt, "completion_tokens": usage_completion,
             "total_tokens": usage_prompt + usage_completion}
    completion_id = new_id("chatcmpl-")
    created = int(time.time())
    if body.get("stream") is True:
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        return stream_reply(_chunks(answer, n, completion_id, created, model, usage if include_usage else None))
    return json_reply({
        "id": completion_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": i, "message": _message(answer), "logprobs": None,
                     "finish_reason": answer.finish_reason} for i in range(n)],
        "usage": usage, "service_tier": "default", "system_fingerprint": SYSTEM_FINGERPRINT,
    })


def _answer(body: dict[str, Any], messages: list[Any], options: MockOptions) -> _Answer:
    """A tool call, or text: after tool results a text about them; JSON when response_format asks."""
    results = _tool_results(messages)
    tool = _chosen_tool(body, messages, after_tool=results is not None)
    if tool is not None:
        arguments = orjson.dumps(example_from_schema(tool.get("parameters"))).decode()
        return _Answer(fixed_fragments(arguments), "tool_calls", str(tool.get("name")), new_id("call_"))
    if results is not None:
        words = tool_answer_words(body, results, options.output_tokens)
    else:
        words = reply_words(body, last_user_text(messages), options.output_tokens)
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        fragments = structured_fragments(None, words)
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        fragments = structured_fragments(schema if isinstance(schema, dict) else {"type": "object"})
    else:
        fragments = word_fragments(words)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    fragments, truncated = limit_fragments(fragments, limit)
    return _Answer(fragments, "length" if truncated else "stop")


def _tool_results(messages: list[Any]) -> list[str] | None:
    """The texts of the `role: tool` messages that end the conversation; None if it does not end so."""
    results: list[str] = []
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "tool":
            break
        results.append(joined_text(message.get("content")))
    return results[::-1] if results else None


def _called(messages: list[Any]) -> set[str]:
    """Names of the functions the assistant already called in this conversation."""
    return {call["function"].get("name") for message in messages if isinstance(message, dict)
            for call in message.get("tool_calls") or () if isinstance(call, dict)
            and isinstance(call.get("function"), dict)}


def _chosen_tool(body: dict[str, Any], messages: list[Any], after_tool: bool) -> dict[str, Any] | None:
    """The function the mock "calls": the one named by tool_choice; else, unless tool results
    were just given (then it answers) or tool_choice is "required", the next uncalled tool."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    functions = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if not functions:
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        return next((f for f in functions if f.get("name") == wanted), functions[0])
    if after_tool and choice != "required":
        return None
    return next_tool(functions, [f.get("name") for f in functions], _called(messages))


def _message(answer: _Answer) -> dict[str, Any]:
    if answer.tool_name is None:
        return {"role": "assistant", "content": "".join(answer.fragments), "refusal": None, "annotations": []}
    return {"role": "assistant", "content": None, "refusal": None, "annotations": [],
            "tool_calls": [{"id": answer.tool_call_id, "type": "function",
                            "function": {"name": answer.tool_name, "arguments": "".join(answer.fragments)}}]}


def _chunks(answer: _Answer, n: int, completion_id: str, created: int, model: str,
            usage: dict[str, int] | None) -> list[bytes]:
    """The SSE events of a streamed completion, in the order OpenAI sends them."""
    head: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                            "model": model, "service_tier": "default", "system_fingerprint": SYSTEM_FINGERPRINT}
    if usage is not None:
        head["usage"] = None  # OpenAI sets usage: null on every chunk when include_usage is on

    def event(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return data_event({**head, "choices": [choice]})

    events: list[bytes] = []
    if answer.tool_name is None:
        events.extend(event(i, {"role": "assistant", "content": "", "refusal": None}) for i in range(n))
        for fragment in answer.fragments:
            events.extend(event(i, {"content": fragment}) for i in range(n))
    else:
        opening = {"index": 0, "id": answer.tool_call_id, "type": "function",
                   "function": {"name": answer.tool_name, "arguments": ""}}
        events.extend(event(i, {"role": "assistant", "content": None, "refusal": None, "tool_calls": [opening]})
                      for i in range(n))
        for fragment in answer.fragments:
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}
            events.extend(event(i, delta) for i in range(n))
    events.extend(event(i, {}, answer.finish_reason) for i in range(n))
    if usage is not None:
        events.append(data_event({**head, "choices": [], "usage": usage}))
    events.append(DONE_EVENT)
    return events


def embeddings(body: dict[str, Any], model: str, options: MockOptions) -> Reply:
    """POST /v1/embeddings: deterministic unit vectors, as floats or base64 float32."""
    try:
        inputs = embedding_inputs(body.get("input"))
    except OverflowError:
        inputs = None
    if inputs is None:
        return openai_error(400, "'$.input' is invalid. Please check the API reference: "
                                 "https://platform.openai.com/docs/api-reference.", param="input")
    dim = body.get("dimensions")
    dim = options.embedding_dim if dim is None else dim
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= MAX_EMBEDDING_DIM:
        return openai_error(400, f"Invalid 'dimensions': {dim!r}.", param="dimensions", code="invalid_value")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        return openai_error(400, f"Invalid 'encoding_format': {encoding!r}.", param="encoding_format",
                            code="invalid_value")
    data = []
    for index, (key, _) in enumerate(inputs):
        vector = embedding_vector(key, dim)
        value = embedding_base64(vector) if encoding == "base64" else vector.tolist()
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(count for _, count in inputs)
    return json_reply({"object": "list", "data": data, "model": model,
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def model_card(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "sluice-mock"}


def models_list(options: MockOptions, created: int) -> Reply:
    """GET /v1/models: the configured model names (built once by the server)."""
    return json_reply({"object": "list", "data": [model_card(m, created) for m in options.models]})


def model_retrieve(model: str, options: MockOptions, created: int) -> Reply:
    """GET /v1/models/{model}."""
    if model in options.models:
        return json_reply(model_card(model, created))
    return openai_error(404, f"The model '{model}' does not exist or you do not have access to it.",
                        code="model_not_found")
