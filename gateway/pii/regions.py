"""Where in a text a name could be: the sentences the named-entity recogniser has to read. spaCy's recogniser
costs about 15 ms per kilobyte on a server core, most of the PII analyzer's time, and ordinary English has
capital letters in every sentence; but a capital that starts a sentence on a function word ("The", "We",
"Please", "This") does not start a name. So only sentences with another kind of capital go to it.

    name_regions(text, function_words) -> [(start, end), ...]   adjacent candidate sentences merged

A sentence is a candidate when it has a word starting with a capital letter that is not (a) its first word,
when that word is a function word (spaCy's English stop words), nor (b) the pronoun "I"; or when it has a
letter beyond ASCII (another script, an accented name). What is given up, knowingly: a name that is itself a
function word, opening a sentence that has no other capital ("Will called."; spaCy's list has "will" and
"may"). Sentences end at ".", "!", "?" and line breaks; an abbreviation ("Dr. Smith") only makes the next
word the first of a sentence, which keeps it a candidate unless it is a function word.
"""

import re
from collections.abc import Collection

_SENTENCE = re.compile(r"[^.!?\n]+[.!?\n]*|[.!?\n]+")
_WORD = re.compile(r"[^\W\d_]+")  # a run of letters
_BEYOND_ASCII = re.compile(r"[^\W\d_\x00-\x7f]")  # a letter that is not ASCII


def name_regions(text: str, function_words: Collection[str]) -> list[tuple[int, int]]:
    regions: list[tuple[int, int]] = []
    for sentence in _SENTENCE.finditer(text):
        if not _candidate(sentence.group(), function_words):
            continue
        start, end = sentence.span()
        if regions and regions[-1][1] == start:
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
    return regions


def _candidate(sentence: str, function_words: Collection[str]) -> bool:
    if not sentence.isascii() and _BEYOND_ASCII.search(sentence):
        return True
    first = True
    for match in _WORD.finditer(sentence):
        word = match.group()
        if word[0].isupper() and word != "I" and not (first and word.lower() in function_words):
            return True
        first = False
    return False
