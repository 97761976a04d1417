"""IOB2 tags: spans <-> tags, repair, and Viterbi decoding against brute force."""
import itertools

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_seqgpt.text.iob import (allowed_starts, allowed_transitions, decode, gold_tag_indices, iob_tags,
                              spans_from_tags, tags_from_spans, viterbi)

LABELS = ["PER", "LOC"]
TAGS = iob_tags(LABELS)


def is_valid(tags):
    return all(not tag.startswith("I-") or (i > 0 and tags[i - 1][2:] == tag[2:] and tags[i - 1] != "O")
               for i, tag in enumerate(tags))


@st.composite
def spans_strategy(draw):
    n = draw(st.integers(0, 12))
    cuts = sorted(draw(st.sets(st.integers(0, n), max_size=8)))
    spans = [(a, b, draw(st.sampled_from(LABELS))) for a, b in zip(cuts[::2], cuts[1::2]) if a < b]
    return n, spans


def test_tag_set():
    assert TAGS == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@given(spans_strategy())
def test_spans_round_trip_through_tags(case):
    n, spans = case
    tags = tags_from_spans(n, spans)
    assert is_valid(tags)
    assert spans_from_tags(tags) == sorted(spans)


def test_overlapping_or_bad_spans_are_refused():
    with pytest.raises(ValueError, match="overlaps"):
        tags_from_spans(5, [(0, 2, "PER"), (1, 3, "LOC")])
    with pytest.raises(ValueError, match="outside"):
        tags_from_spans(2, [(1, 3, "PER")])
    with pytest.raises(ValueError, match="not an IOB2 tag"):
        spans_from_tags(["O", "X-PER"])


def test_invalid_sequences_are_repaired():
    assert spans_from_tags(["O", "I-PER", "I-PER", "O"]) == [(1, 3, "PER")]
    assert spans_from_tags(["B-PER", "I-LOC", "I-LOC"]) == [(0, 1, "PER"), (1, 3, "LOC")]
    assert spans_from_tags(["I-LOC"]) == [(0, 1, "LOC")]


def brute_force(log_probs):
    n = log_probs.shape[0]
    return max(sum(log_probs[i, t] for i, t in enumerate(path))
               for path in itertools.product(range(len(TAGS)), repeat=n) if is_valid([TAGS[i] for i in path]))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_viterbi_finds_the_best_valid_sequence(n, seed):
    probs = numpy.random.default_rng(seed).dirichlet(numpy.ones(len(TAGS)) * 0.3, size=n)
    log_probs = numpy.log(probs)
    path = viterbi(log_probs, TAGS)
    assert is_valid([TAGS[i] for i in path])
    assert log_probs[numpy.arange(n), path].sum() == pytest.approx(brute_force(log_probs))


@settings(max_examples=40, deadline=None)
@given(spans_strategy(), st.integers(0, 2**32 - 1))
def test_viterbi_keeps_a_valid_argmax(case, seed):
    n, spans = case
    gold = [TAGS.index(tag) for tag in tags_from_spans(n, spans)]
    noise = numpy.random.default_rng(seed).random((n, len(TAGS))) * 0.5
    probs = noise
    probs[numpy.arange(n), gold] += 1.0  # the argmax is the (valid) gold sequence
    probs /= probs.sum(1, keepdims=True)
    assert viterbi(numpy.log(probs), TAGS).tolist() == gold
    found = decode(probs, TAGS)
    assert [(s, e, label) for s, e, label, _ in found] == sorted(spans)
    assert all(0.0 <= confidence <= 1.0 for *_, confidence in found)


def test_decode_repairs_an_invalid_argmax_and_scores_spans():
    # argmax says O I-PER I-PER: the best valid sequence starts the entity with B-PER.
    probs = numpy.array([[0.9, 0.02, 0.04, 0.02, 0.02],
                         [0.1, 0.35, 0.45, 0.05, 0.05],
                         [0.1, 0.05, 0.8, 0.03, 0.02]])
    (start, end, label, confidence), = decode(probs, TAGS)
    assert (start, end, label) == (1, 3, "PER")
    assert confidence == pytest.approx(numpy.sqrt(0.35 * 0.8))


def test_transition_rules():
    allowed = allowed_transitions(TAGS)
    assert allowed[TAGS.index("B-PER"), TAGS.index("I-PER")]
    assert not allowed[TAGS.index("O"), TAGS.index("I-PER")]
    assert not allowed[TAGS.index("B-LOC"), TAGS.index("I-PER")]
    assert allowed_starts(TAGS).tolist() == [True, True, False, True, False]


def test_unknown_gold_label_is_named():
    index = {tag: i for i, tag in enumerate(TAGS)}
    assert gold_tag_indices(["O", None, "B-LOC"], index, component="tagger") == [0, -1, 3]
    with pytest.raises(ValueError, match="'ORG'.*not one of the component's labels"):
        gold_tag_indices(["B-ORG"], index, component="tagger")
