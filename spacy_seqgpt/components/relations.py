"""``seqgpt_rel``: relations between spans already on the Doc, as SeqGPT does it.

Every ordered pair of candidate spans is classified with the relation labels plus a "no
relation" answer: ``doc._.rel[(head.start, head.end, tail.start, tail.end)] = {label: score}``
(``text.relations``: spaCy's relation-extraction project keys by the starts only, which loses
pairs of spans that overlap).
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import registry

from ..decoding import Decoding
from ..models import HFModel
from ..prompts import LabelSpec, check_label, prompt_labels
from ..templates import NO_RELATION, TEMPLATES, check_template, template_ref
from ..text.relations import REL_ATTR, candidate_pairs, pair_key
from ..validation import check_count, check_positive_int
from .classification import LabelClassification
from .pipe import SETTINGS, SeqGPTPipe
from .scorers import scorer_ref
from .spans import check_input_key, input_spans

# Per Doc: {pair key: {label: score}} of every pair asked.
RelationPredictions = List[Dict[tuple, Dict[str, float]]]


@Language.factory(
    "seqgpt_rel",
    assigns=["doc._.rel"],
    default_config={"labels": [], **SETTINGS, "probabilities": False, "input_key": None, "threshold": 0.5,
                    "template": template_ref("relation"), "no_relation": NO_RELATION,
                    "candidates": {"@misc": "spacy_seqgpt.pair_candidates.v1", "max_distance": 100, "max_pairs": 200},
                    "scorer": scorer_ref("rel")},
    default_score_weights={"rel_micro_f": 1.0, "rel_micro_p": 0.0, "rel_micro_r": 0.0},
)
def make_seqgpt_rel(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]], model: Union[str, HFModel],
                    decoding: Decoding, probabilities: bool, input_key: Optional[str], threshold: float, template: str,
                    no_relation: str, candidates: "PairCandidates", scorer: Callable) -> "SeqGPTRelations":
    return SeqGPTRelations(nlp.vocab, name, labels=labels, model=model, decoding=decoding, probabilities=probabilities,
                           input_key=input_key, threshold=threshold, template=template, no_relation=no_relation,
                           candidates=candidates, scorer=scorer)


@dataclass(frozen=True)
class PairCandidates:
    """Which ordered pairs of spans ``seqgpt_rel`` asks about (``[components.<name>.candidates]``):
    both spans in one sentence when the Doc has sentences, else at most ``max_distance`` tokens
    apart; at most ``max_pairs`` per Doc, nearest first."""

    max_distance: int = 100
    max_pairs: int = 200

    def __post_init__(self):
        check_count(self.max_distance, "max_distance", "candidates")
        check_positive_int(self.max_pairs, "max_pairs", "candidates")


registry.misc.register("spacy_seqgpt.pair_candidates.v1", func=PairCandidates)


class SeqGPTRelations(SeqGPTPipe):
    """Classifies each ordered pair of ``doc.ents`` (or ``doc.spans[input_key]``).

    Candidate pairs (``candidates``, :class:`PairCandidates`): both spans in one sentence when
    the Doc has sentences, else at most ``max_distance`` tokens apart; at most ``max_pairs`` per
    Doc, nearest first (the pairs left out are counted in ``stats["pairs_capped"]``); spans with
    the same bounds are one candidate (``stats["merged_spans"]``). Each pair's prompt asks ``template``
    (``{head}``, ``{tail}``, ``{text}``) with the labels and ``no_relation`` as answers.
    ``doc._.rel`` gets every pair asked, with the labels whose score reaches ``threshold``:
    1.0 for the answer's label when generating, probabilities with ``probabilities``.
    """

    def __init__(self, vocab, name: str, *, labels: LabelSpec, probabilities: bool, input_key: Optional[str],
                 threshold: float, template: str, no_relation: str,
                 candidates: Union[PairCandidates, dict, None] = None, **settings):
        super().__init__(vocab, name, threshold=threshold, **settings)
        check_label(no_relation)
        relations = prompt_labels(labels, component=name)
        if no_relation in relations or no_relation in relations.values():
            raise ValueError(f"{name}: the no-relation answer {no_relation!r} is also a relation label; "
                             "rename one of them (setting no_relation)")
        self.classification = LabelClassification({**relations, no_relation: no_relation}, multi_label=False,
                                                  probabilities=probabilities)
        self.no_relation = no_relation
        self.input_key = check_input_key(input_key, name)
        self.template = check_template(template, TEMPLATES["relation"][1], name)
        self.candidates = candidates if isinstance(candidates, PairCandidates) else PairCandidates(**(candidates or {}))

    @property
    def labels(self) -> tuple:
        return tuple(label for label in self.classification.labels if label != self.no_relation)

    def pairs(self, doc: Doc):
        """The candidate (head, tail) pairs of ``doc``, nearest first, capped at ``candidates.max_pairs``. Spans
        with the same bounds (labels aside) are one candidate: a pair's question and its key in
        ``doc._.rel`` read only the bounds (``stats["merged_spans"]`` counts the others)."""
        spans = list(input_spans(doc, self.input_key))
        merged = len(spans) - len({(span.start, span.end) for span in spans})
        if merged:
            self.stats["merged_spans"] += merged
        candidates = candidate_pairs(doc, spans, self.candidates.max_distance)
        cap = self.candidates.max_pairs
        if len(candidates) > cap:
            self.stats["pairs_capped"] += len(candidates) - cap
        return candidates[:cap]

    def predict(self, docs: Sequence[Doc]) -> RelationPredictions:
        asker = self.asker()
        requests = asker.about_spans(docs, self.template,
                                     lambda _, doc: ((pair_key(head, tail), {"head": head, "tail": tail})
                                                     for head, tail in self.pairs(doc)),
                                     self.classification.texts)
        found: RelationPredictions = [{} for _ in docs]
        for request, row in zip(requests, self.classification.values(asker, docs, requests)):
            found[request.doc_index][request.subject] = {
                label: float(value) for label, value in zip(self.classification.labels, row)
                if label != self.no_relation}
        return found

    def set_annotations(self, docs: Sequence[Doc], predictions: RelationPredictions) -> None:
        for doc, found in zip(docs, predictions):
            doc._.set(REL_ATTR, {pair: dict(self.kept(list(scores.items()))) for pair, scores in found.items()})

    def scorer_settings(self) -> dict:
        return {"threshold": self.threshold}
