"""Plain Python twins of the compiled aligner in ``spacy_seqgpt.kernels.alignment``: the tests'
oracle and the benchmark's alternative (``benchmarks/alignment.py``), not shipped in the wheel.

Written for obviousness, not speed: they define what the compiled functions must return
(the property tests compare the two on random input) and are the baseline the alignment
benchmark measures the compiled aligner against. Nothing in the package runs them.
"""
import math
from typing import List, Optional, Sequence, Tuple

import numpy
from spacy.tokens import Doc

from spacy_seqgpt.kernels.charclass import normalize_phrase, splits_word


def find_phrases(text: str, phrases: Sequence[str], case_sensitive: bool = True, collapse_whitespace: bool = True,
                 word_boundaries: bool = True) -> List[Tuple[int, int, int]]:
    # The normalized text, one entry per normalized char: (char, original start, original end,
    # first char of its original's fold, last char of its original's fold).
    normalized: List[list] = []
    for i, char in enumerate(text):
        if collapse_whitespace and char.isspace():
            if i > 0 and text[i - 1].isspace():  # the run goes on
                normalized[-1][2] = i + 1
            else:
                normalized.append([" ", i, i + 1, True, True])
            continue
        folded = char if case_sensitive else char.casefold()
        for k, piece in enumerate(folded):
            normalized.append([piece, i, i + 1, k == 0, k == len(folded) - 1])
    haystack = "".join(entry[0] for entry in normalized)

    def cut_allowed(cut: int) -> bool:
        return not word_boundaries or cut <= 0 or cut >= len(text) or not splits_word(text[cut - 1], text[cut])

    matches = []
    for index, phrase in enumerate(phrases):
        needle = normalize_phrase(phrase, case_sensitive, collapse_whitespace)
        if not needle:
            continue
        position = haystack.find(needle)
        while position >= 0:
            first, last = normalized[position], normalized[position + len(needle) - 1]
            if first[3] and last[4] and cut_allowed(first[1]) and cut_allowed(last[2]):
                matches.append((index, first[1], last[2]))
            position = haystack.find(needle, position + 1)
    return sorted(matches, key=lambda match: (match[1], match[2], match[0]))


def _check_ranges(starts, ends, what: str, scores=None) -> None:
    if len(starts) != len(ends) or (scores is not None and len(scores) != len(starts)):
        raise ValueError("starts and ends (and scores) must have the same length: one value per span")
    for i, (start, end) in enumerate(zip(starts, ends)):
        if start >= end:
            raise ValueError(f"{what} {i} is empty or reversed: ({start}, {end})")
    if scores is not None and not all(math.isfinite(score) for score in scores):
        raise ValueError("scores must be finite numbers")


def char_spans(doc: Doc, starts: Sequence[int], ends: Sequence[int],
               alignment_mode: str) -> Tuple[numpy.ndarray, numpy.ndarray]:
    _check_ranges(starts, ends, "character range")
    spans = [doc.char_span(start, end, alignment_mode=alignment_mode) for start, end in zip(starts, ends)]
    return (numpy.array([-1 if span is None else span.start for span in spans], dtype=numpy.int64),
            numpy.array([-1 if span is None else span.end for span in spans], dtype=numpy.int64))


def align_subwords(doc: Doc, offsets: Sequence[Tuple[int, int]]) -> Tuple[numpy.ndarray, numpy.ndarray]:
    first_subword = numpy.full(len(doc), -1, dtype=numpy.int64)
    token_of_subword = numpy.full(len(offsets), -1, dtype=numpy.int64)
    for s, pair in enumerate(offsets):
        if len(pair) != 2:
            raise ValueError(f"offsets must be (start, end) pairs, got {pair!r} at {s}")
        begin, end = pair
        for t, token in enumerate(doc):
            token_start, token_end = token.idx, token.idx + len(token)
            if max(begin, token_start) < min(end, token_end):
                if token_of_subword[s] < 0:
                    token_of_subword[s] = t
                if first_subword[t] < 0:
                    first_subword[t] = s
    return first_subword, token_of_subword


def resolve_overlaps(starts: Sequence[int], ends: Sequence[int],
                     scores: Optional[Sequence[float]] = None) -> numpy.ndarray:
    _check_ranges(starts, ends, "span", scores)

    def priority(i):
        return (-(scores[i] if scores is not None else 0.0), -(ends[i] - starts[i]), starts[i], i)

    kept: List[int] = []
    for i in sorted(range(len(starts)), key=priority):
        if all(ends[i] <= starts[j] or ends[j] <= starts[i] for j in kept):
            kept.append(i)
    return numpy.array(sorted(kept, key=lambda i: starts[i]), dtype=numpy.int64)
