"""Long texts are scanned in overlapping chunks: nothing is lost at a chunk boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from guardrails import GuardrailEngine, GuardrailsConfig
from guardrails.chunking import chunk_spans

CHUNK = 400
OVERLAP = 100
WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()

PII = {
    "input_action": "mask",
    # 0.3 is under the 0.4 threshold: found only when the context word is seen with it.
    "recognizers": [{"entity": "EMPLOYEE_ID", "patterns": [{"regex": r"\bEMP-\d{6}\b", "score": 0.3}],
                     "context": ["employee"]}],
}


@pytest.fixture(scope="module")
async def small_chunks() -> AsyncIterator[GuardrailEngine]:
    eng = GuardrailEngine.from_config(GuardrailsConfig.model_validate({
        "spacy_model": None, "toxicity_model": None, "chunk_chars": CHUNK, "chunk_overlap_chars": OVERLAP,
        "default": {"pii": {**PII, "budget_ms": 10_000}},
    }))
    await eng.start()
    yield eng
    await eng.aclose()


def _document(units: int) -> tuple[str, str, list[tuple[int, int]]]:
    """A long text with PII at every offset modulo the chunk size, the masked text
    expected back, and where each value sits."""
    text, masked, spans = [], [], []
    length = 0
    for i in range(units):
        filler = " ".join(WORDS[j % len(WORDS)] for j in range(i % 23)) + " "
        email = f"user{i}@example.com"
        employee = f"EMP-{100000 + i}"
        card = "4111 1111 1111 1111"
        part = f"{filler}write to {email} or the employee {employee} paying with card {card}. "
        text.append(part)
        masked.append(f"{filler}write to <EMAIL_ADDRESS_{i + 1}> or the employee <EMPLOYEE_ID_{i + 1}> "
                      f"paying with card <CREDIT_CARD_1>. ")
        for value in (email, employee, card):
            at = part.index(value)
            spans.append((length + at, length + at + len(value)))
        length += len(part)
    return "".join(text), "".join(masked), spans


def test_chunks_cover_the_text_and_own_each_offset_once() -> None:
    text = " ".join(WORDS * 200)
    chunks = chunk_spans(text, CHUNK, OVERLAP)
    assert len(chunks) > 10
    assert chunks[0].own_start == 0 and chunks[-1].own_end == len(text) and chunks[-1].end == len(text)
    for before, after in zip(chunks, chunks[1:]):
        assert before.own_end == after.own_start                 # every start offset owned exactly once
        assert after.start <= before.end - OVERLAP                # consecutive chunks overlap
        assert before.end - before.own_end >= OVERLAP // 2        # an owned value up to OVERLAP/2 chars fits
        assert after.own_start - after.start >= OVERLAP // 2      # and has OVERLAP/2 chars of context before it
        assert before.end - before.start <= CHUNK
        assert text[before.end - 1].isspace()                     # cut after a whitespace, never inside a word
    assert chunk_spans("short text", CHUNK, OVERLAP)[0].end == len("short text")


async def test_values_across_chunk_boundaries_are_found_once(small_chunks: GuardrailEngine) -> None:
    text, expected, spans = _document(120)
    # The test means something only if values straddle chunk starts (a cut inside a word:
    # the next chunk sees a piece of the value), the middles of the overlaps (where
    # ownership passes to the next chunk) and chunk ends.
    chunks = chunk_spans(text, CHUNK, OVERLAP)
    for cuts in ([c.start for c in chunks], [c.own_start for c in chunks], [c.end for c in chunks]):
        assert sum(any(s < cut < t for cut in cuts) for s, t in spans) >= 5
    outcome = await small_chunks.check_input(small_chunks.policy_for("t", "m"), [text])
    assert outcome.violation is None, outcome.results
    assert outcome.texts == [expected]
    assert outcome.results[0].entity_counts == {"EMAIL_ADDRESS": 120, "EMPLOYEE_ID": 120, "CREDIT_CARD": 120}


async def test_a_context_word_in_the_previous_chunk_still_counts(small_chunks: GuardrailEngine) -> None:
    # Put "employee" just before each possible boundary and the ID just after it.
    policy = small_chunks.policy_for("t", "m")
    for shift in range(0, 60, 7):
        text = "x " * ((CHUNK - OVERLAP // 2 - shift) // 2) + "our employee EMP-123456 left. " + "y " * 300
        outcome = await small_chunks.check_input(policy, [text])
        assert outcome.texts is not None and "<EMPLOYEE_ID_1>" in outcome.texts[0], shift
        assert "EMP-123456" not in outcome.texts[0]
