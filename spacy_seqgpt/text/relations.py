"""Relations on a Doc and the candidate pairs.

``doc._.rel[(head.start, head.end, tail.start, tail.end)] = {label: score}``: one entry per
ordered pair of spans that was asked about, a score per relation label (gold Docs: 1.0 for the
labels that hold). The spans' token bounds, not only their starts as in spaCy's
relation-extraction project, key it: spans that overlap (``Tim`` and ``Tim Cook``) may start on
one token, and every pair asked must keep its own entry. Gold Docs keyed the project's way,
``(head.start, tail.start)`` over ``doc.ents``, are read too (:func:`span_keyed`).
"""
from itertools import permutations
from typing import Dict, List, Optional, Sequence, Tuple

from spacy.tokens import Doc, Span

REL_ATTR = "rel"
if not Doc.has_extension(REL_ATTR):
    Doc.set_extension(REL_ATTR, default=None)  # each annotated Doc gets a dict of its own

PairKey = Tuple[int, int, int, int]  # head start, head end, tail start, tail end (tokens)


def pair_key(head: Span, tail: Span) -> PairKey:
    return head.start, head.end, tail.start, tail.end


def candidate_pairs(doc: Doc, spans: Sequence[Span], max_distance: int) -> List[Tuple[Span, Span]]:
    """Ordered (head, tail) pairs of distinct ``spans``: both in one sentence when ``doc`` has
    sentences, else at most ``max_distance`` tokens apart; nearest first."""
    unique = list({(span.start, span.end): span for span in spans}.values())
    if doc.has_annotation("SENT_START"):
        pairs = [(h, t) for h, t in permutations(unique, 2) if h.sent == t.sent]
    else:
        pairs = [
            (h, t) for h, t in permutations(unique, 2) if max(h.start, t.start) - min(h.end, t.end) <= max_distance
        ]
    pairs.sort(key=lambda pair: (abs(pair[0].start - pair[1].start), pair_key(*pair)))
    return pairs


def span_keyed(doc: Doc, relations: Optional[Dict], where: str = "doc._.rel") -> Dict[PairKey, Dict]:
    """``relations`` keyed by :func:`pair_key`; a key of spaCy's relation-extraction project,
    ``(head start, tail start)``, names the entities of ``doc.ents`` that start there. A key that
    names no spans of ``doc`` is a ValueError naming it."""
    starts = {ent.start: ent for ent in doc.ents}
    keyed = {}
    for key, scores in (relations or {}).items():
        if not isinstance(key, tuple) or len(key) not in (2, 4) or not all(isinstance(i, int) for i in key):
            raise ValueError(f"{where}: {key!r} is not a relation key (head start, head end, tail start, tail end)")
        if len(key) == 2:
            if key[0] not in starts or key[1] not in starts:
                raise ValueError(f"{where}: the relation {key!r} is keyed by start tokens, but its head or tail "
                                 "starts no entity of doc.ents")
            key = pair_key(starts[key[0]], starts[key[1]])
        head_start, head_end, tail_start, tail_end = key
        if not (0 <= head_start < head_end <= len(doc) and 0 <= tail_start < tail_end <= len(doc)):
            raise ValueError(f"{where}: the relation {key!r} names tokens outside the Doc ({len(doc)} tokens)")
        keyed[key] = scores
    return keyed


def relation_triples(relations: Optional[Dict], threshold: float) -> set:
    """``{(*pair key, label)}`` of the relations scored at least ``threshold``."""
    return {(*pair, label) for pair, scores in (relations or {}).items() for label, score in scores.items()
            if score >= threshold}
