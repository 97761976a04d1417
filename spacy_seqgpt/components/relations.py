"""``seqgpt_rel``: relations between spans already on the Doc, as SeqGPT does it.

Every ordered pair of candidate spans is classified with the relation labels plus a "no
relation" answer: ``doc._.rel[(head.start, head.end, tail.start, tail.end)] = {label: score}``
(``text.relations``: spaCy's relation-extraction project keys by the starts only, which loses
pairs of spans that overlap).
"""
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from spacy.language import Language
from spacy.scorer import PRFScore
from spacy.tokens import Doc
from spacy.training import validate_examples

from ..decoding import DEFAULT_DRAFT_TOKENS
from ..models import HFModel
from ..prompts import NO_RELATION, RELATION_TEMPLATE, check_label
from ..text.relations import REL_ATTR, candidate_pairs, relation_triples, span_keyed
from .base import SETTINGS
from .span_questions import SpanQuestions, SpanRequest


@Language.factory(
    "seqgpt_rel",
    assigns=["doc._.rel"],
    default_config={"labels": [], **SETTINGS, "scoring": False, "spans_key": None, "template": RELATION_TEMPLATE,
                    "no_relation": NO_RELATION, "max_distance": 100, "max_pairs": 200, "threshold": 0.5},
    default_score_weights={"rel_micro_f": 1.0, "rel_micro_p": 0.0, "rel_micro_r": 0.0},
)
def make_seqgpt_rel(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]], model: Union[str, HFModel],
                    batch_size: int, max_new_tokens: int, num_beams: int, max_input_tokens: int, constrained: bool,
                    scoring: bool, spans_key: Optional[str], template: str, no_relation: str, max_distance: int,
                    max_pairs: int, threshold: float,
                    jump_forward: bool = True, speculate: bool = True,
                    draft_tokens: int = DEFAULT_DRAFT_TOKENS) -> "SeqGPTRelations":
    return SeqGPTRelations(nlp.vocab, name, labels=labels, model=model, batch_size=batch_size,
                           max_new_tokens=max_new_tokens, num_beams=num_beams, max_input_tokens=max_input_tokens,
                           constrained=constrained, scoring=scoring, spans_key=spans_key, template=template,
                           no_relation=no_relation, max_distance=max_distance, max_pairs=max_pairs,
                           threshold=threshold, jump_forward=jump_forward,
                           speculate=speculate, draft_tokens=draft_tokens)


class SeqGPTRelations(SpanQuestions):
    """Classifies each ordered pair of ``doc.ents`` (or ``doc.spans[spans_key]``).

    Candidate pairs: both spans in one sentence when the Doc has sentences, else at most
    ``max_distance`` tokens apart; at most ``max_pairs`` per Doc, nearest first (the pairs left
    out are counted in ``stats["pairs_capped"]``). Each pair's prompt asks ``template``
    (``{head}``, ``{tail}``, ``{text}``) with the labels and ``no_relation`` as answers.
    ``doc._.rel[(head.start, head.end, tail.start, tail.end)]`` gets a score per label: 1.0 for the answer's label
    when generating, probabilities with ``scoring``; ``score()`` counts a relation predicted
    when its score reaches ``threshold``.
    """

    placeholders = ("head", "tail")

    def __init__(self, vocab, name: str, *, labels, no_relation: str, max_distance: int, max_pairs: int,
                 threshold: float, **settings):
        check_label(no_relation)
        relations = dict(labels) if isinstance(labels, dict) else {label: label for label in labels}
        if no_relation in relations or no_relation in relations.values():
            raise ValueError(f"{name}: the no-relation answer {no_relation!r} is also a relation label; "
                             "rename one of them (setting no_relation)")
        super().__init__(vocab, name, labels={**relations, no_relation: no_relation}, multi_label=False, **settings)
        self.no_relation = no_relation
        self.max_distance = max_distance
        self.max_pairs = max_pairs
        self.threshold = threshold

    def pairs(self, doc: Doc):
        """The candidate (head, tail) pairs of ``doc``, nearest first, capped at ``max_pairs``."""
        candidates = candidate_pairs(doc, list(self.targets(doc)), self.max_distance)
        if len(candidates) > self.max_pairs:
            self.stats["pairs_capped"] += len(candidates) - self.max_pairs
        return candidates[: self.max_pairs]

    def questions(self, doc: Doc):
        return enumerate(self.pairs(doc))

    def _write_cats(self, docs: Sequence[Doc], requests: Sequence[SpanRequest], values: np.ndarray) -> None:
        relations: List[Dict] = [{} for _ in docs]
        for request, row in zip(requests, values):
            relations[request.doc_index][request.span_bounds] = {
                label: float(value) for label, value in zip(self.labels, row) if label != self.no_relation}
        for doc, found in zip(docs, relations):
            doc._.set(REL_ATTR, found)

    def score(self, examples, **kwargs) -> Dict:
        """``rel_micro_p/r/f``: (head start, tail start, label) triples predicted at ``threshold``
        against the gold Docs' ``doc._.rel`` (a gold relation has a score of at least 0.5; keyed by
        span bounds, or by start tokens of ``doc.ents``)."""
        validate_examples(examples, "SeqGPTRelations.score")
        prf = PRFScore()
        for example in examples:
            reference, predicted = example.reference, example.predicted
            gold = relation_triples(span_keyed(reference, reference._.get(REL_ATTR), "the gold doc._.rel"), 0.5)
            predicted = relation_triples(span_keyed(predicted, predicted._.get(REL_ATTR)), self.threshold)
            prf.score_set(predicted, gold)
        return {"rel_micro_p": prf.precision, "rel_micro_r": prf.recall, "rel_micro_f": prf.fscore}

