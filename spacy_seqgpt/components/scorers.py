"""The components' scorers, registered under ``@scorers`` as spaCy's own pipes register theirs.

A component's ``scorer`` setting names one; ``score()`` calls it with the component's settings
(``spans_key``, ``labels``, ``threshold``, ...). A later way of scoring ships as ``v2``.
"""
from typing import Callable, Dict, Optional, Sequence

from spacy.scorer import PRFScore, Scorer, get_ner_prf
from spacy.training import validate_examples
from spacy.util import registry

from ..text.relations import REL_ATTR, relation_triples, span_keyed


def score_spans(examples, spans_key: Optional[str] = None, **kwargs) -> Dict:
    """spaCy's scores of written spans: ``ents_*`` for ``doc.ents``, else ``spans_<key>_*`` over
    every span of the group, overlaps included."""
    validate_examples(examples, "spacy_seqgpt.spans_scorer")
    if spans_key is None:
        return get_ner_prf(examples)
    return Scorer.score_spans(examples, f"spans_{spans_key}",
                              getter=lambda doc, attr: list(doc.spans.get(spans_key, [])),
                              has_annotation=lambda doc: spans_key in doc.spans, allow_overlap=True, **kwargs)


def score_cats(examples, labels: Sequence[str] = (), multi_label: bool = False, **kwargs) -> Dict:
    """spaCy's ``cats_*`` scores of ``doc.cats``."""
    validate_examples(examples, "spacy_seqgpt.cats_scorer")
    return Scorer.score_cats(examples, "cats", labels=labels, multi_label=multi_label, **kwargs)


def score_typing(examples, spans_key: Optional[str] = None, **kwargs) -> Dict:
    """``typing_p/r/f`` (and per type) over the typed spans: ``doc.ents`` or ``doc.spans[spans_key]``."""
    validate_examples(examples, "spacy_seqgpt.typing_scorer")

    def getter(doc, attr):
        return doc.ents if spans_key is None else doc.spans.get(spans_key, [])

    return Scorer.score_spans(examples, "typing", getter=getter, has_annotation=None, **kwargs)


def score_relations(examples, threshold: float = 0.5, **kwargs) -> Dict:
    """``rel_micro_p/r/f``: (head, tail, label) triples scored at least ``threshold`` against the
    gold Docs' ``doc._.rel`` (a gold relation has a score of at least 0.5; keyed by span bounds,
    or by start tokens of ``doc.ents``)."""
    validate_examples(examples, "spacy_seqgpt.rel_scorer")
    prf = PRFScore()
    for example in examples:
        reference, predicted = example.reference, example.predicted
        gold = relation_triples(span_keyed(reference, reference._.get(REL_ATTR), "the gold doc._.rel"), 0.5)
        prf.score_set(relation_triples(span_keyed(predicted, predicted._.get(REL_ATTR)), threshold), gold)
    return {"rel_micro_p": prf.precision, "rel_micro_r": prf.recall, "rel_micro_f": prf.fscore}


def score_events(examples, spans_key: str = "events", **kwargs) -> Dict:
    """Span P/R/F of the triggers (with their types) and of the arguments (with their roles)."""
    return {**score_spans(examples, spans_key, **kwargs), **score_spans(examples, f"{spans_key}_arguments", **kwargs)}


SCORERS: Dict[str, Callable] = {"spans": score_spans, "cats": score_cats, "typing": score_typing,
                                "rel": score_relations, "events": score_events}


def _register(name: str, scorer: Callable) -> None:
    registry.scorers.register(f"spacy_seqgpt.{name}_scorer.v1", func=lambda: scorer)


for _name, _scorer in SCORERS.items():
    _register(_name, _scorer)


def scorer_ref(name: str) -> dict:
    """A default config's reference to the registered scorer ``name``."""
    return {"@scorers": f"spacy_seqgpt.{name}_scorer.v1"}
