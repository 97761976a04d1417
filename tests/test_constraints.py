"""The answer grammars (kernels/constraints.pyx) against plain-Python statements of the same rules."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_seqgpt.kernels.constraints import (SPAN_SPLITTERS, ClassificationGrammar, ExtractionGrammar, TokenBytes,
                                              advance, allowed, best_allowed)
from spacy_seqgpt.prompts import EXTRACT, format_answer, parse_answer

ALPHABET = "ab ,，.\tNone北京é👍\u3000\u2028"


def reference_extraction(answer, text, labels):
    """Lines ``label: value`` in label order; each value ``None`` or spans joined by ", ", each
    span a substring of ``text`` without splitters and without spaces at either end (the last
    of several may be empty: "a, " ends a line as well)."""
    lines = answer.split("\n")
    if len(lines) != len(labels):
        return False
    for line, label in zip(lines, labels):
        if not line.startswith(label + ": "):
            return False
        value = line[len(label) + 2:]
        if value == "None":
            continue
        spans = value.split(", ")
        if len(spans) > 1 and spans[-1] == "":
            spans.pop()
        for span in spans:
            if (not span or span[0].isspace() or span[-1].isspace() or span not in text
                    or any(char in SPAN_SPLITTERS for char in span)):
                return False
    return True


def reference_classification(answer, labels, exclusive):
    if answer == "":
        return not exclusive
    chosen = answer.split("，")
    if exclusive and len(chosen) != 1:
        return False
    return all(label in labels for label in chosen) and len(set(chosen)) == len(chosen)


labels_strategy = st.lists(st.text("abNo ", min_size=1, max_size=4).map(str.strip).filter(bool),
                           min_size=1, max_size=3, unique=True)


@st.composite
def extraction_cases(draw):
    text = draw(st.text(ALPHABET, max_size=20))
    labels = draw(labels_strategy)
    values = []
    for _ in labels:
        spans = []
        for _ in range(draw(st.integers(0, 2))):
            if text and draw(st.booleans()):
                start = draw(st.integers(0, len(text) - 1))
                spans.append(text[start:draw(st.integers(start, len(text)))])
            else:
                spans.append(draw(st.text(ALPHABET, max_size=4)))
        values.append(", ".join(spans) if spans else "None")
    lines = [f"{label}: {value}" for label, value in zip(labels, values)]
    if draw(st.booleans()):  # a malformed variant: lines dropped, swapped or extended
        lines = draw(st.permutations(lines))[: draw(st.integers(0, len(lines) + 1))]
    return text, labels, "\n".join(lines)


@settings(max_examples=400, deadline=None)
@given(extraction_cases())
def test_extraction_grammar_accepts_exactly_the_valid_answers(case):
    text, labels, answer = case
    assert ExtractionGrammar(text, labels).accepts(answer) == reference_extraction(answer, text, labels)


@settings(max_examples=200, deadline=None)
@given(st.text(ALPHABET, min_size=1, max_size=30), labels_strategy, st.data())
def test_every_span_the_grammar_accepts_parses_back_and_occurs_in_the_text(text, labels, data):
    spans = {}
    for label in labels:
        start = data.draw(st.integers(0, len(text) - 1))
        span = text[start:data.draw(st.integers(start, len(text)))]
        spans[label] = [span] if span else []
    answer = format_answer(EXTRACT, spans, labels)
    if ExtractionGrammar(text, labels).accepts(answer):
        for label, found in parse_answer(EXTRACT, answer, labels).items():
            assert found == spans[label] and all(span in text for span in found)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text("ab，＂ｘ", min_size=1, max_size=3).filter(lambda s: "，" not in s), min_size=1, max_size=4,
                unique=True), st.booleans(), st.data())
def test_classification_grammar_accepts_exactly_the_valid_answers(labels, exclusive, data):
    pool = labels + ["zz", ""]
    chosen = data.draw(st.lists(st.sampled_from(pool), max_size=3))
    answer = "，".join(chosen)
    assert ClassificationGrammar(labels, exclusive).accepts(answer) == reference_classification(answer, labels, exclusive)


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
