"""The components' span vocabulary: which spans a component reads, and the one writer of scored spans.

Every component that writes spans writes them through :func:`write_spans`, with an explicit
``overwrite`` as spaCy's ``SpanRuler`` has it. Scores are kept the way spaCy keeps them
(``doc.spans[key].attrs["scores"]``) and, for entities, in ``span._.seqgpt_score``.
"""
from typing import List, Optional, Sequence, Tuple

from spacy.tokens import Doc, Span, SpanGroup

from ..text.alignment import resolve_overlaps
from ..validation import check_key

SCORE_ATTR = "seqgpt_score"  # span._.seqgpt_score: the score of an entity its component wrote
if not Span.has_extension(SCORE_ATTR):
    Span.set_extension(SCORE_ATTR, default=None)

ScoredSpan = Tuple[Span, Optional[float]]


def write_spans(doc: Doc, key: Optional[str], scored: Sequence[ScoredSpan], *, overwrite: bool, **attrs) -> None:
    """Write ``(span, score)`` pairs to ``doc.ents`` (``key`` None) or ``doc.spans[key]``.

    ``overwrite``: what was there is replaced. Otherwise it is kept: new entities fill the tokens
    no entity holds (a maximal non-overlapping set, longest first), and a span group gains the
    new spans, a span found twice keeping its best score. ``attrs``: more per-span lists of the
    group (``overwrite`` only: they could not be merged)."""
    if key is None:
        _write_ents(doc, scored, overwrite)
        return
    if overwrite:
        spans, scores = [span for span, _ in scored], [score for _, score in scored]
    elif attrs:
        raise ValueError(f"span attributes {sorted(attrs)} are written with overwrite only")
    else:
        spans, scores = _merged(doc.spans.get(key), scored)
    group = SpanGroup(doc, name=key, spans=spans)
    group.attrs.update({"scores": scores, **attrs})
    doc.spans[key] = group


def _merged(group: Optional[SpanGroup], scored: Sequence[ScoredSpan]) -> Tuple[List[Span], list]:
    """The group's spans and scores with ``scored`` added in text order, a span already there
    keeping its best score."""
    spans = list(group) if group is not None else []
    scores = list(group.attrs.get("scores", [None] * len(spans))) if group is not None else []
    where = {(span.start, span.end, span.label): i for i, span in enumerate(spans)}
    for span, score in sorted(scored, key=lambda item: (item[0].start, item[0].end)):
        known = where.setdefault((span.start, span.end, span.label), len(spans))
        if known == len(spans):
            spans.append(span)
            scores.append(score)
        elif scores[known] is None or (score is not None and score > scores[known]):
            scores[known] = score
    return spans, scores


def _write_ents(doc: Doc, scored: Sequence[ScoredSpan], overwrite: bool) -> None:
    kept = [] if overwrite else list(doc.ents)
    taken = {i for ent in kept for i in range(ent.start, ent.end)}
    free = [(span, score) for span, score in scored if not taken.intersection(range(span.start, span.end))]
    chosen = [free[i] for i in resolve_overlaps([span.start for span, _ in free], [span.end for span, _ in free])]
    if not chosen and not overwrite:
        return
    doc.ents = sorted([*kept, *(span for span, _ in chosen)], key=lambda span: span.start)
    for span, score in chosen:
        span._.set(SCORE_ATTR, score)


def input_spans(doc: Doc, input_key: Optional[str]) -> Sequence[Span]:
    """The spans a component reads: ``doc.ents``, or ``doc.spans[input_key]`` (none if absent)."""
    if input_key is None:
        return doc.ents
    return doc.spans[input_key] if input_key in doc.spans else []


def check_input_key(input_key: Optional[str], owner: str) -> Optional[str]:
    return check_key(input_key, owner, "input_key", optional=True, null_means="read doc.ents")
