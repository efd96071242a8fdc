"""The extra Presidio recognizers, run through a real AnalyzerEngine over a blank spaCy tokenizer: each finds
its real-looking values (also inside Chinese text, which has no word boundaries) and rejects look-alikes that
fail its checksum, date or digit-run validation."""

import random
import time

import pytest
import spacy
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import SpacyNlpEngine

from gateway.pii.recognizers import (
    EXTRA_ENTITIES,
    ApiKeyRecognizer,
    cn_id_check_char,
    cn_id_valid,
    extra_recognizers,
    luhn_valid,
)

CN_ID = "11010519491231002X"  # the well-known public sample: Beijing Chaoyang, born 1949-12-31
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
OPENAI_KEY = "sk-proj-" + "".join(random.Random(20260101).choices(ALNUM, k=48))  # fixed seed: same key every run
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example access key id


class BlankEngine(SpacyNlpEngine):
    """spaCy's blank English tokenizer: no model download."""

    def load(self) -> None:
        self.nlp = {"en": spacy.blank("en")}


@pytest.fixture(scope="module")
def engine() -> AnalyzerEngine:
    nlp = BlankEngine(models=[{"lang_code": "en", "model_name": "blank"}])
    nlp.load()
    registry = RecognizerRegistry()
    for recognizer in extra_recognizers():
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=["en"])


def found(engine: AnalyzerEngine, text: str, entity: str, threshold: float = 0.0) -> list[str]:
    """The texts `engine` reports as `entity` in `text` (scoring at least `threshold`)."""
    results = engine.analyze(text=text, language="en", entities=[entity], score_threshold=threshold)
    return [text[r.start : r.end] for r in results]


def results(engine: AnalyzerEngine, text: str, entity: str) -> list[RecognizerResult]:
    return engine.analyze(text=text, language="en", entities=[entity])


def with_luhn_digit(body: str) -> str:
    """`body` plus the check digit that makes it pass the Luhn check."""
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def with_id_check(first17: str) -> str:
    return first17 + cn_id_check_char(first17)


# --- checksum helpers ---


def test_the_public_cn_id_sample_has_check_character_x() -> None:
    assert cn_id_check_char(CN_ID[:17]) == "X"
    assert cn_id_valid(CN_ID)


def test_luhn_accepts_known_test_numbers_and_rejects_a_changed_digit() -> None:
    assert luhn_valid("6212345678901232")
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("6212345678901233")
    assert not luhn_valid("6212345678901242")


# --- CN_ID_CARD ---


def test_cn_id_card_is_found_with_full_score(engine: AnalyzerEngine) -> None:
    [result] = results(engine, f"ID number {CN_ID} on file", "CN_ID_CARD")
    assert (result.start, result.end, result.score) == (10, 28, 1.0)


def test_cn_id_card_is_found_inside_chinese_text_and_with_lower_case_x(engine: AnalyzerEngine) -> None:
    assert found(engine, f"身份证号{CN_ID}。", "CN_ID_CARD") == [CN_ID]
    assert found(engine, f"身份证号{CN_ID.lower()}请核对", "CN_ID_CARD") == [CN_ID.lower()]


def test_cn_id_card_with_a_digit_check_character_is_found(engine: AnalyzerEngine) -> None:
    number = with_id_check("44030419900307123")
    assert number[-1].isdigit() or number[-1] == "X"
    assert found(engine, f"id: {number}", "CN_ID_CARD") == [number]


def test_cn_id_card_with_a_wrong_check_character_is_not_found(engine: AnalyzerEngine) -> None:
    assert found(engine, "ID number 110105194912310021 on file", "CN_ID_CARD") == []
    assert found(engine, "ID number 110105194912310029 on file", "CN_ID_CARD") == []


@pytest.mark.parametrize(
    "first17",
    [
        "11010518991231002",  # born 1899
        "11010519491331002",  # month 13
        "11010520230229002",  # 29 February in a common year
        "11010521000101002",  # born 2100
        "01010519491231002",  # area code starting with 0
    ],
)
def test_cn_id_card_with_a_correct_checksum_but_implausible_fields_is_not_found(
    engine: AnalyzerEngine, first17: str
) -> None:
    number = with_id_check(first17)
    assert found(engine, f"ID {number}", "CN_ID_CARD") == []


def test_cn_id_card_inside_a_longer_digit_run_is_not_found(engine: AnalyzerEngine) -> None:
    assert found(engine, f"ref 9{CN_ID} end", "CN_ID_CARD") == []
    assert found(engine, f"ref {CN_ID[:17]}{cn_id_check_char(CN_ID[:17])}7", "CN_ID_CARD") == []
    assert found(engine, f"ref {with_id_check('44030419900307123')}5", "CN_ID_CARD") == []


# --- CN_MOBILE ---


def test_cn_mobile_is_found_inside_chinese_text(engine: AnalyzerEngine) -> None:
    text = "请拨打13800138000联系我"
    [result] = results(engine, text, "CN_MOBILE")
    assert (text[result.start : result.end], result.score) == ("13800138000", 1.0)


@pytest.mark.parametrize(
    "number",
    ["+86 138-0013-8000", "+86 138 0013 8000", "+8613800138000", "0086 13800138000", "8613800138000", "199-1234-5678"],
)
def test_cn_mobile_with_a_country_prefix_or_separators_is_found_whole(engine: AnalyzerEngine, number: str) -> None:
    assert found(engine, f"call {number} today", "CN_MOBILE") == [number]


@pytest.mark.parametrize(
    "text",
    [
        "order 138001380001 shipped",  # 12 digits
        "order 913800138000 shipped",  # 12 digits, the mobile at the end
        "订单号138001380001已发货",
        "call 12800138000",  # second digit 2
        "call 10800138000",
        "call 1380013800",  # 10 digits
    ],
)
def test_cn_mobile_look_alikes_are_not_found(engine: AnalyzerEngine, text: str) -> None:
    assert found(engine, text, "CN_MOBILE") == []


# --- BANK_CARD ---


@pytest.mark.parametrize(
    "number",
    [
        "6212345678901232",
        "6212 3456 7890 1232",
        "6212-3456-7890-1232",
        with_luhn_digit("621234567890123456"),  # 19 digits
        "6212 3456 7890 1234 " + with_luhn_digit("6212345678901234567")[-3:],  # 19 digits, 4-4-4-4-3
    ],
)
def test_unionpay_card_passing_luhn_is_found(engine: AnalyzerEngine, number: str) -> None:
    text = f"银行卡号{number}请查收"
    [result] = results(engine, text, "BANK_CARD")
    assert (text[result.start : result.end], result.score) == (number, 1.0)


@pytest.mark.parametrize(
    "text",
    [
        "card 6212345678901233",  # fails Luhn
        "card 6212 3456 7890 1233",
        "card 6212 3456-7890 1232",  # mixed separators
        "card 4111111111111111",  # a Visa number: Presidio's CREDIT_CARD, not BANK_CARD
        "ref 96212345678901232",  # inside a longer digit run
        "card 621234567890123",  # 15 digits
    ],
)
def test_bank_card_look_alikes_are_not_found(engine: AnalyzerEngine, text: str) -> None:
    assert found(engine, text, "BANK_CARD") == []


# --- API_KEY ---


@pytest.mark.parametrize("key", [AWS_KEY_ID, OPENAI_KEY])
def test_api_keys_are_found_with_their_span(engine: AnalyzerEngine, key: str) -> None:
    text = f"export KEY={key}\nthen run it"
    [result] = results(engine, text, "API_KEY")
    assert (text[result.start : result.end], result.score) == (key, 0.95)


def test_api_key_result_names_the_credential_kind(engine: AnalyzerEngine) -> None:
    [result] = results(engine, f"aws id {AWS_KEY_ID}", "API_KEY")
    assert result.recognition_metadata is not None
    assert result.recognition_metadata["kind"] == "aws_access_key_id"


def test_placeholders_and_prose_are_not_api_keys(engine: AnalyzerEngine) -> None:
    text = "AKIAXXXXXXXXXXXXXXXX is a placeholder; set OPENAI_API_KEY to your key (it starts with sk-)."
    assert found(engine, text, "API_KEY") == []


def test_api_key_recognizer_returns_nothing_when_other_entities_are_asked_for() -> None:
    assert ApiKeyRecognizer().analyze(f"key {AWS_KEY_ID}", ["CN_MOBILE"]) == []
    assert len(ApiKeyRecognizer().analyze(f"key {AWS_KEY_ID}", ["API_KEY"])) == 1


# --- PHONE_NUMBER ---


@pytest.mark.parametrize("number", ["+44 20 7946 0958", "+49 30 901820", "+86 138 0013 8000", "+91 98765 43210"])
def test_international_phone_numbers_are_found(engine: AnalyzerEngine, number: str) -> None:
    assert found(engine, f"Reach me at {number} after 5pm", "PHONE_NUMBER") == [number]


PHONE_TEXTS = [
    "Call +1 415-555-0132 or (415) 555-0199, ext. 12, between 9 and 5.",
    "UK office: 020 7946 0958; Paris: 01 42 68 53 00; Berlin +49 30 901820.",
    "numbers: 4155550132, 415.555.0133 and 1-800-555-0100 (toll free)",
    "中国手机 13800138000，座机 010-6552 9988。 Tokyo 03-3224-5000.",  # noqa: RUF001
    "Invoice 2024-11-05, order 55512, amount 1,234.56 EUR; call +33 6 12 34 56 78.",
    "+61 2 9374 4000" + " filler words" * 40 + " +65 6123 4567 at the end",
]


@pytest.mark.parametrize("text", PHONE_TEXTS)
def test_the_windowed_phone_recognizer_finds_what_a_whole_text_pass_finds(text: str) -> None:
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    from gateway.pii.recognizers import LANGUAGE, PHONE_REGIONS, WindowedPhoneRecognizer

    def spans(recognizer: PhoneRecognizer) -> list[tuple[int, int]]:
        return sorted((r.start, r.end) for r in recognizer.analyze(text, ["PHONE_NUMBER"]))

    whole = PhoneRecognizer(supported_language=LANGUAGE, supported_regions=PHONE_REGIONS)
    expected = spans(whole)
    assert expected, "every sample holds a phone number"
    assert spans(WindowedPhoneRecognizer(supported_language=LANGUAGE, supported_regions=PHONE_REGIONS)) == expected


# --- the set ---


def test_extra_recognizers_cover_the_extra_entities_and_phone_numbers() -> None:
    entities = {entity for recognizer in extra_recognizers() for entity in recognizer.supported_entities}
    assert entities == {*EXTRA_ENTITIES, "PHONE_NUMBER"}
    assert all(recognizer.supported_language == "en" for recognizer in extra_recognizers())


def test_text_without_pii_yields_nothing(engine: AnalyzerEngine) -> None:
    text = "The meeting moved to 3 pm on 2024-05-17; budget 1,250,000 CNY, 42 attendees."
    assert engine.analyze(text=text, language="en") == []


@pytest.mark.parametrize(
    "text",
    ["7" * 100_000, "1234567890" * 10_000, "6" + "2" * 99_999, "@." * 25_000, "@" * 25_000 + "." * 25_000],
    ids=["same-digit", "digit-cycle", "62-run", "at-dot", "at-then-dot"],
)
def test_pathological_input_is_analysed_in_bounded_time(engine: AnalyzerEngine, text: str) -> None:
    started = time.perf_counter()
    engine.analyze(text=text, language="en")
    assert time.perf_counter() - started < 2.0


# --- context words (the gateway's analyzer, as a pool process builds it) ---


@pytest.fixture(scope="module")
def gateway_analyzer() -> AnalyzerEngine:
    from gateway.pii.engine import _offline_tldextract, build_analyzer

    _offline_tldextract()
    return build_analyzer(None)


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        ("my passport number is 912803456", "US_PASSPORT", "912803456"),
        ("bank account number 123456789012", "US_BANK_NUMBER", "123456789012"),
        ("driver license D1234567", "US_DRIVER_LICENSE", "D1234567"),
    ],
)
def test_a_weak_pattern_next_to_its_context_word_reaches_the_threshold(
    gateway_analyzer: AnalyzerEngine, text: str, entity: str, value: str
) -> None:
    """Presidio scores these patterns 0.05-0.3 alone and adds 0.35 when a context word is near: the
    tokens need lemmas for that, which the gateway's blank pipeline sets to the lower-case words."""
    assert found(gateway_analyzer, text, entity, threshold=0.35) == [value]
    alone = " ".join(["the", "quick", "fox", "saw", value, "today"])
    assert found(gateway_analyzer, alone, entity, threshold=0.35) == []
