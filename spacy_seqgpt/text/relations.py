"""Relations on a Doc and the candidate pairs.

``doc._.rel[(head.start, head.end, tail.start, tail.end)] = {label: score}``: one entry per
ordered pair of spans that was asked about, a score per relation label (gold Docs: 1.0 for the
labels that hold). The spans' token bounds, not only their starts as in spaCy's
relation-extraction project, key it: spans that overlap (``Tim`` and ``Tim Cook``) may start on
one token, and every pair asked must keep its own entry. Gold Docs keyed the project's way,
``(head.start, tail.start)`` over ``doc.ents``, are read too (:func:`span_keyed`). The Doc keeps
them in a form that ``Doc.to_bytes``, ``DocBin`` and ``nlp.pipe(n_process=...)`` carry
(:class:`Relations`).
"""
from itertools import permutations
from collections.abc import Mapping, MutableMapping
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from spacy.tokens import Doc, Span

REL_ATTR = "rel"
PairKey = Tuple[int, int, int, int]  # head start, head end, tail start, tail end (tokens)
# Where a Doc keeps its relations: doc.user_data at the key a plain ``rel`` extension would use,
# so DocBins written before (and by spaCy's relation-extraction project) are read as they are.
_STORE = ("._.", REL_ATTR, None, None)


class Relations(MutableMapping):
    """``doc._.rel``: a mapping of pair keys (tuples of token offsets) to ``{label: score}``.

    msgpack, which ``Doc.to_bytes`` (and so ``nlp.pipe(n_process=...)``) uses, turns a tuple
    key into a list that cannot key a dict again. The Doc therefore holds a dict keyed by
    strings (``"0 2 4 5"``) in ``doc.user_data``, and this is a live view of it that speaks
    tuples: what is written through it is in the Doc, and round-trips with ``to_bytes``,
    ``DocBin`` and pickling. Tuple keys found in the store (a DocBin of an earlier version)
    are read too."""

    def __init__(self, store: dict):
        self._store = store

    def __getitem__(self, key) -> dict:
        return self._store[_stored_key(key)]

    def __setitem__(self, key, scores) -> None:
        self._store[_stored_key(key)] = scores

    def __delitem__(self, key) -> None:
        del self._store[_stored_key(key)]

    def __iter__(self) -> Iterator[tuple]:
        return (_pair_of(key) for key in self._store)

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


def _stored_key(key) -> str:
    if not isinstance(key, tuple) or not all(isinstance(i, int) and not isinstance(i, bool) for i in key):
        raise KeyError(f"doc._.rel is keyed by tuples of token offsets such as (head start, head end, tail start, "
                       f"tail end), got {key!r}")
    return " ".join(map(str, key))


def _pair_of(stored) -> tuple:
    if isinstance(stored, (tuple, list)):  # a tuple-keyed store (see Relations)
        return tuple(stored)
    try:
        return tuple(int(part) for part in str(stored).split())
    except ValueError:
        raise ValueError(f"doc._.rel holds the key {stored!r}, which names no pair of spans") from None


def _get_relations(doc: Doc) -> Optional[Relations]:
    store = doc.user_data.get(_STORE)
    if store is None:
        return None
    if not isinstance(store, dict):
        raise ValueError(f"doc._.rel holds a {type(store).__name__}, not a mapping of span pairs to label scores")
    if not isinstance(next(iter(store), ""), str):  # tuple keys (all of them): a DocBin of an earlier version
        store = doc.user_data[_STORE] = {_stored_key(_pair_of(key)): scores for key, scores in store.items()}
    return Relations(store)


def _set_relations(doc: Doc, relations: Optional[Mapping]) -> None:
    if relations is None:
        doc.user_data.pop(_STORE, None)
        return
    if not isinstance(relations, Mapping):
        raise ValueError(f"doc._.rel must map span pairs to label scores, got a {type(relations).__name__}")
    doc.user_data[_STORE] = {_stored_key(key): scores for key, scores in relations.items()}


if not Doc.has_extension(REL_ATTR):
    Doc.set_extension(REL_ATTR, getter=_get_relations, setter=_set_relations)


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
