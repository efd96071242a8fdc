"""Presidio recognizers for PII that Presidio does not ship, each validated to keep false positives down.

    CnMobileRecognizer      CN_MOBILE     mainland China mobile numbers: 11 digits starting 13-19, optionally
                                          after +86 / 0086 / 86, optionally grouped 3-4-4 by spaces or dashes.
                                          Validated: 11 digits once the prefix and separators are removed, the
                                          second digit 3-9.
    CnIdCardRecognizer      CN_ID_CARD    resident identity card numbers (GB 11643-1999): 17 digits and a check
                                          character (0-9 or X). Validated: the ISO 7064 MOD 11-2 check character,
                                          a non-zero area code and a real birth date (YYYYMMDD, 1900-2099).
    BankCardRecognizer      BANK_CARD     UnionPay card numbers: 62 + 14-17 digits, written as one run or in
                                          groups of 4 split by one kind of separator (space or dash). Validated:
                                          16-19 digits passing the Luhn check. (Presidio's CREDIT_CARD covers
                                          Visa, Mastercard, Amex and the like.)
    ApiKeyRecognizer        API_KEY       the gateway's own credential scanner (`gateway.guardrails.credentials`:
                                          AWS, OpenAI, Anthropic, GitHub, Slack, Google, Stripe keys, JWTs,
                                          private key blocks, gateway keys), each hit at score 0.95. A scan that
                                          runs out of time fails closed: one hit over the whole text.
    intl_phone_recognizer() PHONE_NUMBER  Presidio's PhoneRecognizer (libphonenumber) over more regions than its
                                          default, so common international numbers are found and validated.

Numbers must not be part of a longer digit run: the patterns use digit lookarounds, not word boundaries, so
they work in Chinese text (no spaces between words). Every pattern is bounded (no nested quantifiers), so a
long run of digits or punctuation is matched in linear time.

Pattern matches score 0.5; Presidio's PatternRecognizer raises a match to 1.0 when `validate_result` says
True and drops it when it says False.

    extra_recognizers()  all of them, for `RecognizerRegistry.add_recognizer`
    EXTRA_ENTITIES       the entity types they add (PHONE_NUMBER is Presidio's own)
"""

import datetime
import re

import phonenumbers
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import PhoneRecognizer

from gateway.guardrails.credentials import Secrets

EXTRA_ENTITIES = ("CN_MOBILE", "CN_ID_CARD", "BANK_CARD", "API_KEY")

LANGUAGE = "en"
PATTERN_SCORE = 0.5
API_KEY_SCORE = 0.95
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "CN", "IN", "JP", "BR", "CA", "AU", "SG", "CH", "SE")

# Not preceded / followed by a digit: a number inside a longer digit run is something else.
_NO_DIGIT_BEFORE = r"(?<!\d)"
_NO_DIGIT_AFTER = r"(?!\d)"


def _digits(text: str) -> str:
    """The ASCII digits of `text`, in order."""
    return "".join(char for char in text if "0" <= char <= "9")


def luhn_valid(number: str) -> bool:
    """Whether the digit string `number` passes the Luhn (mod 10) check."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def cn_id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of the first 17 digits of a resident identity card number."""
    return _ID_CHECK[sum(int(char) * weight for char, weight in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def _plausible_birth_date(yyyymmdd: str) -> bool:
    year, month, day = int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8])
    if not 1900 <= year <= 2099:
        return False
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return True


def cn_id_valid(number: str) -> bool:
    """Whether `number` is an 18-character resident identity card number with a plausible birth date and a
    correct check character (X in either case)."""
    if len(number) != 18 or not number[:17].isascii() or not number[:17].isdigit() or number[0] == "0":
        return False
    return _plausible_birth_date(number[6:14]) and cn_id_check_char(number[:17]) == number[17].upper()


def cn_mobile_valid(text: str) -> bool:
    """Whether `text` (as matched, with an optional 86 / 0086 prefix and separators) is an 11-digit mainland
    China mobile number."""
    digits = _digits(text)
    if len(digits) == 15 and digits.startswith("0086"):
        digits = digits[4:]
    elif len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    return len(digits) == 11 and digits[0] == "1" and digits[1] in "3456789"


def bank_card_valid(text: str) -> bool:
    """Whether `text` (as matched, separators allowed) holds a 16-19 digit number passing the Luhn check."""
    digits = _digits(text)
    return 16 <= len(digits) <= 19 and luhn_valid(digits)


class CnMobileRecognizer(PatternRecognizer):
    """Mainland China mobile numbers (CN_MOBILE)."""

    PATTERNS = (
        Pattern(
            "cn_mobile",
            _NO_DIGIT_BEFORE + r"(?:(?:\+|00)?86[ -]?)?1[3-9][0-9][ -]?[0-9]{4}[ -]?[0-9]{4}" + _NO_DIGIT_AFTER,
            PATTERN_SCORE,
        ),
    )
    CONTEXT = ("mobile", "phone", "cell", "tel", "手机", "电话", "联系")

    def __init__(self) -> None:
        super().__init__(
            supported_entity="CN_MOBILE",
            patterns=list(self.PATTERNS),
            context=list(self.CONTEXT),
            supported_language=LANGUAGE,
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        return cn_mobile_valid(pattern_text)


class CnIdCardRecognizer(PatternRecognizer):
    """Resident identity card numbers of the People's Republic of China (CN_ID_CARD)."""

    PATTERNS = (Pattern("cn_id_card", _NO_DIGIT_BEFORE + r"[1-9][0-9]{16}[0-9Xx]" + _NO_DIGIT_AFTER, PATTERN_SCORE),)
    CONTEXT = ("id", "identity", "身份证", "证件")

    def __init__(self) -> None:
        super().__init__(
            supported_entity="CN_ID_CARD",
            patterns=list(self.PATTERNS),
            context=list(self.CONTEXT),
            supported_language=LANGUAGE,
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        return cn_id_valid(pattern_text)


class BankCardRecognizer(PatternRecognizer):
    """UnionPay bank card numbers (BANK_CARD): one run of 16-19 digits, or groups of 4 split by one separator."""

    PATTERNS = (
        Pattern("bank_card_run", _NO_DIGIT_BEFORE + r"62[0-9]{14,17}" + _NO_DIGIT_AFTER, PATTERN_SCORE),
        Pattern(
            "bank_card_grouped",
            # 62xx, then 3 groups of 4 and maybe one of 1-3, every separator the same as the first
            _NO_DIGIT_BEFORE + r"62[0-9]{2}(?P<sep>[ -])[0-9]{4}(?:(?P=sep)[0-9]{4}){2}(?:(?P=sep)[0-9]{1,3})?(?!\d)",
            PATTERN_SCORE,
        ),
    )
    CONTEXT = ("card", "bank", "unionpay", "银行卡", "卡号", "银联")

    def __init__(self) -> None:
        super().__init__(
            supported_entity="BANK_CARD",
            patterns=list(self.PATTERNS),
            context=list(self.CONTEXT),
            supported_language=LANGUAGE,
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        return bank_card_valid(pattern_text)


class ApiKeyRecognizer(EntityRecognizer):
    """API keys, tokens and private keys (API_KEY), found by the gateway's credential scanner; the kind of
    each hit is in the result's recognition metadata under "kind"."""

    NAME = "ApiKeyRecognizer"

    def __init__(self) -> None:
        self._secrets = Secrets()
        super().__init__(supported_entities=["API_KEY"], name=self.NAME, supported_language=LANGUAGE)

    def load(self) -> None:
        pass

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if entities and "API_KEY" not in entities:
            return []
        return [
            RecognizerResult(
                entity_type="API_KEY",
                start=hit.start,
                end=hit.end,
                score=API_KEY_SCORE,
                recognition_metadata={
                    RecognizerResult.RECOGNIZER_NAME_KEY: self.NAME,
                    RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                    "kind": hit.label,
                },
            )
            for hit in self._secrets.scan(text)
        ]


class WindowedPhoneRecognizer(PhoneRecognizer):  # type: ignore[misc]
    """Presidio's PhoneRecognizer, doing less of the same work. libphonenumber's matcher walks the text once
    per region (16 here) and parses and validates every candidate each time: about 60 % of a 1 KB analysis.

      - it reads only windows around the digits: each run of digits and separators and PHONE_MARGIN
        characters either side (windows that touch are merged); a text without a digit has no phone number;
      - a number found by one region is blanked out of the window for the next ones, and the regions stop
        once no run of five digits or more is left: "+1 415-555-0132" is found by the first region, and
        the fifteen others would only find it again (Presidio keeps one of the duplicates anyway).

    The spans come back in the text's offsets, as Presidio's own recognizer reports them."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = []
        for start, end in _windows(text):
            window = text[start:end]
            found: list[RecognizerResult] = []
            for region in self.supported_regions:
                matches = list(phonenumbers.PhoneNumberMatcher(window, region, leniency=self.leniency or 0))
                found += [self._get_recognizer_result(match, window, region, nlp_artifacts) for match in matches]
                for match in matches:  # the next regions do not see it again
                    window = window[: match.start] + " " * (match.end - match.start) + window[match.end :]
                if not _LONG_RUN.search(window):
                    break
            for result in found:
                result.start += start
                result.end += start
            results += found
        return EntityRecognizer.remove_duplicates(results)  # type: ignore[no-any-return]


PHONE_MARGIN = 24
_DIGITS = re.compile(r"\d[\d\s().\-/]*")
_LONG_RUN = re.compile(r"\d(?:[\s().\-/]*\d){4,}")  # five digits or more, separators between


def _windows(text: str) -> list[tuple[int, int]]:
    windows: list[tuple[int, int]] = []
    for run in _DIGITS.finditer(text):
        start, end = max(0, run.start() - PHONE_MARGIN), min(len(text), run.end() + PHONE_MARGIN)
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows


def intl_phone_recognizer() -> EntityRecognizer:
    """Presidio's PhoneRecognizer (PHONE_NUMBER) over PHONE_REGIONS: numbers written with a country code
    (+44 20 7946 0958, +86 138 0013 8000) and national formats of those regions, validated by libphonenumber;
    read only around digits (WindowedPhoneRecognizer)."""
    return WindowedPhoneRecognizer(
        supported_language=LANGUAGE, supported_regions=PHONE_REGIONS, name="IntlPhoneRecognizer"
    )


def extra_recognizers() -> list[EntityRecognizer]:
    """A fresh instance of every recognizer of this module, for `RecognizerRegistry.add_recognizer`."""
    return [
        CnMobileRecognizer(),
        CnIdCardRecognizer(),
        BankCardRecognizer(),
        ApiKeyRecognizer(),
        intl_phone_recognizer(),
    ]
