"""instructor (pydantic models out of the openai and anthropic SDKs) against a real Sluice:
`instructor.from_openai(OpenAI(base_url=<sluice>/v1))` in Mode.TOOLS, JSON_SCHEMA and JSON, and
`instructor.from_anthropic(Anthropic(base_url=<sluice>))` in ANTHROPIC_TOOLS, ANTHROPIC_JSON and
JSON_SCHEMA (instructor's Anthropic structured outputs), each on both deployments.

instructor cannot be installed in the main venv (it pins `jiter<0.15`; the main venv's openai
needs a newer jiter), so it has its own: .venv-instructor from
tests/clients/instructor/requirements.txt, which `make test` builds. The client side lives in
tests/clients/instructor/check_instructor.py, run once with that venv's python against the
session gateway (an instructor import costs seconds); it reports every case as a JSON line.
Each case here then fails with that case's error, and checks what reached the provider: the
script marks each case's requests (OpenAI `user`, Anthropic `metadata.user_id`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.clients.conftest import ANTHROPIC_NATIVE, CLIENT_KEY, CLIENT_MODELS, OPENAI_NATIVE
from tests.conftest import Mock
from tests.gateway_server import RunningGateway

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTRUCTOR_DIR = Path(__file__).resolve().parent / "instructor"
REQUIREMENTS = INSTRUCTOR_DIR / "requirements.txt"
CHECK_SCRIPT = INSTRUCTOR_DIR / "check_instructor.py"
VENV_PYTHON = REPO_ROOT / ".venv-instructor" / "bin" / "python"
MAKE_VENV = "make .venv-instructor/.deps"       # `make test` runs it
RUN_TIMEOUT_S = 300                             # all cases; a few seconds when the machine is idle

# The script's cases (check_instructor.CASES), each run on both deployments, and what its
# request must carry upstream: "tools" (the model as a forced tool; the tool's name), native
# structured outputs ("json_schema"), OpenAI's JSON mode ("json_object"), or the schema in the
# system prompt only ("prompt").
CASES: dict[str, tuple[str, str | None]] = {
    "openai-tools-create": ("tools", "Weather"),
    "openai-tools-partial": ("tools", "PartialWeather"),
    "openai-tools-iterable": ("tools", "IterableWeather"),
    "openai-json_schema-create": ("json_schema", "Weather"),
    "openai-json_schema-partial": ("json_schema", "PartialWeather"),
    "openai-json-create": ("json_object", None),
    "anthropic-tools-create": ("tools", "Weather"),
    "anthropic-tools-partial": ("tools", "PartialWeather"),
    "anthropic-tools-iterable": ("tools", "IterableWeather"),
    "anthropic-json-create": ("prompt", None),
    # instructor 1.17 falls back to ANTHROPIC_JSON's prompt here (see the script)
    "anthropic-json_schema-create": ("prompt", None),
}
STREAMED = ("-partial", "-iterable")              # create_partial / create_iterable stream
UPSTREAM_MODEL = {OPENAI_NATIVE: "gpt-upstream", ANTHROPIC_NATIVE: "claude-upstream"}
SCHEMA_PROMPT = "parsed objects in json that match the following json_schema"   # instructor's JSON modes
JSON_INSTRUCTION = "Respond with a single valid JSON object"                     # Sluice's, for json_object
SLUICE_INSTRUCTIONS = "Respond with a single valid JSON"        # any instruction Sluice adds (the one above or
                                                                # the old json_schema one, before issue 20)


@dataclass
class InstructorRun:
    problem: str | None = None                  # the venv is missing or stale, or the script broke
    results: dict[str, dict] = field(default_factory=dict)
    requests: dict[str, list[dict]] = field(default_factory=dict)  # by provider: "openai", "anthropic"
    report: str = ""

    def require(self) -> None:
        if self.problem:
            pytest.fail(self.problem, pytrace=False)


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            pins[normalized(name)] = version.strip()
    return pins


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def instructor_run(clients_gateway: RunningGateway, primary: Mock, backup: Mock) -> InstructorRun:
    """Every case of the script, once, and what reached each provider meanwhile."""
    if not VENV_PYTHON.is_file():
        return InstructorRun(f"{VENV_PYTHON.relative_to(REPO_ROOT)} is missing: run `make test` (or `{MAKE_VENV}`), "
                             f"which builds instructor's venv from {REQUIREMENTS.relative_to(REPO_ROOT)}")
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTHON")}
    env.update({"SLUICE_URL": clients_gateway.url, "SLUICE_KEY": CLIENT_KEY, "SLUICE_MODEL_OPENAI": OPENAI_NATIVE,
                "SLUICE_MODEL_ANTHROPIC": ANTHROPIC_NATIVE, "NO_COLOR": "1"})
    primary.clear()
    backup.clear()
    command = [str(VENV_PYTHON), "-I", str(CHECK_SCRIPT)]   # -I: nothing from the caller's Python setup
    try:
        run = subprocess.run(command, cwd=INSTRUCTOR_DIR, env=env, capture_output=True, text=True,
                             timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return InstructorRun(f"check_instructor.py did not finish in {RUN_TIMEOUT_S}s:\n{output}")
    report = f"{run.stdout}\n{run.stderr}".strip()
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    versions = next((line["versions"] for line in lines if "versions" in line), None)
    if versions is None:
        return InstructorRun(f"check_instructor.py ran no case (exit {run.returncode}):\n{report}")
    installed = {normalized(name): version for name, version in versions.items()}
    stale = [f"{name} {installed.get(name, 'missing')} (want {version})"
             for name, version in pinned_versions().items() if installed.get(name) != version]
    if stale:
        return InstructorRun(f".venv-instructor does not match {REQUIREMENTS.relative_to(REPO_ROOT)}: "
                             f"{', '.join(stale)}; run `make test` (or `{MAKE_VENV}`)")
    return InstructorRun(results={line["case"]: line for line in lines if "case" in line},
                         requests={"openai": primary.requests(), "anthropic": backup.requests()}, report=report)


def case_requests(run: InstructorRun, provider: str, case: str) -> list[dict]:
    """The bodies of the provider requests the script's case made (its marker, as each format carries it)."""
    marker = f"instructor:{case}"
    return [r["body"] for r in run.requests[provider]
            if r["body"].get("user") == marker or (r["body"].get("metadata") or {}).get("user_id") == marker]


def system_text(body: dict, provider: str) -> str:
    if provider == "openai":
        return "\n".join(str(m.get("content")) for m in body["messages"] if m.get("role") in ("system", "developer"))
    system = body.get("system") or ""
    return system if isinstance(system, str) else "\n".join(block.get("text", "") for block in system)


def test_script_runs_every_case(instructor_run: InstructorRun) -> None:
    instructor_run.require()
    wanted = {f"{name}@{model}" for name in CASES for model in CLIENT_MODELS}
    assert set(instructor_run.results) == wanted, instructor_run.report


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("name", list(CASES))
def test_instructor(name: str, model: str, instructor_run: InstructorRun) -> None:
    instructor_run.require()
    case = f"{name}@{model}"
    result = instructor_run.results.get(case)
    assert result is not None, f"check_instructor.py did not report {case}:\n{instructor_run.report}"
    if not result["ok"]:
        pytest.fail(f"{case}: {result['error']}\n\n{result.get('traceback', '')}", pytrace=False)

    provider, other = ("openai", "anthropic") if model == OPENAI_NATIVE else ("anthropic", "openai")
    bodies = case_requests(instructor_run, provider, case)
    assert len(bodies) == 1, f"{case}: {len(bodies)} requests reached the {provider} provider, want 1"
    assert not case_requests(instructor_run, other, case), f"{case} reached the {other} provider too"
    body = bodies[0]
    assert body["model"] == UPSTREAM_MODEL[model]
    assert bool(body.get("stream")) == name.endswith(STREAMED), body.get("stream")
    check_upstream(name, provider, body)


def check_upstream(name: str, provider: str, body: dict) -> None:
    """What the case's request must carry on the provider's wire format (passed through
    when it is the client's own, translated by Sluice when not)."""
    kind, schema_name = CASES[name]
    client = name.split("-", 1)[0]
    structured = body.get("response_format") or body.get("output_config") or body.get("output_format")
    system = system_text(body, provider)
    if kind == "tools":
        (tool,) = body["tools"]
        if provider == "openai":
            assert tool["function"]["name"] == schema_name and "properties" in tool["function"]["parameters"], tool
            assert body["tool_choice"] == {"type": "function", "function": {"name": schema_name}}, body["tool_choice"]
            if client == "anthropic":   # instructor's disable_parallel_tool_use, translated
                assert body.get("parallel_tool_calls") is False, body
        else:
            assert tool["name"] == schema_name and "properties" in tool["input_schema"], tool
            assert body["tool_choice"]["type"] == "tool" and body["tool_choice"]["name"] == schema_name, body
        assert not structured, structured
    elif kind == "json_schema":
        assert not body.get("tools"), body["tools"]
        if provider == "openai":
            spec = body["response_format"]
            assert spec["type"] == "json_schema" and spec["json_schema"]["name"] == schema_name, spec
            schema = spec["json_schema"]["schema"]
        else:
            # Native structured outputs, not a sentence in the system prompt (issue 20).
            spec = (body.get("output_config") or {}).get("format")
            assert spec is not None, f"no output_config.format reached Anthropic: system {system!r}"
            assert spec["type"] == "json_schema", spec
            schema = spec["schema"]
            assert schema["additionalProperties"] is False, schema       # Anthropic's subset: closed objects
            assert SLUICE_INSTRUCTIONS not in system, system
        assert {"city", "sky", "reading", "humidity", "warning", "tags"} <= set(schema["properties"]), schema
    elif kind == "json_object":
        assert SCHEMA_PROMPT in system, system                            # instructor's schema in the prompt
        if provider == "openai":
            assert body["response_format"] == {"type": "json_object"}, body["response_format"]
        else:                                                             # no native form: Sluice's instruction
            assert JSON_INSTRUCTION in system and not structured, body
    else:
        assert SCHEMA_PROMPT in system and '"Weather"' in system, system  # the whole schema, in the prompt
        assert not structured and not body.get("tools"), body
