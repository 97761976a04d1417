"""Writing scored spans on Docs: shared by the components that write spans.

Span scores are kept the way spaCy keeps them (``doc.spans[key].attrs["scores"]``) and, for
entities, in ``span._.seqgpt_score``.
"""
from typing import List, Tuple

from spacy.tokens import Doc, Span

from ..text.alignment import resolve_overlaps

SCORE_ATTR = "seqgpt_score"  # span._.seqgpt_score: the score of an entity its component wrote
if not Span.has_extension(SCORE_ATTR):
    Span.set_extension(SCORE_ATTR, default=None)

ScoredSpan = Tuple[Span, float]


def add_ents(doc: Doc, scored: List[ScoredSpan]) -> None:
    """Add a maximal set of non-overlapping ``(span, score)`` pairs, longest first, each score in
    ``span._.seqgpt_score``; entities already set are kept."""
    taken = {i for ent in doc.ents for i in range(ent.start, ent.end)}
    free = [(span, score) for span, score in scored if not taken.intersection(range(span.start, span.end))]
    if free:
        kept = [free[i] for i in resolve_overlaps([span.start for span, _ in free], [span.end for span, _ in free])]
        doc.ents = sorted([*doc.ents, *(span for span, _ in kept)], key=lambda span: span.start)
        for span, score in kept:
            span._.set(SCORE_ATTR, score)


def add_spans(doc: Doc, key: str, scored: List[ScoredSpan]) -> None:
    """Add every span (overlaps allowed) to ``doc.spans[key]`` with its score in the group's
    ``attrs["scores"]``, keeping what is there; a span found twice keeps its best score."""
    group = doc.spans[key] if key in doc.spans else None
    spans = list(group) if group is not None else []
    scores = list(group.attrs.get("scores", [None] * len(spans))) if group is not None else []
    where = {(span.start, span.end, span.label): i for i, span in enumerate(spans)}
    for span, score in sorted(scored, key=lambda item: (item[0].start, item[0].end)):
        i = where.get((span.start, span.end, span.label))
        if i is None:
            where[(span.start, span.end, span.label)] = len(spans)
            spans.append(span)
            scores.append(score)
        elif scores[i] is None or score > scores[i]:
            scores[i] = score
    doc.spans[key] = spans
    doc.spans[key].attrs["scores"] = scores
