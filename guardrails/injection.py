"""Prompt-injection and jailbreak detector: weighted patterns over normalised text.

The text is checked as written, after normalisation (case, leetspeak, spaced-out
letters, zero-width characters) and after decoding embedded payloads (base64, hex,
URL-encoding, ROT13 when asked for). Each rule that fires contributes its weight; the
score combines them as a noisy-or, so two medium signals add up to a strong one but
no single weak cue blocks. Precision and recall on the committed test set are
measured by bench/guardrails_bench.py.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import unquote

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i", "|": "i"})
_SPACED = re.compile(r"\b(?:[a-z0-9@$!|][ .\-_*]){3,}[a-z0-9@$!|]\b")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}[ :]?){10,}\b")
_PERCENT = re.compile(r"(?:%[0-9a-fA-F]{2}){4,}")

_DET = r"(?:(?:all|any|the|these|those|of|my)\s+)*"
_ADJ = r"(?:(?:previous|prior|above|earlier|preceding|initial|original|system|developer|old|existing|current|safety|content|ethical|moral)\s+)+"
_RULESET = r"(?:instructions?|rules|prompts?|directions|guidelines|guidance|context|constraints|directives|restrictions|programming|safeguards|filters|polic(?:y|ies)|messages?|protocols?)"
_OVERRIDE_VERB = r"(?:ignore|disregard|forget|override|bypass|skip|abandon|drop|discard|neglect|set\s+aside)"
_AI_SUBJECT = r"(?:you|ai|model|assistant|chatbot|bot|persona|answer\w*|respon\w*|repl\w*|output|generat\w*)"

# (name, weight, pattern). Names are recorded in results; weights are probabilities
# that the text is an attack when only this rule fires.
_RULES: tuple[tuple[str, float, str], ...] = (
    # Instruction overrides.
    ("override", 0.9, rf"\b{_OVERRIDE_VERB}\s+(?:about\s+)?{_DET}(?:your\s+)?{_DET}{_ADJ}{_RULESET}"),
    ("override_yours", 0.6, rf"\b{_OVERRIDE_VERB}\s+(?:about\s+)?(?:all\s+(?:of\s+)?)?(?:your|all)\s+{_RULESET}"),
    ("override_given", 0.8, rf"\b{_OVERRIDE_VERB}\s+(?:\w+\s+){{0,3}}{_RULESET}\s+(?:that\s+)?you\s+(?:were|have\s+been|got)\s+(?:given|told)"),
    ("override_everything", 0.8, r"\b(?:ignore|disregard|forget)\s+(?:everything|all(?:\s+that)?|what(?:ever)?)\s+(?:you\s+(?:were|have\s+been)\s+told|(?:said|written|stated|mentioned)\s+(?:above|before|earlier|previously)|above|before)"),
    ("new_instructions", 0.6, r"\b(?:new|updated|real|actual|true)\s+(?:system\s+)?instructions?\s*(?::|are\b|follow)"),
    ("instead_follow", 0.55, r"\binstead,?\s+(?:you\s+(?:will|must|should)|follow|do|obey)\b"),
    ("no_longer", 0.5, r"\byou\s+(?:are|will)\s+no\s+longer\s+(?:bound|restricted|limited|an?\s+(?:ai|assistant|language\s+model))"),
    ("from_now_on", 0.35, r"\bfrom\s+now\s+on,?\s+(?:you|your|respond|answer|act)"),
    ("do_not_follow", 0.7, r"\b(?:do\s+not|don'?t|stop)\s+(?:follow(?:ing)?|obey(?:ing)?|adher(?:e|ing)\s+to)\s+(?:your|the|any)\s+(?:previous\s+|original\s+|system\s+)?" + _RULESET),
    ("safety_disabled", 0.7, r"\b(?:safety|content|ethics?|ethical|moderation)\s+(?:protocols?|filters?|guidelines|rules|mode|restrictions)\s+(?:are\s+|is\s+|have\s+been\s+|now\s+)?(?:disabled|off|deactivated|removed|lifted|suspended)"),
    ("system_override", 0.5, r"\b(?:system|admin|security)\s+override\b"),
    # Role-play jailbreaks.
    ("dan", 0.85, r"(?i:\bdo\s+anything\s+now\b|\bevil\s+confidant|\banti-?dan\b)|\b(?i:you\s+are|pretend\s+to\s+be|act\s+as|called|named|as)\s+(?:an?\s+)?[\"']?(?:DAN|STAN|AIM|DUDE)\b"),
    ("developer_mode", 0.7, r"\b(?:developer|dev|god|jailbreak|jailbroken|unrestricted|unfiltered|uncensored|dan)\s+mode\b"),
    ("jailbreak_word", 0.35, r"\bjail\s*break(?:ing|ed|s)?\b"),
    ("no_restrictions", 0.65, rf"\b{_AI_SUBJECT}\b[^.]{{0,40}}?\b(?:without|no|free\s+(?:of|from)|zero|unbound\s+by)\s+(?:any\s+)?(?:ethical\s+|moral\s+|content\s+|safety\s+)*(?:restrictions|limitations|limits|filters|guidelines|rules|censorship|boundaries|morals|ethics)\b"),
    ("pretend_unrestricted", 0.6, r"\b(?:pretend|imagine|act|behave|roleplay|role-play)\s+(?:that\s+)?(?:you\s+are|you're|to\s+be|as(?:\s+if)?)\s+(?:an?\s+)?(?:\w+\s+){0,3}(?:ai|model|assistant|chatbot|bot|version)\s+(?:\w+\s+){0,3}(?:without|with\s+no|that\s+(?:has|have)\s+no|who\s+(?:has|have)\s+no|free\s+from)"),
    ("unfiltered_persona", 0.55, r"\b(?:an?|the)\s+(?:unfiltered|uncensored|unrestricted|amoral|unethical|evil|unbound|rogue)\s+(?:ai|assistant|model|chatbot|bot|persona|character|version)"),
    ("stay_in_character", 0.35, r"\b(?:stay|remain)\s+in\s+character\b|\bnever\s+break\s+character\b"),
    ("refusal_suppression", 0.5, r"\b(?:never|do\s+not|don'?t|must\s+not)\s+(?:refuse|decline|say\s+(?:no|you\s+can'?t|sorry)|apologi[sz]e|add\s+(?:any\s+)?(?:warnings?|disclaimers?))"),
    ("two_responses", 0.45, r"\b(?:two|2)\s+(?:different\s+)?(?:responses|answers|paragraphs)\b.{0,80}\b(?:normal|classic|filtered)\b.{0,80}\b(?:jailbreak|unfiltered|dan|developer)"),
    ("hypothetical_bypass", 0.35, r"\b(?:hypothetically|in\s+a\s+fictional\s+world|for\s+a\s+(?:story|novel)),?\s+(?:where|in\s+which)\s+(?:ai|there\s+are\s+no|you\s+(?:have|had)\s+no)\s+(?:\w+\s+)?(?:rules|restrictions|filters|limits)"),
    # System-prompt extraction.
    ("extract_prompt", 0.85, r"\b(?:reveal|show|print|repeat|output|display|dump|leak|share|give\s+me|tell\s+me|write\s+out|recite|spell\s+out|expose|disclose|copy|paste\s+back)\s+(?:me\s+)?(?:\w+\s+){0,3}(?:system\s+prompt|system\s+message|initial\s+(?:prompt|instructions)|hidden\s+(?:prompt|instructions)|original\s+(?:prompt|instructions)|pre-?prompt|secret\s+instructions|developer\s+(?:message|instructions)|(?:prompt|instructions|text|words|messages?)\s+(?:above|before\s+this|you\s+were\s+given))"),
    ("ask_prompt", 0.7, r"\bwhat(?:'s|\s+is|\s+are|\s+were)\s+(?:your|the)\s+(?:(?:full|exact|entire|original|initial|hidden|secret)\s+)*(?:system\s+prompt|system\s+message|pre-?prompt|instructions\s+you\s+were\s+given)"),
    ("what_instructions", 0.6, r"\bwhat\s+(?:were|are)\s+(?:your|the)\s+(?:exact\s+|original\s+|initial\s+|hidden\s+|secret\s+)+(?:instructions|rules|prompt)"),
    ("repeat_above", 0.7, r"\b(?:repeat|print|output|copy|translate)\s+(?:everything|all(?:\s+the)?(?:\s+text)?|the\s+(?:text|words|content))\s+(?:above|before|preceding|prior)"),
    ("starts_with_you_are", 0.6, r"\b(?:begin|start)\s+(?:your\s+(?:reply|answer|response)\s+)?with\s+[\"']?you\s+are\b"),
    # Chat-template and role markers smuggled into user or tool content.
    ("role_markers", 0.65, r"<\|(?:im_start|im_end|system|endoftext|start_header_id)\|>|\[/?inst\]|<<sys>>|</?system>|^\s*#{2,}\s*(?:system|instruction)s?\s*:|\n\s*system\s*:\s"),
    ("hidden_comment", 0.6, r"<!--[^>]{0,200}\b(?:assistant|ai|llm|model|chatbot|ignore|instructions?)\b"),
    # Tool-content attacks: exfiltration and hidden orders.
    ("exfiltrate", 0.6, r"\b(?:send|post|upload|forward|leak|exfiltrate|transmit|email)\s+(?:[\w']+\s+){0,4}(?:conversation|chat\s+history|credentials|passwords?|api\s+keys?|secrets?|tokens?|user\s+data|private\s+data)\s+(?:[\w']+\s+){0,3}(?:to|at)\s+(?:https?://|[\w.-]+@|this\s+(?:url|address|endpoint))"),
    ("hide_from_user", 0.55, r"\b(?:do\s+not|don'?t|never)\s+(?:tell|inform|mention\s+(?:this\s+)?to|reveal\s+(?:this\s+)?to|show\s+(?:this\s+)?to|let)\s+the\s+user\b"),
    ("markdown_exfil", 0.6, r"!\[[^\]]*\]\(https?://[^)\s]*(?:\?|&)[^)\s]*=(?:\{|\$|%7b|<)"),
    ("ai_directed", 0.45, r"\b(?:attention|note|important|message)\s+(?:to|for)\s+(?:the\s+)?(?:ai|assistant|llm|language\s+model|chatbot)\b"),
)

# Case-sensitive exceptions: persona names such as DAN are only a signal in capitals
# ("my friend Dan" is not a jailbreak).
_CASE_SENSITIVE = frozenset({"dan"})
_COMPILED = tuple(
    (name, weight, re.compile(pattern, re.MULTILINE if name in _CASE_SENSITIVE else re.IGNORECASE | re.MULTILINE))
    for name, weight, pattern in _RULES
)
_ENCODED_BONUS = 0.3  # instructions hidden in an encoding are themselves a signal
_ASKS_TO_DECODE = re.compile(r"\b(?:decode|base64|hex|rot13|rot-13|cipher|encoded)\b", re.IGNORECASE)


@dataclass(slots=True)
class InjectionScore:
    score: float
    rules: dict[str, float] = field(default_factory=dict)


class InjectionDetector:
    """Stateless apart from compiled rules; safe to share between threads."""

    def __init__(self, max_chars: int = 200_000) -> None:
        # Very long tool results are checked up to this many characters at each end.
        self._max_chars = max_chars

    def score(self, text: str) -> InjectionScore:
        if len(text) > self._max_chars:
            half = self._max_chars // 2
            text = text[:half] + "\n" + text[-half:]
        fired: dict[str, float] = {}
        for view in _views(text):
            _apply_rules(view, fired)
        for decoded in _decoded_payloads(text):
            before = set(fired)
            for view in _views(decoded):
                _apply_rules(view, fired)
            if set(fired) - before:
                fired["encoded_payload"] = _ENCODED_BONUS
        remaining = 1.0
        for weight in fired.values():
            remaining *= 1.0 - weight
        return InjectionScore(score=round(1.0 - remaining, 4), rules=fired)


def _apply_rules(text: str, fired: dict[str, float]) -> None:
    for name, weight, pattern in _COMPILED:
        if name not in fired and pattern.search(text):
            fired[name] = weight


def _views(text: str) -> list[str]:
    """The text as written plus normalised spellings that defeat simple obfuscation."""
    plain = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    views = [plain]
    lowered = plain.lower()
    leet = lowered.translate(_LEET)
    if leet != lowered:
        views.append(leet)
    despaced = _SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group(0)), leet)
    if despaced != leet:
        views.append(despaced)
    return views


def _decoded_payloads(text: str) -> list[str]:
    payloads: list[str] = []
    for match in _BASE64.finditer(text):
        token = match.group(0)
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        decoded = _printable(raw)
        if decoded:
            payloads.append(decoded)
    for match in _HEX.finditer(text):
        digits = re.sub(r"[ :]", "", match.group(0))
        if len(digits) % 2:
            continue
        decoded = _printable(bytes.fromhex(digits))
        if decoded:
            payloads.append(decoded)
    for match in _PERCENT.finditer(text):
        payloads.append(unquote(match.group(0)))
    if _ASKS_TO_DECODE.search(text) and re.search(r"\brot-?13\b", text, re.IGNORECASE):
        payloads.append(codecs.decode(text, "rot13"))
    # Reversed text is a common smuggling trick ("snoitcurtsni suoiverp erongi").
    if re.search(r"\b(?:reverse|backwards|reversed)\b", text, re.IGNORECASE):
        payloads.append(text[::-1])
    return payloads


def _printable(raw: bytes) -> str | None:
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(decoded) < 8:
        return None
    printable = sum(ch.isprintable() or ch.isspace() for ch in decoded)
    return decoded if printable / len(decoded) > 0.95 else None
