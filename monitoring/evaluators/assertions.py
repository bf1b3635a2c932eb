"""Assertions: deterministic checks of answers, a cheap first line before any model.

Each `AssertionConfig` names the models and/or prompt fingerprints it applies to (none: all)
and any of: `regex` (must match), `forbid_regex` (must not), `min_chars` / `max_chars`,
`json_schema`, `language`. Regexes and lengths are computed by ClickHouse in the query that
selects the requests (`match`, `lengthUTF8`: re2 syntax); the JSON schema (jsonschema) and
the language (monitoring/language.py) are checked here on the rows it returns. One row per
(request, assertion): score 1 and label `pass`, or 0 and `fail` with the failed checks in
details. The evaluator name is `assertion:<name>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from monitoring.evaluators.config import AssertionConfig


@dataclass(slots=True)
class AssertionResult:
    score: float
    label: str
    details: dict[str, Any]


def assertion_sql(cfg: AssertionConfig, parameters: dict) -> tuple[str, list[str]]:
    """(extra WHERE, SELECT expressions of the SQL-side checks: one UInt8 'failed' each)."""
    where = []
    if cfg.models:
        parameters["a_models"] = list(cfg.models)
        where.append("public_model IN {a_models:Array(String)}")
    if cfg.prompt_fingerprints:
        parameters["a_fps"] = list(cfg.prompt_fingerprints)
        where.append("prompt_fingerprint IN {a_fps:Array(String)}")
    checks = []
    if cfg.regex is not None:
        parameters["a_re"] = cfg.regex
        checks.append("NOT match(completion_text, {a_re:String})")
    if cfg.forbid_regex is not None:
        parameters["a_forbid"] = cfg.forbid_regex
        checks.append("match(completion_text, {a_forbid:String})")
    if cfg.min_chars is not None:
        checks.append(f"lengthUTF8(completion_text) < {int(cfg.min_chars)}")
    if cfg.max_chars is not None:
        checks.append(f"lengthUTF8(completion_text) > {int(cfg.max_chars)}")
    return "".join(f" AND {w}" for w in where), checks


def sql_check_names(cfg: AssertionConfig) -> list[str]:
    names = [("regex", cfg.regex), ("forbid_regex", cfg.forbid_regex), ("min_chars", cfg.min_chars),
             ("max_chars", cfg.max_chars)]
    return [name for name, value in names if value is not None]


class AssertionChecker:
    """The Python-side checks of one assertion (schema compiled once)."""

    def __init__(self, cfg: AssertionConfig) -> None:
        self.cfg = cfg
        self._validator = None
        if cfg.json_schema is not None:
            from jsonschema import Draft202012Validator
            Draft202012Validator.check_schema(cfg.json_schema)
            self._validator = Draft202012Validator(cfg.json_schema)

    def check(self, text: str, sql_failures: list[str]) -> AssertionResult:
        failed = [{"check": name} for name in sql_failures]
        if self._validator is not None:
            try:
                document = json.loads(text)
            except ValueError:
                failed.append({"check": "json_schema", "error": "not JSON"})
            else:
                errors = sorted(self._validator.iter_errors(document), key=lambda e: list(e.path))
                if errors:
                    failed.append({"check": "json_schema", "error": errors[0].message[:300]})
        if self.cfg.language is not None:
            from monitoring.language import detect_language
            found = detect_language(text)
            if found and found != self.cfg.language:           # "" (too short to tell) is not a failure
                failed.append({"check": "language", "expected": self.cfg.language, "found": found})
        return AssertionResult(0.0 if failed else 1.0, "fail" if failed else "pass", {"failed": failed})
