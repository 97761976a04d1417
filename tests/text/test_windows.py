"""Windows of long documents."""
import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_seqgpt.text.windows import SubwordCounter, centred_window, window_ranges

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


@settings(deadline=None, max_examples=150)
@given(sents=st.lists(sentences, min_size=1, max_size=8), max_tokens=st.integers(1, 60), data=st.data())
def test_a_centred_window_holds_the_spans_within_budget_and_cannot_grow(sents, max_tokens, data):
    text = " ".join(sents)
    doc = NLP.make_doc(text)
    count = SubwordCounter(subwords_per_char(text))
    start = data.draw(st.integers(0, len(doc) - 1))
    end = data.draw(st.integers(start + 1, min(len(doc), start + 3)))
    lo = data.draw(st.integers(0, start))
    hi = data.draw(st.integers(end, len(doc)))
    window = centred_window(doc, count, start, end, (lo, hi), max_tokens)
    if subwords(text, doc[start].idx, doc[end - 1].idx + len(doc[end - 1])) > max_tokens:
        assert window is None
        return
    first, last = window
    assert first <= doc[start].idx and doc[end - 1].idx + len(doc[end - 1]) <= last  # the spans, whole
    assert doc[lo].idx <= first and last <= doc[hi - 1].idx + len(doc[hi - 1])  # inside the region
    assert subwords(text, first, last) <= max_tokens
    span = doc.char_span(first, last)
    assert span is not None  # cut between tokens
    # as wide as the budget allows: one more token on either side would be over it, or outside the region
    if span.start > lo:
        assert subwords(text, doc[span.start - 1].idx, last) > max_tokens
    if span.end < hi:
        assert subwords(text, first, doc[span.end].idx + len(doc[span.end])) > max_tokens


def test_a_centred_window_takes_as_much_on_each_side():
    text = "a b c d e f g h i j k l m"
    doc = NLP.make_doc(text)
    window = centred_window(doc, SubwordCounter(subwords_per_char(text)), 6, 7, (0, len(doc)), 5)
    assert text[window[0]:window[1]] == "e f g h i"
