"""``seqgpt_typing``: fine-grained (or multi-label) types for spans already on the Doc.

SeqGPT types a span by classification: a question about the span in its context is the input
(SeqGPT's exact wording for this task is not published; ``template`` is a setting) and the
labels are the classification labels. A rule-based or small NER finds the spans; this
component gives them a user's label set.
"""
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import validate_examples

from ..decoding import DEFAULT_DRAFT_TOKENS
from ..models import HFModel
from ..prompts import TYPING_TEMPLATE
from .base import SETTINGS
from .span_questions import SpanQuestions, SpanRequest
from .spans import SCORE_ATTR


@Language.factory(
    "seqgpt_typing",
    assigns=["doc.ents", "doc.spans"],
    default_config={"labels": [], **SETTINGS, "multi_label": False, "scoring": False, "spans_key": None,
                    "output_key": "seqgpt_types", "template": TYPING_TEMPLATE},
    default_score_weights={"typing_f": 1.0, "typing_p": 0.0, "typing_r": 0.0, "typing_per_type": None},
)
def make_seqgpt_typing(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]],
                       model: Union[str, HFModel], batch_size: int, max_new_tokens: int, num_beams: int,
                       max_input_tokens: int, constrained: bool, multi_label: bool, scoring: bool,
                       spans_key: Optional[str], output_key: str, template: str,
                       jump_forward: bool = True, speculate: bool = True,
                       draft_tokens: int = DEFAULT_DRAFT_TOKENS) -> "SeqGPTTyping":
    return SeqGPTTyping(nlp.vocab, name, labels=labels, model=model, batch_size=batch_size,
                        max_new_tokens=max_new_tokens, num_beams=num_beams, max_input_tokens=max_input_tokens,
                        constrained=constrained, multi_label=multi_label, scoring=scoring, spans_key=spans_key,
                        output_key=output_key, template=template, jump_forward=jump_forward,
                        speculate=speculate, draft_tokens=draft_tokens)


class SeqGPTTyping(SpanQuestions):
    """Types ``doc.ents`` (or ``doc.spans[spans_key]``): one classification prompt per span.

    The prompt's input is ``template`` with ``{span}`` (the span's text) and ``{text}`` (its
    sentence when the Doc has sentences, else the window of at most ``max_input_tokens``
    subwords holding it). Single-label: each span gets the chosen label (a span the answer
    names no label for keeps its own, counted in ``stats["untyped"]``); entities carry the
    score in ``span._.seqgpt_score``, a span group in ``attrs["scores"]``. ``multi_label``:
    ``doc.spans[output_key]`` holds one span per label that applies, scores in
    ``attrs["scores"]``, and the typed spans are left as they are. Scores are 1.0 when
    generating, the model's probabilities with ``scoring`` (as in ``seqgpt_textcat``). A span
    no window holds whole is left untyped and counted in ``stats["over_window"]``.
    """

    placeholders = ("span",)

    def __init__(self, vocab, name: str, *, output_key: str, **settings):
        super().__init__(vocab, name, **settings)
        self.output_key = output_key

    def questions(self, doc: Doc):
        return ((target, [span]) for target, span in enumerate(self.targets(doc)))

    def _write_cats(self, docs: Sequence[Doc], requests: Sequence[SpanRequest], values: np.ndarray) -> None:
        """Each span's label (or labels) from its row of ``values`` (requests x labels)."""
        rows: Dict[tuple, np.ndarray] = {(r.doc_index, r.target): row for r, row in zip(requests, values)}
        for doc_index, doc in enumerate(docs):
            targets = list(self.targets(doc))
            if self.multi_label:
                typed = [(Span(doc, span.start, span.end, label=label), float(score))
                         for i, span in enumerate(targets) if (doc_index, i) in rows
                         for label, score in zip(self.labels, rows[doc_index, i]) if score >= 0.5]
                group = SpanGroup(doc, name=self.output_key, spans=[span for span, _ in typed])
                group.attrs["scores"] = [score for _, score in typed]
                doc.spans[self.output_key] = group
                continue
            relabelled, scores = [], []
            for i, span in enumerate(targets):
                row = rows.get((doc_index, i))
                if row is None or not row.any():
                    self.stats["untyped"] += int(row is not None)
                    relabelled.append(span)
                    scores.append(None)
                    continue
                best = int(row.argmax())
                relabelled.append(Span(doc, span.start, span.end, label=self.labels[best]))
                scores.append(float(row[best]))
            if self.spans_key is None:
                doc.ents = relabelled
                for span, score in zip(doc.ents, scores):
                    span._.set(SCORE_ATTR, score)
            else:
                group = SpanGroup(doc, name=self.spans_key, spans=relabelled)
                group.attrs["scores"] = scores
                doc.spans[self.spans_key] = group

    def score(self, examples, **kwargs) -> Dict:
        """``typing_p/r/f`` (and per type) over the typed spans, or over ``output_key`` when multi-label."""
        validate_examples(examples, "SeqGPTTyping.score")
        key = self.output_key if self.multi_label else self.spans_key

        def getter(doc, attr):
            return doc.ents if key is None else doc.spans.get(key, [])

        return Scorer.score_spans(examples, "typing", getter=getter, has_annotation=None, **kwargs)
