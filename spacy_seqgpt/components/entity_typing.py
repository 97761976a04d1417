"""``seqgpt_typing``: fine-grained (or multi-label) types for spans already on the Doc.

SeqGPT types a span by classification: a question about the span in its context is the input
(``template``, see ``spacy_seqgpt.templates``) and the labels are the classification labels. A
rule-based or small NER finds the spans; this component gives them a user's label set.
"""
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from spacy.language import Language
from spacy.tokens import Doc, Span

from ..decoding import Decoding
from ..models import HFModel
from ..prompts import LabelSpec, prompt_labels
from ..templates import TEMPLATES, check_template, template_ref
from ..validation import check_key
from .classification import LabelClassification
from .pipe import SETTINGS, SeqGPTPipe
from .scorers import scorer_ref
from .spans import check_input_key, input_spans, write_spans

# Per Doc: each input span's row of label values, None where no window holds the span.
TypingPredictions = List[List[Optional[np.ndarray]]]


@Language.factory(
    "seqgpt_typing",
    assigns=["doc.ents", "doc.spans"],
    default_config={"labels": [], **SETTINGS, "multi_label": False, "probabilities": False, "input_key": None,
                    "spans_key": None, "threshold": 0.5, "template": template_ref("typing"),
                    "scorer": scorer_ref("typing")},
    default_score_weights={"typing_f": 1.0, "typing_p": 0.0, "typing_r": 0.0, "typing_per_type": None},
)
def make_seqgpt_typing(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]],
                       model: Union[str, HFModel], decoding: Decoding, multi_label: bool, probabilities: bool,
                       input_key: Optional[str], spans_key: Optional[str], threshold: float, template: str,
                       scorer: Callable) -> "SeqGPTTyping":
    return SeqGPTTyping(nlp.vocab, name, labels=labels, model=model, decoding=decoding, multi_label=multi_label,
                        probabilities=probabilities, input_key=input_key, spans_key=spans_key, threshold=threshold,
                        template=template, scorer=scorer)


class SeqGPTTyping(SeqGPTPipe):
    """Types ``doc.ents`` (or ``doc.spans[input_key]``): one classification prompt per span.

    ``template`` holds ``{span}`` (the span's text) and ``{text}`` (its context). A span's label
    is the best one whose score reaches ``threshold``; scores are 1.0 when generating, the
    model's probabilities with ``probabilities`` (as in ``seqgpt_textcat``). The typed spans go where
    they were read; entities carry their score in ``span._.seqgpt_score``, a span group in
    ``attrs["scores"]``. A span with no label at ``threshold`` keeps its own label (counted in
    ``stats["untyped"]``). ``multi_label``: ``doc.spans[spans_key]`` gets one span per label at
    ``threshold`` (the input is left as it is). A span over ``max_input_tokens`` on its own is
    left untyped (``stats["over_window"]``).
    """

    def __init__(self, vocab, name: str, *, labels: LabelSpec, multi_label: bool, probabilities: bool,
                 input_key: Optional[str], spans_key: Optional[str], threshold: float, template: str, **settings):
        super().__init__(vocab, name, threshold=threshold, **settings)
        self.classification = LabelClassification(prompt_labels(labels, component=name), multi_label=multi_label,
                                                  probabilities=probabilities)
        self.input_key = check_input_key(input_key, name)
        if spans_key is not None and not multi_label:  # 0.1's spans_key named the spans read
            raise ValueError(f"{name}: 'spans_key' is where multi-label typing writes (multi_label = true); "
                             f"single-label typing writes the typed spans where it read them. To type the spans "
                             f"of doc.spans[{spans_key!r}], set input_key = {spans_key!r} ('spans_key' named the "
                             "spans read before 0.2).")
        self.spans_key = check_key(spans_key, name, "spans_key", optional=not multi_label)
        self.template = check_template(template, TEMPLATES["typing"][1], name)

    @property
    def labels(self) -> tuple:
        return self.classification.labels

    def predict(self, docs: Sequence[Doc]) -> TypingPredictions:
        asker = self.asker()
        requests = asker.about_spans(
            docs, self.template, lambda _, doc: enumerate({"span": span} for span in input_spans(doc, self.input_key)),
            self.classification.texts)
        rows: TypingPredictions = [[None] * len(input_spans(doc, self.input_key)) for doc in docs]
        for request, row in zip(requests, self.classification.values(asker, docs, requests)):
            rows[request.doc_index][request.subject] = row
        return rows

    def set_annotations(self, docs: Sequence[Doc], predictions: TypingPredictions) -> None:
        for doc, rows in zip(docs, predictions):
            spans = input_spans(doc, self.input_key)
            if self.classification.multi_label:
                typed = [(Span(doc, span.start, span.end, label=label), float(score))
                         for span, row in zip(spans, rows) if row is not None
                         for label, score in zip(self.labels, row)]
                write_spans(doc, self.spans_key, self.kept(typed), overwrite=True)
            else:  # the typed spans take the place of those read
                write_spans(doc, self.input_key, [self._typed(doc, span, row) for span, row in zip(spans, rows)],
                            overwrite=True)

    def _typed(self, doc: Doc, span: Span, row: Optional[np.ndarray]):
        """``(span, score)``: the span with its best label at ``threshold``, else as it was (score None)."""
        best = int(row.argmax()) if row is not None and len(row) else -1
        if best < 0 or row[best] <= 0 or row[best] < self.threshold:
            self.stats["untyped"] += int(row is not None)
            return Span(doc, span.start, span.end, label=span.label), None
        return Span(doc, span.start, span.end, label=self.labels[best]), float(row[best])

    def scorer_settings(self) -> dict:
        return {"spans_key": self.spans_key if self.classification.multi_label else self.input_key}
