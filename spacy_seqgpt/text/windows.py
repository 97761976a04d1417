"""Cutting long documents into windows that fit the model's input budget.

A window is a character range of the Doc holding at most ``max_tokens`` subwords of the
model's tokenizer. Windows end on sentence boundaries when the Doc has them; a sentence
that alone is over budget is cut between spaCy tokens, and a single token that is over
budget between subwords. Spans found in a window's text map back to the Doc by adding the
window's start offset. Questions about given spans take a window centred on them
(:func:`centred_window`), so a run-on sentence never puts more than the budget into a
prompt. Subwords are counted once on the whole Doc, so a window tokenized on its own may
differ by a subword at its edges: the budget is that close, not exact.
"""
import re
from bisect import bisect_left
from typing import List, Optional, Sequence, Tuple

from spacy.tokens import Doc

from ..validation import check_positive_int

CharRange = Tuple[int, int]
_PIECES = re.compile(r"\s*\S+")


def subword_starts(tokenizer, text: str) -> List[int]:
    """The character offset where each of ``text``'s subwords starts, under ``tokenizer``."""
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return [start for start, _ in offsets]
    # Tokenizers without offsets: count each whitespace-delimited piece on its own.
    starts: List[int] = []
    for match in _PIECES.finditer(text):
        n = len(tokenizer(match.group(), add_special_tokens=False)["input_ids"])
        starts.extend([match.start()] * n)
    return starts


class SubwordCounter:
    """How many subwords start in a character range of the text whose ``subword_starts`` it holds."""

    def __init__(self, subword_starts: Sequence[int]):
        self.starts = sorted(subword_starts)

    def __call__(self, start: int, end: int) -> int:
        return bisect_left(self.starts, end) - bisect_left(self.starts, start)

    def cut_points(self, start: int, end: int, max_tokens: int) -> List[int]:
        """Offsets that cut [start, end) into runs of at most ``max_tokens`` subwords."""
        inside = self.starts[bisect_left(self.starts, start) : bisect_left(self.starts, end)]
        return [offset for offset in inside[max_tokens::max_tokens] if offset > start]


def window_ranges(doc: Doc, subword_starts: Sequence[int], max_tokens: int) -> List[CharRange]:
    """Character ranges covering every non-space token of ``doc``, each within ``max_tokens`` subwords."""
    check_positive_int(max_tokens, "max_input_tokens")
    count = SubwordCounter(subword_starts)
    pieces: List[CharRange] = []
    for unit in _units(doc):
        if count(unit[0], unit[1]) <= max_tokens:
            pieces.append(unit)
        else:
            pieces.extend(_split_unit(doc, unit, count, max_tokens))
    return _pack(pieces, count, max_tokens)


def _units(doc: Doc) -> List[CharRange]:
    """Sentences when the Doc has boundaries, else the whole text, trimmed of outer whitespace."""
    spans = list(doc.sents) if doc.has_annotation("SENT_START") else [doc[:]]
    units = []
    for span in spans:
        tokens = [token for token in span if not token.is_space]
        if tokens:
            units.append((tokens[0].idx, tokens[-1].idx + len(tokens[-1])))
    return units


def _split_unit(doc: Doc, unit: CharRange, count: SubwordCounter, max_tokens: int) -> List[CharRange]:
    span = doc.char_span(unit[0], unit[1], alignment_mode="expand")
    pieces: List[CharRange] = []
    for token in span:
        if token.is_space:
            continue
        start, end = token.idx, token.idx + len(token)
        if count(start, end) <= max_tokens:
            pieces.append((start, end))
            continue
        bounds = [start, *count.cut_points(start, end, max_tokens), end]
        pieces.extend(zip(bounds, bounds[1:]))
    return pieces


def _pack(pieces: List[CharRange], count: SubwordCounter, max_tokens: int) -> List[CharRange]:
    windows: List[CharRange] = []
    for start, end in pieces:
        if windows and count(windows[-1][0], end) <= max_tokens:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows


def centred_window(doc: Doc, count: SubwordCounter, start: int, end: int, region: Tuple[int, int],
                   max_tokens: int) -> Optional[CharRange]:
    """The character range of tokens ``start`` .. ``end - 1`` of ``doc`` widened a token at a
    time on the side that has taken fewer subwords, within the tokens ``region`` and at most
    ``max_tokens`` subwords; a token that would go over the budget ends that side. None when
    the tokens themselves are over budget."""
    if count(doc[start].idx, _end_char(doc, end)) > max_tokens:
        return None
    left, right = start, end
    taken = [0, 0]  # subwords added on the left and on the right
    open_sides = [left > region[0], right < region[1]]
    while any(open_sides):
        side = 0 if open_sides[0] and (taken[0] <= taken[1] or not open_sides[1]) else 1
        wider = (left - 1, right) if side == 0 else (left, right + 1)
        total = count(doc[wider[0]].idx, _end_char(doc, wider[1]))
        if total > max_tokens:
            open_sides[side] = False
            continue
        taken[side] += total - count(doc[left].idx, _end_char(doc, right))
        left, right = wider
        open_sides = [open_sides[0] and left > region[0], open_sides[1] and right < region[1]]
    while left < start and doc[left].is_space:
        left += 1
    while right > end and doc[right - 1].is_space:
        right -= 1
    return doc[left].idx, _end_char(doc, right)


def _end_char(doc: Doc, end: int) -> int:
    """Where token ``end - 1`` ends."""
    return doc[end - 1].idx + len(doc[end - 1])
