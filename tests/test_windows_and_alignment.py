"""Windows of long documents, and finding answer phrases in the text."""
import re

import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_seqgpt.alignment import find_phrases
from spacy_seqgpt.windows import window_ranges

NLP = spacy.blank("en")
NLP.add_pipe("sentencizer")


def subwords_per_char(text):
    """A stand-in tokenizer: every non-space character is one subword."""
    return [i for i, char in enumerate(text) if not char.isspace()]


def subwords(text, start, end):
    return sum(1 for i in subwords_per_char(text) if start <= i < end)


words = st.text(alphabet="abcdefghij", min_size=1, max_size=9)
sentences = st.lists(words, min_size=1, max_size=12).map(lambda ws: " ".join(ws) + ".")


@settings(deadline=None, max_examples=150)
@given(sents=st.lists(sentences, min_size=1, max_size=12), max_tokens=st.integers(1, 60),
       use_sentences=st.booleans())
def test_windows_cover_every_token_once_within_budget(sents, max_tokens, use_sentences):
    text = " ".join(sents)
    doc = NLP(text) if use_sentences else NLP.make_doc(text)
    windows = window_ranges(doc, subwords_per_char(text), max_tokens)
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:]))  # ordered, disjoint
    assert all(subwords(text, start, end) <= max_tokens for start, end in windows)
    covered = [i for start, end in windows for i in range(start, end) if not text[i].isspace()]
    assert covered == subwords_per_char(text)  # every character of every token, once


def test_windows_end_on_sentence_boundaries_when_sentences_fit():
    text = "Tim Cook met Olaf Scholz. Apple opened an office. The bank raised rates again."
    doc = NLP(text)
    sentence_ends = {sent.end_char for sent in doc.sents}
    windows = window_ranges(doc, subwords_per_char(text), 41)  # the first two hold 41
    assert len(windows) == 2
    assert all(end in sentence_ends for _, end in windows)
    assert [text[s:e] for s, e in windows] == ["Tim Cook met Olaf Scholz. Apple opened an office.",
                                             "The bank raised rates again."]


def test_a_whole_short_doc_is_one_window_and_blank_docs_have_none():
    assert window_ranges(NLP("  Hello world.  "), subwords_per_char("  Hello world.  "), 512) == [(2, 14)]
    assert window_ranges(NLP(""), [], 512) == []
    assert window_ranges(NLP(" \n\t "), [], 512) == []
    with pytest.raises(ValueError, match="max_input_tokens"):
        window_ranges(NLP("x"), [0], 0)


@pytest.mark.parametrize(
    "text,phrase,case_sensitive,expected",
    [
        ("Tim Cook met Tim Cook.", "Tim Cook", True, [(0, 8), (13, 21)]),
        ("He visited New\nYork and New  York.", "New York", True, [(11, 19), (24, 33)]),
        ("the BEATLES and The Beatles", "The Beatles", False, [(0, 11), (16, 27)]),
        ("the BEATLES", "The Beatles", True, []),
        ("Parisian cafes in Paris", "Paris", True, [(18, 23)]),  # not inside a longer word
        ("US and USA", "US", True, [(0, 2)]),
        ("Ça va, ÇA VA", "ça va", False, [(0, 5), (7, 12)]),  # offsets stay those of the original
        ("张三在北京工作", "北京", True, [(3, 5)]),  # Chinese: no word boundaries
        ("東京都に住む", "東京", True, [(0, 2)]),
        ("I ❤️ Berlin 🎉!", "Berlin", True, [(5, 11)]),
        ("e-mail me", "mail", True, [(2, 6)]),  # punctuation is a boundary
        ("C++ and C#", "C++", True, [(0, 3)]),
        ("   ", " ", True, []),
    ],
)
def test_find_phrases(text, phrase, case_sensitive, expected):
    found = find_phrases(text, [phrase], case_sensitive=case_sensitive)
    assert [(start, end) for _, start, end in found] == expected


def test_find_phrases_reports_which_phrase_matched_in_text_order():
    text = "Apple and Google met in Paris."
    found = find_phrases(text, ["Paris", "Apple", "Berlin", "Google"])
    assert found == [(1, 0, 5), (3, 10, 16), (0, 24, 29)]


@settings(deadline=None, max_examples=200)
@given(text=st.text(max_size=80), data=st.data())
def test_every_found_match_is_the_phrase_modulo_case_and_whitespace(text, data):
    phrase = data.draw(st.text(max_size=10)) if not text else text[data.draw(st.integers(0, len(text) - 1)):][:10]
    for _, start, end in find_phrases(text, [phrase], case_sensitive=False):
        normalise = lambda s: re.sub(r"\s+", " ", s.strip()).casefold()  # noqa: E731
        assert normalise(text[start:end]) == normalise(phrase)
