"""Relations on a Doc, as spaCy's relation-extraction project keeps them, and the candidate pairs.

``doc._.rel[(head.start, tail.start)] = {label: score}``: one entry per ordered pair of spans
that was asked about, a score per relation label (gold Docs: 1.0 for the labels that hold).
"""
from itertools import permutations
from typing import Dict, List, Optional, Sequence, Tuple

from spacy.tokens import Doc, Span

REL_ATTR = "rel"
if not Doc.has_extension(REL_ATTR):
    Doc.set_extension(REL_ATTR, default=None)  # each annotated Doc gets a dict of its own


def candidate_pairs(doc: Doc, spans: Sequence[Span], max_distance: int) -> List[Tuple[Span, Span]]:
    """Ordered (head, tail) pairs of ``spans``: both in one sentence when ``doc`` has sentences,
    else at most ``max_distance`` tokens apart; nearest first."""
    if doc.has_annotation("SENT_START"):
        pairs = [(h, t) for h, t in permutations(spans, 2) if h.sent == t.sent]
    else:
        pairs = [(h, t) for h, t in permutations(spans, 2) if max(h.start, t.start) - min(h.end, t.end) <= max_distance]
    pairs.sort(key=lambda pair: (abs(pair[0].start - pair[1].start), pair[0].start, pair[1].start))
    return pairs


def relation_triples(relations: Optional[Dict], threshold: float) -> set:
    """``{(head start, tail start, label)}`` of the relations scored at least ``threshold``."""
    return {(*pair, label) for pair, scores in (relations or {}).items() for label, score in scores.items()
            if score >= threshold}
