"""What phrase search compares: which characters form words, and how a phrase is normalized.

One definition shared by the compiled aligner and its Python reference, so the two can only
differ in how they search, never in what counts as a match.
"""
import unicodedata
from functools import lru_cache

# Scripts written without spaces between words: a phrase may start or end mid-"word" there.
UNSPACED_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "HALFWIDTH KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR",
                    "TIBETAN")


@lru_cache(maxsize=1 << 16)
def is_word_char(char: str) -> bool:
    """Letters, digits, ``_`` and combining marks (a mark continues the letter before it)."""
    return char.isalnum() or char == "_" or unicodedata.category(char).startswith("M")


@lru_cache(maxsize=1 << 16)
def is_unspaced_char(char: str) -> bool:
    return unicodedata.name(char, "").startswith(UNSPACED_SCRIPTS)


def splits_word(before: str, after: str) -> bool:
    """True when a cut between these two adjacent characters falls inside a word."""
    return (is_word_char(before) and is_word_char(after)
            and not is_unspaced_char(before) and not is_unspaced_char(after))


def normalize_phrase(phrase: str, case_sensitive: bool, collapse_whitespace: bool) -> str:
    """The form a phrase is searched in: full case folding, then whitespace runs as one space."""
    if not case_sensitive:
        phrase = phrase.casefold()
    return " ".join(phrase.split()) if collapse_whitespace else phrase
