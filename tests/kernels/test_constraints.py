"""The answer grammars (kernels/constraints.pyx) against plain-Python statements of the same rules."""
import re

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import readable
from spacy_seqgpt.kernels.constraints import (SPAN_SPLITTERS, ClassificationGrammar, ExtractionGrammar,
                                              TokenBytes, advance, allowed, best_allowed)
from spacy_seqgpt.prompts import CLASSIFY, EXTRACT, NONE_ANSWERS, parse_answer

ALPHABET = "ab ,，.\tNone北京é👍\u3000\u2028\x1c\x1f'「」:nul/"
NONE_SPELLINGS = sorted(NONE_ANSWERS) + ["None", "NULL", "Nil", "N/A"]


def reference_extraction(answer, text, labels):
    """What the grammar means by ``answer`` (``{label: [span, ...]}``, as ``parse_answer`` gives
    it), or None when the grammar refuses it. Lines ``label: value`` in label order; each value
    ``None`` or spans joined by ", " (a trailing ", " ends a line as well); each span a piece of
    ``text`` that neither begins nor ends with whitespace, holds no splitter and no run of
    whitespace, and is not a word that reads as "no span"."""
    lines = answer.split("\n")
    if len(lines) != len(labels):
        return None
    meaning = {}
    for line, label in zip(lines, labels):
        if not line.startswith(label + ": "):
            return None
        value = line[len(label) + 2:]
        spans = [] if value == "None" else value.split(", ")
        if len(spans) > 1 and spans[-1] == "":
            spans.pop()
        for span in spans:
            if (not span or span[0].isspace() or span[-1].isspace() or span not in text
                    or any(char in SPAN_SPLITTERS for char in span) or re.search(r"\s\s", span)
                    or span.casefold() in NONE_ANSWERS):
                return None
        meaning[label] = list(dict.fromkeys(spans))
    return meaning


def reference_classification(answer, labels, exclusive):
    """The labels ``answer`` chooses, or None when the grammar refuses it."""
    if answer == "":
        return None if exclusive else []
    chosen = answer.split("，")
    if exclusive and len(chosen) != 1:
        return None
    return chosen if all(label in labels for label in chosen) and len(set(chosen)) == len(chosen) else None


labels_strategy = st.lists(st.text("abNo \t'「:", min_size=1, max_size=4).map(str.strip).filter(bool),
                           min_size=1, max_size=3, unique=True)


@st.composite
def extraction_cases(draw):
    text = draw(st.text(ALPHABET, max_size=20) | st.lists(st.sampled_from(NONE_SPELLINGS + ["a", " ", "  "]))
                .map("".join))
    labels = draw(labels_strategy)
    values = []
    for _ in labels:
        spans = []
        for _ in range(draw(st.integers(0, 2))):
            choice = draw(st.integers(0, 2))
            if text and choice == 0:
                start = draw(st.integers(0, len(text) - 1))
                spans.append(text[start:draw(st.integers(start, len(text)))])
            elif choice == 1:
                spans.append(draw(st.sampled_from(NONE_SPELLINGS)))
            else:
                spans.append(draw(st.text(ALPHABET, max_size=4)))
        values.append(draw(st.sampled_from([", ", ",", "，", "\t", "  "])).join(spans) if spans else "None")
    lines = [f"{label}: {value}" for label, value in zip(labels, values)]
    if draw(st.booleans()):  # a malformed variant: lines dropped, swapped or extended
        lines = draw(st.permutations(lines))[: draw(st.integers(0, len(lines) + 1))]
    return text, labels, "\n".join(lines)


# Found by this test's first version: a piece of text ending in ", " was written as its own span.
@example(("NNNNNNNNNNNNNN, ", ["N"], "N: NNNNNNNNNNNNNN, "))
@example(("I love New  York.", ["city"], "city: New  York"))  # a run of spaces splits the span when read
@example(("set it to null", ["value"], "value: null"))  # a span that reads as "no span"
@settings(max_examples=1500, deadline=None)
@given(extraction_cases())
def test_the_extraction_grammar_accepts_what_it_means_and_the_parser_reads_that_back(case):
    text, labels, answer = case
    meaning = reference_extraction(answer, text, labels)
    assert ExtractionGrammar(text, labels).accepts(answer) == (meaning is not None)
    if meaning is not None and all(readable(label) for label in labels):
        assert parse_answer(EXTRACT, answer, labels) == meaning


classification_labels = st.lists(
    st.text("ab，＂ｘ\t '「」\x1d", min_size=1, max_size=3).filter(lambda s: "，" not in s),
    min_size=1,
    max_size=4,
    unique=True,
)


@settings(max_examples=1000, deadline=None)
@given(classification_labels, st.booleans(), st.data())
def test_the_classification_grammar_accepts_what_it_means_and_the_parser_reads_that_back(labels, exclusive, data):
    pool = labels + ["zz", ""]
    answer = "，".join(data.draw(st.lists(st.sampled_from(pool), max_size=3)))
    meaning = reference_classification(answer, labels, exclusive)
    assert ClassificationGrammar(labels, exclusive).accepts(answer) == (meaning is not None)
    if meaning is not None and all(readable(label) for label in labels):
        assert parse_answer(CLASSIFY, answer, labels) == meaning


def test_token_boundaries_limit_where_spans_start_and_end():
    text = "The U.S. firm"
    strict = ExtractionGrammar(text, ["location"], ([0, 4, 9], [3, 8, 13]))
    assert strict.accepts("location: U.S.") and strict.accepts("location: The U.S. firm")
    assert not strict.accepts("location: U.S") and not strict.accepts("location: .S. fi")
    assert ExtractionGrammar(text, ["location"]).accepts("location: U.S")


def test_states_move_token_by_token_and_the_vocabulary_fallback_finds_an_allowed_token():
    pieces = [None, b"person", b":", b" Tim", b" Cook", b",", b" None", b"Tim", b"xyz", b" Mars"]
    vocab = TokenBytes(pieces, eos_id=0)
    grammar = ExtractionGrammar("Tim Cook met Olaf", ["person"])
    ints, bits = (np.stack([part]) for part in grammar.initial_state())
    for token in (1, 2, 3, 4):  # "person: Tim Cook"
        ok = allowed([grammar], ints, bits, np.array([[token, 8, 9]], dtype=np.int64), vocab)
        assert ok.tolist() == [[True, False, False]]
        ints, bits = advance([grammar], ints, bits, np.array([0]), np.array([token]), vocab)
    assert allowed([grammar], ints, bits, np.array([[0, 5, 6, 9]]), vocab).tolist() == [[True, True, False, False]]
    scores = np.full(len(pieces), -5.0, dtype=np.float32)
    scores[[8, 9]] = 0.0  # the best tokens are not allowed; the end is the best that is
    assert best_allowed(grammar, ints[0], bits[0], scores, vocab) == 0
    scores[5] = -1.0  # "," is better still: another span may follow
    assert best_allowed(grammar, ints[0], bits[0], scores, vocab) == 5
    ints, bits = advance([grammar], ints, bits, np.array([0]), np.array([0]), vocab)
    assert not allowed([grammar], ints, bits, np.arange(len(pieces))[None], vocab).any()  # nothing after the end
    with pytest.raises(ValueError, match="not allowed"):
        advance([grammar], ints, bits, np.array([0]), np.array([3]), vocab)


def test_the_fallback_prefers_none_to_a_scrap_of_text_the_model_did_not_want():
    pieces = [None, b"person", b":", b" Mars", b" None", b" met", b",", b" ", b"Olaf"]
    vocab = TokenBytes(pieces, eos_id=0)
    grammar = ExtractionGrammar("Tim Cook met Olaf", ["person"])
    ints, bits = (np.stack([part]) for part in grammar.initial_state())

    def write(token):
        return advance([grammar], ints, bits, np.array([0]), np.array([token]), vocab)

    ints, bits = write(1)
    ints, bits = write(2)
    scores = np.array([-9, -9, -9, 0.0, -8, -3, -9, -9, -2], dtype=np.float32)  # wants " Mars"
    assert best_allowed(grammar, ints[0], bits[0], scores, vocab) == 4  # " None", though " met" scores higher
    ints, bits = write(5)
    ints, bits = write(6)  # "person: met," and the model wants " Mars" again
    assert best_allowed(grammar, ints[0], bits[0], scores, vocab) == 7  # " " rather than " met"
    ints, bits = write(7)
    assert best_allowed(grammar, ints[0], bits[0], scores, vocab) == 0  # then the end, not "Olaf"
    assert grammar.accepts("person: met, ") and not grammar.accepts("person: , met")


def test_bad_grammar_inputs_are_named():
    with pytest.raises(ValueError, match="at least one label"):
        ExtractionGrammar("text", [])
    with pytest.raises(ValueError, match="separator"):
        ClassificationGrammar(["a，b"], exclusive=True)
    with pytest.raises(ValueError, match="end-of-sequence"):
        TokenBytes([b"a"], eos_id=3)


def state_after(grammar, data):
    """The state of a row that has written ``data`` (bytes the grammar allows)."""
    from spacy_seqgpt.kernels.constraints import TokenBytes, advance

    ints, bits = grammar.initial_state()
    ints, bits = ints[None].copy(), bits[None].copy()
    vocab = TokenBytes([bytes([b]) for b in range(256)] + [None], 256)  # one token per byte, then the end
    for byte in data:
        ints, bits = advance([grammar], ints, bits, np.zeros(1, dtype=np.int64), np.array([byte]), vocab)
    return ints[0], bits[0]


def answer_point(case, data):
    """(grammar, the answer's bytes, a point in them) of a case whose answer the reference
    grammar accepts; None otherwise."""
    text, labels, answer = case
    if reference_extraction(answer, text, labels) is None:
        return None
    encoded = answer.encode("utf8")
    return ExtractionGrammar(text, labels), encoded, data.draw(st.integers(0, len(encoded)))


@settings(max_examples=500, deadline=None)
@given(extraction_cases(), st.data())
def test_forced_text_is_what_every_valid_answer_writes_next(case, data):
    """Jump-forward's query: at any point of an answer the reference grammar accepts, the forced
    bytes are the answer's next bytes (and it ends when forced to); inside a line's
    "label: " or after a line break, they reach at least the end of "label: "."""
    point = answer_point(case, data)
    if point is None:
        return
    grammar, encoded, k = point
    labels = case[1]
    forced, ends = grammar.forced(*state_after(grammar, encoded[:k]))
    assert encoded[k:].startswith(forced)
    assert not ends or k + len(forced) == len(encoded)
    line_starts = [0] + [m.end() for m in re.finditer(b"\n", encoded)]
    for start, label in zip(line_starts, labels):
        prefix_end = start + len((label + ": ").encode("utf8"))
        if start <= k < prefix_end:
            assert k + len(forced) >= prefix_end


@settings(max_examples=300, deadline=None)
@given(classification_labels, st.data())
def test_an_exclusive_label_once_chosen_forces_the_end(labels, data):
    grammar = ClassificationGrammar(labels, exclusive=True)
    label = data.draw(st.sampled_from(labels))
    forced, ends = grammar.forced(*state_after(grammar, label.encode("utf8")))
    longer = [other for other in labels if other != label and other.startswith(label)]
    assert (forced, ends) == ((b"", True) if not longer else (forced, False))


def test_forced_text_after_none_and_at_the_start():
    grammar = ExtractionGrammar("Anna met Ben.", ["person", "city"])
    assert grammar.forced(*grammar.initial_state()) == (b"person: ", False)
    assert grammar.forced(*state_after(grammar, b"person: None")) == (b"\ncity: ", False)
    assert grammar.forced(*state_after(grammar, b"person: None\ncity: None")) == (b"", True)
    assert grammar.forced(*state_after(grammar, b"person: Ann")) == (b"", False)  # "Ann" may end here
    from spacy_seqgpt.decoding.requests import extraction_grammar

    words = extraction_grammar("Anna met Ben.", ["person", "city"])  # spans end on word edges, as seqgpt_ner's do
    # a span's bytes are never forced (only "a" can follow here); speculation drafts them instead
    assert words.forced(*state_after(words, b"person: Ann")) == (b"", False)
    assert words.draft(*state_after(words, b"person: Ann")) == b"a met Ben."
    assert grammar.forced(*state_after(grammar, b"person: N")) == (b"one\ncity: ", False)  # no span starts "N"
    assert grammar.draft(*state_after(grammar, b"person:")) == b" None"  # a value's likeliest start
    assert grammar.draft(*state_after(grammar, b"person: Ann, ")) == b""  # after ", " no "None"


@settings(max_examples=500, deadline=None)
@given(extraction_cases(), st.data())
def test_spans_are_never_forced_and_their_draft_is_the_text_that_follows(case, data):
    """Jump-forward writes structure only: strictly inside a value other than "None", nothing
    is forced. There speculation's draft is the rest of "None" while the value may still be
    "None", else input text that continues the span written so far."""
    point = answer_point(case, data)
    if point is None:
        return
    grammar, encoded, k = point
    labels = case[1]
    line_start = encoded.rfind(b"\n", 0, k) + 1
    line_end = encoded.find(b"\n", line_start) % (len(encoded) + 1)
    label = labels[encoded[:line_start].count(b"\n")]
    value_start = line_start + len((label + ": ").encode("utf8"))
    if not value_start < k <= line_end or encoded[value_start:line_end] == b"None":
        return
    state = state_after(grammar, encoded[:k])
    assert grammar.forced(*state)[0] == b""
    pieces = encoded[value_start:k].split(b", ")
    draft = grammar.draft(*state)
    if len(pieces) == 1 and b"None".startswith(pieces[0]):
        assert draft == b"None"[len(pieces[0]):]
    elif pieces[-1]:  # the text after the span's first occurrence; none if that ends the text
        text = case[0].encode("utf8")
        at = text.find(pieces[-1])
        # not in the text: the point is after the "," of a separator (", "), where no span goes on
        assert draft == (text[at + len(pieces[-1]):][:64] if at >= 0 else b"")
