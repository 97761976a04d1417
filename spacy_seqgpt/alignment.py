"""Finding generated phrases in the text they were extracted from.

SeqGPT answers with phrases, not offsets, so every phrase is searched in the input text:
all its occurrences, with any run of whitespace in the phrase matching any run in the text
("New York" finds "New\\nYork"), optionally ignoring case (offsets stay those of the
original text), and only at word boundaries (a phrase inside a longer word is no match),
except in scripts written without spaces, such as Chinese, Japanese and Thai.
"""
import re
import unicodedata
from functools import lru_cache
from typing import List, Sequence, Tuple

Match = Tuple[int, int, int]  # (phrase index, start char, end char)

# Scripts written without spaces between words: a phrase may start or end mid-"word" there.
_UNSPACED_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "HALFWIDTH KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")


@lru_cache(maxsize=4096)
def _is_unspaced(char: str) -> bool:
    return unicodedata.name(char, "").startswith(_UNSPACED_SCRIPTS)


def _needs_boundary(char: str) -> bool:
    return (char.isalnum() or char == "_") and not _is_unspaced(char)


@lru_cache(maxsize=4096)
def _phrase_pattern(phrase: str, case_sensitive: bool):
    words = phrase.split()
    if not words:
        return None
    pattern = r"\s+".join(re.escape(word) for word in words)
    if _needs_boundary(words[0][0]):
        pattern = r"(?<!\w)" + pattern
    if _needs_boundary(words[-1][-1]):
        pattern += r"(?!\w)"
    return re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)


def find_phrases(text: str, phrases: Sequence[str], *, case_sensitive: bool = True) -> List[Match]:
    """All occurrences of each phrase in ``text``, as ``(phrase index, start, end)`` sorted by position."""
    matches: List[Match] = []
    for index, phrase in enumerate(phrases):
        pattern = _phrase_pattern(phrase, case_sensitive)
        if pattern is not None:
            matches.extend((index, m.start(), m.end()) for m in pattern.finditer(text))
    matches.sort(key=lambda match: (match[1], match[2], match[0]))
    return matches
