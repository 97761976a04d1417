"""The compiled aligner: worked examples, and equality with the Python reference on random input."""
import re

import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc
from spacy.util import filter_spans
from transformers import AutoTokenizer

import alignment_reference
from spacy_seqgpt.text import alignment
from spacy_seqgpt.kernels import alignment as compiled

NLP = spacy.blank("en")

# Characters that stress the aligner: case folds that change length (ß, İ, ﬁ), final sigma,
# combining marks, unspaced scripts, emoji (outside the BMP), every kind of whitespace.
TRICKY = list("abcABC09_-.'") + list(" \t\n\u3000\u00a0") + list("ßẞİıΣσςﬁé") + ["\u0301", "e\u0301"] \
    + list("北京东京語") + ["😀", "🎉", "👍🏽"]
texts = st.lists(st.sampled_from(TRICKY) | st.characters(exclude_categories=("Cs",)), max_size=50).map("".join)


def variant(phrase: str, draw) -> str:
    """The phrase as a model might write it: other case, other whitespace."""
    if draw(st.booleans()):
        phrase = phrase.upper() if draw(st.booleans()) else phrase.casefold()
    return re.sub(r"\s+", draw(st.sampled_from([" ", "  ", "\n", "\t "])), phrase)


@st.composite
def text_and_phrases(draw):
    text = draw(texts)
    phrases = []
    for _ in range(draw(st.integers(0, 6))):
        if text and draw(st.booleans()):
            start = draw(st.integers(0, len(text) - 1))
            phrases.append(variant(text[start:start + draw(st.integers(1, 8))], draw))
        else:
            phrases.append(draw(texts))
    return text, phrases


@settings(deadline=None, max_examples=400)
@given(case=text_and_phrases(), case_sensitive=st.booleans(), collapse=st.booleans(), boundaries=st.booleans())
def test_compiled_phrase_search_equals_the_reference(case, case_sensitive, collapse, boundaries):
    text, phrases = case
    found = compiled.find_phrases(text, phrases, case_sensitive, collapse, boundaries)
    assert found == alignment_reference.find_phrases(text, phrases, case_sensitive, collapse, boundaries)
    for index, start, end in found:  # each match really is its phrase, modulo case and whitespace
        def norm(s):
            return " ".join(s.casefold().split())
        assert norm(text[start:end]) == norm(phrases[index])


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
        ("Große Straße", "GROSSE STRASSE", False, [(0, 12)]),  # full case folding: ß is ss
        ("Maß", "mas", False, []),  # never half of a folded character
        ("ΣΊΣΥΦΟΣ and σίσυφος", "Σίσυφος", False, [(0, 7), (12, 19)]),  # final sigma
        ("café", "cafe", True, []),  # combining accent continues the word
        ("张三在北京工作", "北京", True, [(3, 5)]),  # Chinese: no word boundaries
        ("東京都に住む", "東京", True, [(0, 2)]),
        ("東京Tokyo", "Tokyo", True, [(2, 7)]),
        ("I ❤️ Berlin 🎉!", "Berlin", True, [(5, 11)]),
        ("e-mail me", "mail", True, [(2, 6)]),  # punctuation is a boundary
        ("C++ and C#", "C++", True, [(0, 3)]),
        ("aaaa", "aa", True, []),
        ("a a a", "a a", True, [(0, 3), (2, 5)]),  # overlapping occurrences are all found
        ("   ", " ", True, []),
    ],
)
def test_find_phrases(text, phrase, case_sensitive, expected):
    found = alignment.find_phrases(text, [phrase], case_sensitive=case_sensitive)
    assert [(start, end) for _, start, end in found] == expected
    assert alignment_reference.find_phrases(text, [phrase], case_sensitive) == found


def test_find_phrases_reports_which_phrase_matched_in_text_order():
    text = "Apple and Google met in Paris. Apple!"
    found = alignment.find_phrases(text, ["Paris", "Apple", "Berlin", "Google", "Apple"])
    assert found == [(1, 0, 5), (4, 0, 5), (3, 10, 16), (0, 24, 29), (1, 31, 36), (4, 31, 36)]
    assert alignment.find_phrases("Apple", ["apple"], word_boundaries=False, case_sensitive=True) == []
    assert alignment.find_phrases("pineapple", ["apple"], word_boundaries=False) == [(0, 4, 9)]
    assert alignment.find_phrases("New\nYork", ["New York"], collapse_whitespace=False) == []


def test_bad_phrase_input_is_named():
    with pytest.raises(TypeError, match="every phrase must be a str"):
        alignment.find_phrases("text", ["ok", None])
    with pytest.raises(TypeError, match="text must be a str"):
        alignment.find_phrases(b"text", ["ok"])


@st.composite
def docs_and_ranges(draw):
    words = draw(st.lists(texts.filter(bool), min_size=1, max_size=12))
    spaces = draw(st.lists(st.booleans(), min_size=len(words), max_size=len(words)))
    doc = Doc(NLP.vocab, words=words, spaces=spaces)
    n = len(doc.text)
    ranges = [sorted(draw(st.lists(st.integers(-2, n + 2), min_size=2, max_size=2, unique=True)))
              for _ in range(draw(st.integers(1, 20)))]
    return doc, [start for start, _ in ranges], [end for _, end in ranges]


@settings(deadline=None, max_examples=300)
@given(case=docs_and_ranges(), mode=st.sampled_from(alignment.ALIGNMENT_MODES))
def test_char_spans_equal_doc_char_span_in_every_mode(case, mode):
    doc, starts, ends = case
    token_starts, token_ends = alignment.char_spans_to_tokens(doc, starts, ends, mode)
    for start, end, token_start, token_end in zip(starts, ends, token_starts, token_ends):
        span = doc.char_span(start, end, alignment_mode=mode)
        assert (token_start, token_end) == ((-1, -1) if span is None else (span.start, span.end))


@pytest.mark.parametrize("implementation", [compiled, alignment_reference], ids=["compiled", "reference"])
def test_bad_ranges_and_offsets_are_named(implementation):
    doc = NLP("New York")
    with pytest.raises(ValueError, match="character range 1 is empty or reversed"):
        implementation.char_spans(doc, [0, 4], [3, 4], "strict")
    with pytest.raises(ValueError, match="same length"):
        implementation.char_spans(doc, [0, 1], [3], "strict")
    with pytest.raises(ValueError, match="offsets must be"):
        implementation.align_subwords(doc, [(0, 1, 2)])
    with pytest.raises(ValueError, match="span 0 is empty"):
        implementation.resolve_overlaps([3], [3])
    with pytest.raises(ValueError, match="one value per span"):
        implementation.resolve_overlaps([0, 1], [1, 2], [0.5])
    with pytest.raises(ValueError, match="finite"):
        implementation.resolve_overlaps([0], [1], [float("nan")])
    with pytest.raises(ValueError, match="alignment_mode must be one of"):
        alignment.char_spans_to_tokens(doc, [0], [3], "fuzzy")


@st.composite
def docs_and_offsets(draw):
    doc = draw(docs_and_ranges())[0]
    n = len(doc.text)
    offsets = []
    for _ in range(draw(st.integers(0, 30))):
        if draw(st.integers(0, 4)) == 0:
            offsets.append((0, 0))  # a special token
        else:
            offsets.append(tuple(sorted(draw(st.lists(st.integers(0, n), min_size=2, max_size=2)))))
    return doc, offsets


@settings(deadline=None, max_examples=300)
@given(case=docs_and_offsets())
def test_subword_alignment_equals_the_reference(case):
    doc, offsets = case
    expected = alignment_reference.align_subwords(doc, offsets)
    first_subword, token_of_subword = alignment.align_subwords(doc, offsets)
    assert first_subword.tolist() == expected[0].tolist()
    assert token_of_subword.tolist() == expected[1].tolist()


@pytest.fixture(scope="module", params=["bloom", "llama"])
def byte_level_tokenizer(request, tiny_bloom, tiny_llama):
    return AutoTokenizer.from_pretrained(tiny_bloom if request.param == "bloom" else tiny_llama)


@settings(deadline=None, max_examples=100)
@given(text=texts)
def test_every_word_token_gets_a_subword_of_a_byte_level_bpe(byte_level_tokenizer, text):
    doc = NLP.make_doc(text)
    offsets = byte_level_tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    first_subword, token_of_subword = alignment.align_subwords(doc, offsets)
    for token, subword in zip(doc, first_subword.tolist()):
        if not token.is_space:
            assert subword >= 0, (token.text, offsets)
            begin, end = offsets[subword]
            assert begin < token.idx + len(token) and token.idx < end
            assert token_of_subword[subword] <= token.i


def test_subwords_shared_by_tokens_and_special_tokens():
    doc = Doc(NLP.vocab, words=["New", "York", "-", "based"], spaces=[True, False, False, False])
    # <s>, "New", " York-", "based", </s>: the second subword covers two tokens
    first_subword, token_of_subword = alignment.align_subwords(doc, [(0, 0), (0, 3), (3, 9), (9, 14), (0, 0)])
    assert first_subword.tolist() == [1, 2, 2, 3]
    assert token_of_subword.tolist() == [-1, 0, 1, 3, -1]


spans = st.lists(st.tuples(st.integers(0, 40), st.integers(1, 8)), max_size=40).map(
    lambda pairs: ([start for start, _ in pairs], [start + length for start, length in pairs]))


@settings(deadline=None, max_examples=300)
@given(case=spans, data=st.data())
def test_overlap_resolution_equals_the_reference_and_is_maximal(case, data):
    starts, ends = case
    scores = data.draw(st.none() | st.lists(st.floats(0, 1), min_size=len(starts), max_size=len(starts)))
    kept = alignment.resolve_overlaps(starts, ends, scores).tolist()
    assert kept == alignment_reference.resolve_overlaps(starts, ends, scores).tolist()
    assert all(ends[a] <= starts[b] for a, b in zip(kept, kept[1:]))  # disjoint, in text order
    for i in set(range(len(starts))) - set(kept):  # everything dropped overlaps something kept
        assert any(starts[i] < ends[j] and starts[j] < ends[i] for j in kept)


@settings(deadline=None, max_examples=100)
@given(case=spans)
def test_overlap_resolution_without_scores_is_spacys_filter_spans(case):
    starts, ends = case
    doc = Doc(NLP.vocab, words=["w"] * 48)
    kept = alignment.resolve_overlaps(starts, ends).tolist()
    expected = filter_spans([doc[start:end] for start, end in zip(starts, ends)])
    assert [(starts[i], ends[i]) for i in kept] == [(span.start, span.end) for span in expected]
