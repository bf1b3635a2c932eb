"""PII on the input and on whole answers: real Presidio, offline."""

from __future__ import annotations

from guardrails import GuardrailEngine, summarize

EMAIL = "jane.doe@example.com"
PHONE = "212-555-0199"


async def test_mask_replaces_values_consistently_and_restores_them(engine: GuardrailEngine) -> None:
    policy = engine.policy_for("mask", "any-model")
    texts = [f"Mail {EMAIL} or call {PHONE}.", f"Again: {EMAIL}", "nothing here"]
    outcome = await engine.check_input(policy, texts)
    assert outcome.violation is None
    assert outcome.texts == [
        "Mail <EMAIL_ADDRESS_1> or call <PHONE_NUMBER_1>.",
        "Again: <EMAIL_ADDRESS_1>",
        "nothing here",
    ]
    assert outcome.restorer is not None
    pii = outcome.results[0]
    assert (pii.name, pii.action, pii.entity_counts) == ("pii", "mask", {"EMAIL_ADDRESS": 2, "PHONE_NUMBER": 1})
    answer = await engine.check_output(policy, "I will write to <EMAIL_ADDRESS_1> and ring <PHONE_NUMBER_1>.", outcome.restorer)
    assert answer.text == f"I will write to {EMAIL} and ring {PHONE}."
    assert answer.violation is None and answer.modified is False


async def test_redact_replaces_with_type_placeholders(engine: GuardrailEngine) -> None:
    outcome = await engine.check_input(engine.policy_for("redact", "m"), [f"card 4111 1111 1111 1111, mail {EMAIL}"])
    assert outcome.texts == ["card <CREDIT_CARD>, mail <EMAIL_ADDRESS>"]
    assert outcome.restorer is None
    assert summarize(outcome.results) == "pii=redact"


async def test_block_names_entity_types_never_values(engine: GuardrailEngine) -> None:
    outcome = await engine.check_input(engine.policy_for("block", "m"), ["hi", f"reach me at {EMAIL}, {EMAIL}"])
    violation = outcome.violation
    assert violation is not None
    assert (violation.guardrail, violation.code, violation.status) == ("pii", "pii_detected", 400)
    assert "EMAIL_ADDRESS x2" in violation.message
    assert violation.kinds == ("EMAIL_ADDRESS",)
    assert outcome.texts is None
    everything = repr(outcome)
    assert EMAIL not in everything and "jane" not in everything


async def test_clean_input_passes_untouched(engine: GuardrailEngine) -> None:
    outcome = await engine.check_input(engine.policy_for("block", "m"), ["What is the capital of France?"])
    assert outcome.violation is None and outcome.texts is None and outcome.restorer is None
    assert outcome.results[0].action == "pass"


async def test_custom_recognizer_needs_its_context_words(engine: GuardrailEngine) -> None:
    policy = engine.policy_for("mask", "m")
    # Base score 0.3 is under the 0.4 threshold; the context word "employee" lifts it.
    without = await engine.check_input(policy, ["ticket EMP-123456 was closed"])
    assert without.texts is None
    with_context = await engine.check_input(policy, ["employee EMP-123456 was promoted"])
    assert with_context.texts == ["employee <EMPLOYEE_ID_1> was promoted"]


async def test_deny_list_from_config(engine: GuardrailEngine) -> None:
    outcome = await engine.check_input(engine.policy_for("mask", "m"), ["Project Bluebird ships in May"])
    assert outcome.texts == ["Project <CODENAME_1> ships in May"]


async def test_output_redaction_of_new_pii_keeps_restored_values(engine: GuardrailEngine) -> None:
    policy = engine.policy_for("mask", "m")
    outcome = await engine.check_input(policy, [f"My mail is {EMAIL}"])
    answer = await engine.check_output(policy, "Noted <EMAIL_ADDRESS_1>; my colleague is bob@corp.example.org.", outcome.restorer)
    assert answer.text == f"Noted {EMAIL}; my colleague is <EMAIL_ADDRESS>."
    assert answer.modified is True
    assert answer.results[0].entity_counts == {"EMAIL_ADDRESS": 1}
    assert answer.results[0].action == "redact"


async def test_output_block(engine: GuardrailEngine) -> None:
    answer = await engine.check_output(engine.policy_for("out_block", "m"), "Call 212-555-0199 now.", None)
    assert answer.violation is not None and answer.violation.stage == "output"
    assert answer.text == ""
    assert "212" not in repr(answer)


async def test_ner_entities_with_a_spacy_model(ner_engine: GuardrailEngine) -> None:
    policy = ner_engine.policy_for("t", "m")
    outcome = await ner_engine.check_input(policy, ["John Smith flew from Paris to meet Mary Jones."])
    assert outcome.texts is not None
    masked = outcome.texts[0]
    assert "John Smith" not in masked and "Paris" not in masked
    assert "<PERSON_1>" in masked and "<LOCATION_1>" in masked
    assert outcome.restorer is not None
    assert outcome.restorer.restore(masked) == "John Smith flew from Paris to meet Mary Jones."


async def test_pattern_only_engine_finds_no_names(engine: GuardrailEngine) -> None:
    # The default engine has no NER model: PERSON is simply not detectable there.
    outcome = await engine.check_input(engine.policy_for("mask", "m"), ["John Smith flew from Paris."])
    assert outcome.texts is None
