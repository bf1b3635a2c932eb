"""LLM-as-judge: a configured judge model grades answers against a rubric.

- `single`: the judge sees the conversation, the answer and the rubric, and replies
  `{"score": 1-10, "critique": "..."}`; the row's score is (score - 1) / 9.
- `pairwise`: the answer is compared with a reference answer (the same conversation asked
  of `reference_model` now). The judge runs **twice, both orders** (the evaluated answer as
  A, then as B) and replies `{"winner": "A" | "B" | "tie", "critique": "..."}`; the same
  answer preferred in both orders is a win (1) or a loss (0); a verdict that follows the
  position rather than the answer (a flip) and any tie is a tie (0.5). The length ratio of
  the two answers is stored (judges favour longer answers; a dashboard can check).

A reply that is not such a JSON object (prose around it and code fences are tolerated) is
asked once more with a reminder; a second malformed reply makes the row an **error**
(label `error`, score NULL, the raw reply in details), never a score.
`evaluator_id` is a hash of the judge model (pin a dated snapshot), the rubric and the
parameters (config.evaluator_id).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from monitoring.evaluators.config import JudgeConfig
from monitoring.evaluators.gateway_client import Completion

Chat = Callable[..., Completion]
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)

SYSTEM = ("You are an impartial evaluator of AI assistant answers. Follow the rubric. "
          "Reply with one JSON object only, no other text.")
SINGLE = """Rubric: {rubric}

Conversation:
{conversation}

Answer to evaluate:
{answer}

Reply with JSON: {{"score": <integer 1-10, 10 best>, "critique": "<one short paragraph>"}}"""
PAIRWISE = """Rubric: {rubric}

Conversation:
{conversation}

Answer A:
{a}

Answer B:
{b}

Which answer is better under the rubric?
Reply with JSON: {{"winner": "A" | "B" | "tie", "critique": "<one short paragraph>"}}"""
REMINDER = "Your reply was not the JSON object asked for. Reply again with the JSON object only."


class MalformedVerdict(ValueError):
    """The judge's reply is not the JSON object the prompt asks for."""

    replies: tuple[str, ...] = ()


def parse_single(text: str) -> tuple[float, str]:
    """(score in [0, 1], critique) from a single-mode reply."""
    data = _object(text)
    score = data.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 1 <= score <= 10:
        raise MalformedVerdict(f"score must be a number from 1 to 10, got {score!r}")
    return (float(score) - 1) / 9, str(data.get("critique") or "")


def parse_pairwise(text: str) -> tuple[str, str]:
    """(winner 'A' | 'B' | 'tie', critique) from a pairwise reply."""
    data = _object(text)
    winner = str(data.get("winner", "")).strip().strip("\"'").lower()
    if winner not in ("a", "b", "tie"):
        raise MalformedVerdict(f"winner must be A, B or tie, got {data.get('winner')!r}")
    return ("tie" if winner == "tie" else winner.upper()), str(data.get("critique") or "")


def _object(text: str) -> dict[str, Any]:
    match = _OBJECT.search(text or "")
    if match is None:
        raise MalformedVerdict("no JSON object in the reply")
    try:
        data = json.loads(match.group(0))
    except ValueError:
        raise MalformedVerdict("the reply's JSON does not parse") from None
    if not isinstance(data, dict):
        raise MalformedVerdict("the reply is not a JSON object")
    return data


@dataclass(slots=True)
class JudgeResult:
    score: float | None
    label: str                 # single: pass | fail; pairwise: win | tie | loss; error
    details: dict[str, Any] = field(default_factory=dict)
    cost_usd: float = 0.0


class Judge:
    def __init__(self, cfg: JudgeConfig, chat: Chat, *, threshold: float = 0.5) -> None:
        self.cfg = cfg
        self._chat = chat
        self._threshold = threshold
        self._cost = 0.0

    def _ask(self, prompt: str, parse: Callable[[str], Any],
             headers: Mapping[str, str] | None) -> tuple[Any, list[str]]:
        """The parsed verdict and the raw replies; retried once, then MalformedVerdict."""
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        raw: list[str] = []
        for attempt in range(2):
            reply = self._chat(self.cfg.model, messages, temperature=self.cfg.temperature,
                               max_tokens=self.cfg.max_tokens, headers=headers)
            self._cost += reply.cost_usd
            raw.append(reply.text)
            try:
                return parse(reply.text), raw
            except MalformedVerdict as exc:
                if attempt == 1:
                    error = MalformedVerdict(f"{exc} (after one retry)")
                    error.replies = tuple(raw)
                    raise error from None
                messages = messages + [{"role": "assistant", "content": reply.text},
                                       {"role": "user", "content": REMINDER}]
        raise AssertionError("unreachable")

    def evaluate(self, *, conversation: str, answer: str, reference: str | None = None,
                 headers: Mapping[str, str] | None = None) -> JudgeResult:
        self._cost = 0.0
        try:
            if self.cfg.mode == "single":
                return self._single(conversation, answer, headers)
            return self._pairwise(conversation, answer, reference or "", headers)
        except MalformedVerdict as exc:
            return JudgeResult(None, "error", {"error": str(exc), "replies": [r[:500] for r in exc.replies],
                                               "judge_model": self.cfg.model}, self._cost)

    def _single(self, conversation: str, answer: str, headers: Mapping[str, str] | None) -> JudgeResult:
        prompt = SINGLE.format(rubric=self.cfg.rubric, conversation=conversation, answer=answer)
        (score, critique), _ = self._ask(prompt, parse_single, headers)
        return JudgeResult(score, "pass" if score >= self._threshold else "fail",
                           {"critique": critique, "judge_model": self.cfg.model}, self._cost)

    def _pairwise(self, conversation: str, answer: str, reference: str,
                  headers: Mapping[str, str] | None) -> JudgeResult:
        verdicts: list[str] = []
        critiques: list[str] = []
        for a, b in ((answer, reference), (reference, answer)):
            prompt = PAIRWISE.format(rubric=self.cfg.rubric, conversation=conversation, a=a, b=b)
            (winner, critique), _ = self._ask(prompt, parse_pairwise, headers)
            verdicts.append(winner)
            critiques.append(critique)
        # from the evaluated answer's side: it was A first, then B
        mine = ["win" if v == "A" else "loss" if v == "B" else "tie" for v in verdicts[:1]]
        mine += ["win" if v == "B" else "loss" if v == "A" else "tie" for v in verdicts[1:]]
        flip = verdicts[0] != "tie" and verdicts[0] == verdicts[1]
        label = mine[0] if mine[0] == mine[1] and mine[0] != "tie" else "tie"
        score = {"win": 1.0, "loss": 0.0, "tie": 0.5}[label]
        ratio = len(answer) / len(reference) if reference else None
        return JudgeResult(score, label, {"verdicts": verdicts, "position_flip": flip, "length_ratio": ratio,
                                          "critiques": critiques, "judge_model": self.cfg.model,
                                          "reference_model": self.cfg.reference_model}, self._cost)
