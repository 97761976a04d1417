"""IOB2 tags for a token tagger: the tag set of some labels, gold tags from spans, and the best
valid tag sequence from per-token probabilities (Viterbi under IOB2's transition rules).

A tagger that picks each token's most probable tag on its own can write ``I-X`` after ``O``
or after ``B-Y``; decoding under the rules instead repairs such sequences to the most
probable *valid* one, and each span's confidence comes from the probabilities of its tags.
"""
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy

OUTSIDE = "O"
LabeledSpan = Tuple[int, int, str]  # (start token, end token, label)


def iob_tags(labels: Iterable[str]) -> List[str]:
    """``["O", "B-A", "I-A", "B-B", ...]`` for the labels, in the order given."""
    tags = [OUTSIDE]
    for label in labels:
        tags.extend((f"B-{label}", f"I-{label}"))
    return tags


def tags_from_spans(n_tokens: int, spans: Iterable[LabeledSpan]) -> List[str]:
    """IOB2 tags of ``n_tokens`` tokens holding ``spans``, which must not overlap."""
    tags = [OUTSIDE] * n_tokens
    for start, end, label in sorted(spans):
        if not 0 <= start < end <= n_tokens:
            raise ValueError(f"span ({start}, {end}) is empty or outside a sequence of {n_tokens} tokens")
        if any(tag != OUTSIDE for tag in tags[start:end]):
            raise ValueError(f"span ({start}, {end}, {label!r}) overlaps another span: IOB tags cannot hold both")
        tags[start:end] = [f"B-{label}"] + [f"I-{label}"] * (end - start - 1)
    return tags


def spans_from_tags(tags: Sequence[str]) -> List[LabeledSpan]:
    """The spans of an IOB2 sequence; an ``I-X`` that does not continue an ``X`` starts a new span
    (the usual repair of hand-written or argmax tags)."""
    spans: List[LabeledSpan] = []
    start, label = None, None
    for i, tag in enumerate(list(tags) + [OUTSIDE]):
        prefix, _, name = tag.partition("-")
        if prefix not in ("B", "I", OUTSIDE) or (prefix != OUTSIDE and not name):
            raise ValueError(f"not an IOB2 tag: {tag!r}")
        continues = prefix == "I" and label == name
        if start is not None and not continues:
            spans.append((start, i, label))
            start, label = None, None
        if prefix in ("B", "I") and not continues:
            start, label = i, name
    return spans


def allowed_transitions(tags: Sequence[str]) -> numpy.ndarray:
    """``allowed[a, b]``: may tag ``b`` follow tag ``a``? (``I-X`` only after ``B-X`` or ``I-X``.)"""
    n = len(tags)
    allowed = numpy.ones((n, n), dtype=bool)
    for b, tag in enumerate(tags):
        if tag.startswith("I-"):
            allowed[:, b] = [prev in (f"B-{tag[2:]}", tag) for prev in tags]
    return allowed


def allowed_starts(tags: Sequence[str]) -> numpy.ndarray:
    return numpy.array([not tag.startswith("I-") for tag in tags])


def viterbi(log_probs: numpy.ndarray, tags: Sequence[str]) -> numpy.ndarray:
    """The valid IOB2 tag sequence with the highest total log-probability: tag indices, (n,)."""
    n_tokens, n_tags = log_probs.shape
    if n_tags != len(tags):
        raise ValueError(f"{n_tags} scores per token for {len(tags)} tags")
    if n_tokens == 0:
        return numpy.zeros(0, dtype=numpy.int64)
    # -inf marks forbidden moves; finite floors keep a row of zero probabilities decodable.
    log_probs = numpy.maximum(log_probs.astype(numpy.float64), -1e9)
    transition = numpy.where(allowed_transitions(tags), 0.0, -numpy.inf)
    score = numpy.where(allowed_starts(tags), log_probs[0], -numpy.inf)
    back = numpy.zeros((n_tokens, n_tags), dtype=numpy.int64)
    for i in range(1, n_tokens):
        candidates = score[:, None] + transition  # (previous tag, tag)
        back[i] = candidates.argmax(0)
        score = candidates.max(0) + log_probs[i]
    path = numpy.zeros(n_tokens, dtype=numpy.int64)
    path[-1] = score.argmax()
    for i in range(n_tokens - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def decode(probs: numpy.ndarray, tags: Sequence[str]) -> List[Tuple[int, int, str, float]]:
    """Spans ``(start, end, label, confidence)`` of the best valid tagging of ``probs`` (n, tags).

    A span's confidence is the geometric mean of the probabilities of its tokens' tags: 1 when
    the tagger is sure of every token, comparable across span lengths.
    """
    with numpy.errstate(divide="ignore"):
        log_probs = numpy.log(probs)
    path = viterbi(log_probs, tags)
    chosen = numpy.log(numpy.maximum(probs[numpy.arange(len(path)), path], 1e-30))
    return [(start, end, label, float(numpy.exp(chosen[start:end].mean())))
            for start, end, label in spans_from_tags([tags[i] for i in path])]


def gold_tag_indices(tags: Sequence[Optional[str]], tag_index: dict, *, component: str) -> List[int]:
    """Tag indices of gold tags, -1 for missing ones (None); unknown labels are an error."""
    indices = []
    for tag in tags:
        if tag is None:
            indices.append(-1)
        elif tag in tag_index:
            indices.append(tag_index[tag])
        else:
            label = tag.partition("-")[2] or tag
            known = sorted({t[2:] for t in tag_index if t != OUTSIDE})
            raise ValueError(f"{component}: the gold data has the label {label!r}, which is not one of the "
                             f"component's labels {known}. Add it to the labels given to initialize "
                             f"([initialize.components.{component}] labels), or let initialize read the "
                             "labels from the training examples.")
    return indices
