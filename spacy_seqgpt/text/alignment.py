"""Alignment between generated phrases, characters, subwords and spaCy tokens.

SeqGPT answers with phrases, not offsets, so each phrase is searched in its input text; the
tagger predicts on subwords, so subwords are mapped to spaCy tokens. The work is done by the
compiled ``spacy_seqgpt.kernels.alignment``; this module checks input and documents the
functions. Bad input gets a ValueError naming the offending item.
"""
from typing import List, Optional, Sequence, Tuple

import numpy
from spacy.tokens import Doc

from ..kernels import alignment as _compiled

ALIGNMENT_MODES = ("strict", "contract", "expand")
Match = Tuple[int, int, int]  # (phrase index, start char, end char)


def find_phrases(text: str, phrases: Sequence[str], *, case_sensitive: bool = True,
                 collapse_whitespace: bool = True, word_boundaries: bool = True) -> List[Match]:
    """All occurrences of each phrase in ``text``: ``(phrase index, start, end)`` sorted by position.

    ``case_sensitive=False`` uses full Unicode case folding ("STRASSE" finds "Straße"; offsets
    are those of ``text``). ``collapse_whitespace``: any whitespace run matches any other
    ("New York" finds "New\\nYork"). ``word_boundaries``: a phrase inside a longer word is no
    match, except in scripts written without spaces (Chinese, Japanese, Thai, ...).
    Overlapping occurrences are all reported.
    """
    if not isinstance(text, str):
        raise TypeError(f"find_phrases: text must be a str, got {type(text).__name__}")
    bad = [phrase for phrase in phrases if not isinstance(phrase, str)]
    if bad:
        raise TypeError(f"find_phrases: every phrase must be a str, got {bad[0]!r}")
    return _compiled.find_phrases(text, phrases, case_sensitive, collapse_whitespace, word_boundaries)


def apart_per_label(starts: Sequence[int], ends: Sequence[int], scores: Sequence[float],
                    labels: Sequence[object]) -> List[int]:
    """Indices of the spans kept when overlapping spans of one label give way to the likeliest
    (``resolve_overlaps`` within each label), in input order."""
    kept: List[int] = []
    for label in dict.fromkeys(labels):
        own = [i for i, other in enumerate(labels) if other == label]
        kept.extend(own[i] for i in resolve_overlaps([starts[i] for i in own], [ends[i] for i in own],
                                                     [scores[i] for i in own]))
    return sorted(kept)


def char_spans_to_tokens(doc: Doc, starts: Sequence[int], ends: Sequence[int],
                         alignment_mode: str = "strict") -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Token ranges of character ranges of ``doc.text``: ``(token_starts, token_ends)``, exactly
    the ``span.start``/``span.end`` of ``doc.char_span(start, end, alignment_mode=...)``, and -1
    where that gives None. Ranges must not be empty (``start < end``)."""
    if alignment_mode not in ALIGNMENT_MODES:
        raise ValueError(f"alignment_mode must be one of {ALIGNMENT_MODES}, got {alignment_mode!r}")
    return _compiled.char_spans(doc, starts, ends, alignment_mode)


def align_subwords(doc: Doc, offsets) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Map a fast tokenizer's ``offset_mapping`` for ``doc.text`` onto ``doc``'s tokens.

    Returns ``(first_subword, token_of_subword)``: the index of the first subword overlapping
    each token, and the first token each subword overlaps, -1 where none (special tokens with
    empty offsets, whitespace-only pieces). A subword covering several tokens counts as the
    first subword of each.
    """
    return _compiled.align_subwords(doc, offsets)


def resolve_overlaps(starts: Sequence[int], ends: Sequence[int],
                     scores: Optional[Sequence[float]] = None) -> numpy.ndarray:
    """Indices of a maximal set of non-overlapping spans, in text order.

    Spans are taken greedily, highest score first when ``scores`` are given, then longest, then
    leftmost (spaCy's ``filter_spans`` order), so a span is only ever dropped for a better one
    that it overlaps. O(n log n).
    """
    return _compiled.resolve_overlaps(starts, ends, scores)
