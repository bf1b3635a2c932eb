"""instructor against a running Sluice, run with the instructor venv's python (.venv-instructor).

instructor cannot live in the main test venv (it pins `jiter<0.15`, the main venv's openai
needs a newer one), so tests/clients/test_instructor.py runs this script in its own venv
(tests/clients/instructor/requirements.txt, built by `make test`) against the session's
gateway, the way the Node clients run under node.

    SLUICE_URL=http://127.0.0.1:8080 SLUICE_KEY=... SLUICE_MODEL_OPENAI=... \\
    SLUICE_MODEL_ANTHROPIC=... .venv-instructor/bin/python check_instructor.py [CASE ...]

`--list` prints the cases; each runs on both models, as "<client>-<mode>-<call>@<model>"
(the names CASE arguments take). stdout has a JSON line of the installed versions
({"versions"}), then one per case ({"case", "ok", "error", "traceback"}); a summary goes to
stderr, and the exit status is 1 when any case failed. Every request of a case carries the
marker `instructor:<case>` (OpenAI `user`, Anthropic `metadata.user_id`; Sluice translates
one into the other), so the caller can find what reached the provider for it.

What the mock provider answers (gateway/mock): tool arguments and native structured
outputs (OpenAI `response_format` json_schema, Anthropic `output_config.format`) are JSON
built from the schema sent, so instructor parses them into the model on its own; a text
answer echoes the last user turn ("Mock answer to: <it>"), and OpenAI's json_object mode
wraps that text as {"answer": ...}. The mock does not follow instructions in a prompt: for
instructor's Anthropic JSON mode, whose schema lives only in the prompt, the user turn
carries the expected object and the echo stands in for a model that obeys; where instructor
wants the whole answer to be bare JSON and the mock can only echo, the case checks that Sluice
relayed the answer and instructor failed on its content alone (`expect_unparsed`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import ipaddress
import json
import logging
import os
import socket
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# No telemetry from any client, and no connection outside this machine: fail it instead
# (as tests/clients/conftest.py's loopback_only does in the main test process).
os.environ["DO_NOT_TRACK"] = "1"
_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


def _check_loopback(address: Any) -> None:
    host = address[0] if isinstance(address, tuple) else None
    if host is None:
        return                                          # AF_UNIX paths are local
    try:
        local = ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        local = host == "localhost"
    if not local:
        raise ConnectionRefusedError(f"check_instructor: connection to {address!r} outside loopback refused")


def _connect(self: socket.socket, address: Any) -> None:
    _check_loopback(address)
    return _original_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check_loopback(address)
    return _original_connect_ex(self, address)


socket.socket.connect = _connect  # type: ignore[method-assign]
socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]

import anthropic  # noqa: E402
import instructor  # noqa: E402
import openai  # noqa: E402
from instructor import Mode  # noqa: E402
from instructor.core import InstructorRetryException  # noqa: E402
from pydantic import BaseModel, ValidationError  # noqa: E402


def _load_weather() -> Any:
    """tests/clients/weather.py, the shape every client suite parses (it needs pydantic only)."""
    path = Path(__file__).resolve().parent.parent / "weather.py"
    spec = importlib.util.spec_from_file_location("sluice_client_weather", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


weather = _load_weather()
Weather, Reading, Sky = weather.Weather, weather.Reading, weather.Sky
PROMPT = weather.PROMPT

SLUICE_URL = os.environ.get("SLUICE_URL", "")
SLUICE_KEY = os.environ.get("SLUICE_KEY", "")
MODELS = (os.environ.get("SLUICE_MODEL_OPENAI", ""), os.environ.get("SLUICE_MODEL_ANTHROPIC", ""))
MAX_TOKENS = 1024
TIMEOUT_S = 20

# The object the prompt-only JSON modes ask for: in the user turn, so the mock's echo has it.
# Compact (one whitespace word) so the echo, cut to the mock's answer length, keeps it whole.
EXPECTED = Weather(city="Paris", sky=Sky.SUNNY,
                   reading=Reading(celsius=21.5, taken_at=datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)),
                   humidity=40, warning=None, tags=["mild"])
ECHO_PROMPT = f"{PROMPT} Answer: {EXPECTED.model_dump_json()}"
# create_partial validates the finished object as a Python dict, with instructor's default
# strict=True, and strict pydantic takes no string for a datetime (Reading.taken_at), so it
# fails on this model whatever the provider says. Lax validation, as JSON parsing gets.
PARTIAL_STRICT = False


class JsonAnswer(BaseModel):
    """What the mock answers in OpenAI json_object mode: {"answer": <the text answer>}."""

    answer: str


def openai_client(mode: Mode) -> Any:
    return instructor.from_openai(
        openai.OpenAI(base_url=f"{SLUICE_URL}/v1", api_key=SLUICE_KEY, max_retries=0, timeout=TIMEOUT_S), mode=mode)


def anthropic_client(mode: Mode) -> Any:
    return instructor.from_anthropic(
        anthropic.Anthropic(base_url=SLUICE_URL, api_key=SLUICE_KEY, max_retries=0, timeout=TIMEOUT_S), mode=mode)


def marker(case: str) -> str:
    return f"instructor:{case}"


def openai_args(case: str, model: str, prompt: str = PROMPT) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "user": marker(case),
            "max_retries": 0}


def anthropic_args(case: str, model: str, prompt: str = PROMPT) -> dict[str, Any]:
    return {"model": model, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": prompt}],
            "metadata": {"user_id": marker(case)}, "max_retries": 0}


# --- what a result must look like -------------------------------------------------------


def check_schema_example(result: Any) -> None:
    """A Weather built by the mock from the schema the provider got (strings "mock", the first enum)."""
    assert isinstance(result, Weather), f"expected a Weather, got {type(result).__name__}: {result!r}"
    assert result.city == "mock" and result.sky is Sky.SUNNY, result
    assert isinstance(result.reading.taken_at, datetime) and isinstance(result.reading.celsius, float), result
    assert 0 <= result.humidity <= 100 and result.tags and all(isinstance(t, str) for t in result.tags), result
    Weather.model_validate(result.model_dump())                 # every constraint holds


def check_expected(result: Any) -> None:
    """The object the prompt carried, extracted from the echoed text and validated."""
    assert isinstance(result, Weather), f"expected a Weather, got {type(result).__name__}: {result!r}"
    # By value: instructor returns a subclass of the response model.
    assert result.model_dump(mode="json") == EXPECTED.model_dump(mode="json"), f"{result!r} != {EXPECTED!r}"


def check_partials(partials: list[Any], check: Callable[[Any], None]) -> None:
    """Streamed partial objects: several, growing, the last one complete."""
    assert len(partials) > 1, f"expected several partial objects from the stream, got {len(partials)}"
    assert partials[0].model_dump(exclude_none=True) != partials[-1].model_dump(exclude_none=True), partials
    check(Weather.model_validate(partials[-1].model_dump()))


def expect_unparsed(call: Callable[[], Any], check_completion: Callable[[Any], None]) -> None:
    """A call whose answer Sluice relays but instructor cannot parse (the mock's plain text
    where instructor wants bare JSON): one attempt, a validation error, the completion whole."""
    logging.disable(logging.ERROR)                 # instructor logs the failure it then raises
    try:
        result = call()
    except InstructorRetryException as exc:
        assert exc.n_attempts == 1, exc.n_attempts
        error = exc.failed_attempts[-1].exception if exc.failed_attempts else None
        assert isinstance(error, ValidationError), f"failed on something else than the content: {error!r}"
        check_completion(exc.last_completion)
        return
    finally:
        logging.disable(logging.NOTSET)
    raise AssertionError(f"instructor parsed an answer the mock cannot have shaped: {result!r}")


def check_openai_completion(completion: Any, finish_reasons: tuple[str, ...]) -> None:
    choice = completion.choices[0]
    assert choice.finish_reason in finish_reasons, f"finish_reason {choice.finish_reason!r}, want {finish_reasons}"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0, completion.usage


def check_anthropic_message(message: Any, stop_reason: str) -> None:
    assert message.stop_reason == stop_reason, f"stop_reason {message.stop_reason!r}, want {stop_reason!r}"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage


# --- the cases: instructor.from_openai --------------------------------------------------


def openai_tools_create(case: str, model: str) -> None:
    """Mode.TOOLS: the schema is a forced function tool; the arguments parse into Weather."""
    result, completion = openai_client(Mode.TOOLS).chat.completions.create_with_completion(
        response_model=Weather, **openai_args(case, model))
    check_schema_example(result)
    check_openai_completion(completion, ("tool_calls", "stop"))
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "Weather", call


def openai_tools_partial(case: str, model: str) -> None:
    """Mode.TOOLS streamed: create_partial builds Weather from the tool-argument deltas."""
    partials = list(openai_client(Mode.TOOLS).chat.completions.create_partial(
        response_model=Weather, strict=PARTIAL_STRICT, **openai_args(case, model)))
    check_partials(partials, check_schema_example)


def openai_tools_iterable(case: str, model: str) -> None:
    """Mode.TOOLS: create_iterable, the tool holds a list of Weather objects."""
    results = list(openai_client(Mode.TOOLS).chat.completions.create_iterable(
        response_model=Weather, **openai_args(case, model)))
    assert results, "create_iterable yielded nothing"
    for result in results:
        check_schema_example(result)


def openai_json_schema_create(case: str, model: str) -> None:
    """Mode.JSON_SCHEMA: response_format json_schema; on an Anthropic deployment Sluice
    sends it as native structured outputs (`output_config.format`)."""
    result, completion = openai_client(Mode.JSON_SCHEMA).chat.completions.create_with_completion(
        response_model=Weather, **openai_args(case, model))
    check_schema_example(result)
    check_openai_completion(completion, ("stop",))
    assert not completion.choices[0].message.tool_calls, completion


def openai_json_schema_partial(case: str, model: str) -> None:
    """Mode.JSON_SCHEMA streamed: create_partial from the content deltas of the JSON answer."""
    partials = list(openai_client(Mode.JSON_SCHEMA).chat.completions.create_partial(
        response_model=Weather, strict=PARTIAL_STRICT, **openai_args(case, model)))
    check_partials(partials, check_schema_example)


def openai_json_create(case: str, model: str) -> None:
    """Mode.JSON: response_format json_object and the schema in a system message.

    On the OpenAI deployment the mock answers json_object mode with {"answer": <its text>},
    so the model here is JsonAnswer and the text is the echo of the prompt. On the Anthropic
    deployment Sluice turns json_object into an instruction appended to `system` (Anthropic
    has no "any JSON object" mode); the mock does not follow it and answers plain text, which
    instructor's Mode.JSON (the whole answer must be JSON) cannot parse: what is checked there
    is that Sluice answered and instructor failed on the content alone.
    """
    client = openai_client(Mode.JSON)
    if model == MODELS[0]:
        result, completion = client.chat.completions.create_with_completion(
            response_model=JsonAnswer, **openai_args(case, model))
        weather.assert_answer_text(result.answer)
        check_openai_completion(completion, ("stop",))
        return

    def relayed(completion: Any) -> None:
        assert isinstance(completion, openai.types.chat.ChatCompletion), f"no completion: {completion!r}"
        check_openai_completion(completion, ("stop",))
        weather.assert_answer_text(completion.choices[0].message.content)

    expect_unparsed(lambda: client.chat.completions.create(response_model=JsonAnswer, **openai_args(case, model)),
                    relayed)


# --- the cases: instructor.from_anthropic -----------------------------------------------


def anthropic_tools_create(case: str, model: str) -> None:
    """ANTHROPIC_TOOLS: a tool forced by tool_choice {"type": "tool"}; its input parses into Weather."""
    result, message = anthropic_client(Mode.ANTHROPIC_TOOLS).messages.create_with_completion(
        response_model=Weather, **anthropic_args(case, model))
    check_schema_example(result)
    check_anthropic_message(message, "tool_use")
    (block,) = [b for b in message.content if b.type == "tool_use"]
    assert block.name == "Weather", block


def anthropic_tools_partial(case: str, model: str) -> None:
    """ANTHROPIC_TOOLS streamed: create_partial from the input_json_delta events."""
    partials = list(anthropic_client(Mode.ANTHROPIC_TOOLS).messages.create_partial(
        response_model=Weather, strict=PARTIAL_STRICT, **anthropic_args(case, model)))
    check_partials(partials, check_schema_example)


def anthropic_tools_iterable(case: str, model: str) -> None:
    """ANTHROPIC_TOOLS: create_iterable (instructor offers a tool per type, tool_choice auto)."""
    results = list(anthropic_client(Mode.ANTHROPIC_TOOLS).messages.create_iterable(
        response_model=Weather, **anthropic_args(case, model)))
    assert results, "create_iterable yielded nothing"
    for result in results:
        check_schema_example(result)


def anthropic_json_create(case: str, model: str) -> None:
    """ANTHROPIC_JSON: the schema in `system`; instructor takes the last JSON object of the text."""
    result, message = anthropic_client(Mode.ANTHROPIC_JSON).messages.create_with_completion(
        response_model=Weather, **anthropic_args(case, model, ECHO_PROMPT))
    check_expected(result)
    check_anthropic_message(message, "end_turn")


def anthropic_json_schema_create(case: str, model: str) -> None:
    """Mode.JSON_SCHEMA on from_anthropic, instructor's Anthropic structured outputs. This
    release uses them only when `messages.create` takes `output_format`, which the non-beta
    create of no anthropic SDK does (0.75 to 2.17 checked): instructor warns and sends
    ANTHROPIC_JSON's prompt instead, then wants the whole text to be JSON, which the mock's
    echo is not. Checked as such (the request and the relayed answer); when a new pin makes
    it native, this case fails here, and should then expect a parsed Weather and
    `output_format` upstream."""
    client = anthropic_client(Mode.JSON_SCHEMA)

    def relayed(message: Any) -> None:
        assert isinstance(message, anthropic.types.Message), f"no message reached instructor: {message!r}"
        check_anthropic_message(message, "end_turn")
        (block,) = message.content
        assert block.type == "text" and EXPECTED.model_dump_json() in block.text, block

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expect_unparsed(lambda: client.messages.create(response_model=Weather,
                                                       **anthropic_args(case, model, ECHO_PROMPT)), relayed)
    fallback = [str(w.message) for w in caught if "output_format" in str(w.message)]
    assert fallback, f"instructor did not fall back to JSON instructions (warnings: {[str(w.message) for w in caught]})"


CASES: dict[str, Callable[[str, str], None]] = {
    "openai-tools-create": openai_tools_create,
    "openai-tools-partial": openai_tools_partial,
    "openai-tools-iterable": openai_tools_iterable,
    "openai-json_schema-create": openai_json_schema_create,
    "openai-json_schema-partial": openai_json_schema_partial,
    "openai-json-create": openai_json_create,
    "anthropic-tools-create": anthropic_tools_create,
    "anthropic-tools-partial": anthropic_tools_partial,
    "anthropic-tools-iterable": anthropic_tools_iterable,
    "anthropic-json-create": anthropic_json_create,
    "anthropic-json_schema-create": anthropic_json_schema_create,
}


def all_cases() -> Iterator[tuple[str, Callable[[str, str], None], str]]:
    for name, check in CASES.items():
        for model in MODELS:
            yield f"{name}@{model}", check, model


def main(argv: list[str]) -> int:
    if argv[:1] == ["--list"]:
        print("\n".join(CASES))
        return 0
    missing = [name for name, value in (("SLUICE_URL", SLUICE_URL), ("SLUICE_KEY", SLUICE_KEY),
                                        ("SLUICE_MODEL_OPENAI", MODELS[0]), ("SLUICE_MODEL_ANTHROPIC", MODELS[1]))
               if not value]
    if missing:
        print(f"check_instructor: set {', '.join(missing)}", file=sys.stderr)
        return 2
    cases = [c for c in all_cases() if not argv or c[0] in argv]
    unknown = set(argv) - {c[0] for c in cases}
    if unknown:
        print(f"check_instructor: unknown case(s) {sorted(unknown)}; see --list", file=sys.stderr)
        return 2
    installed = {dist.metadata["Name"]: dist.version for dist in importlib.metadata.distributions()}
    print(json.dumps({"versions": installed}), flush=True)
    failed = []
    for case, check, model in cases:
        try:
            check(case, model)
        except Exception as exc:  # noqa: BLE001  (every failure is reported, the run goes on)
            failed.append(case)
            detail = "".join(traceback.format_exception(exc, limit=-6))
            print(json.dumps({"case": case, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                              "traceback": detail}), flush=True)
        else:
            print(json.dumps({"case": case, "ok": True}), flush=True)
    versions = f"instructor {instructor.__version__}, openai {openai.__version__}, anthropic {anthropic.__version__}"
    print(f"check_instructor ({versions}): {len(cases) - len(failed)} passed, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
