"""Windows of long documents."""
import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_seqgpt.text.windows import window_ranges

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
