"""``seqgpt_ner``: entities (or any spans) for labels chosen at ``add_pipe``."""
from typing import Callable, Dict, List, Optional, Sequence, Union

from spacy.language import Language
from spacy.tokens import Doc

from ..models import HFModel
from ..prompts import DEFAULT_LABEL_CHUNK_SIZE, EXTRACT, LabelSpec, chunk_labels, prompt_labels
from ..validation import check_spans_key
from .extraction import SpanExtraction
from .pipe import SETTINGS, SeqGPTPipe
from .scorers import scorer_ref
from .spans import ScoredSpan, add_ents, add_spans


@Language.factory(
    "seqgpt_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={"labels": [], **SETTINGS, "label_chunk_size": DEFAULT_LABEL_CHUNK_SIZE, "alignment_mode": "expand",
                    "case_sensitive": False, "spans_key": None, "threshold": 0.0, "scorer": scorer_ref("spans")},
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_seqgpt_ner(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]], model: Union[str, HFModel],
                    batch_size: int, max_new_tokens: int, num_beams: int, max_input_tokens: int, constrained: bool,
                    jump_forward: bool, speculate: bool, draft_tokens: int, label_chunk_size: int,
                    alignment_mode: str, case_sensitive: bool, spans_key: Optional[str], threshold: float,
                    scorer: Callable) -> "SeqGPTNER":
    return SeqGPTNER(nlp.vocab, name, labels=labels, model=model, batch_size=batch_size,
                     max_new_tokens=max_new_tokens, num_beams=num_beams, max_input_tokens=max_input_tokens,
                     constrained=constrained, jump_forward=jump_forward, speculate=speculate,
                     draft_tokens=draft_tokens, label_chunk_size=label_chunk_size, alignment_mode=alignment_mode,
                     case_sensitive=case_sensitive, spans_key=spans_key, threshold=threshold, scorer=scorer)


class SeqGPTNER(SeqGPTPipe):
    """Asks the model to extract spans for each label and writes those found in the text
    (``components.extraction`` reads them): to ``doc.ents`` with each score in
    ``span._.seqgpt_score`` (entities already there are kept), or to ``doc.spans[spans_key]``
    with the scores in ``attrs["scores"]``. Spans scored below ``threshold`` are not written
    (``stats["below_threshold"]``).
    """

    def __init__(self, vocab, name: str, *, labels: LabelSpec, label_chunk_size: int, alignment_mode: str,
                 case_sensitive: bool, spans_key: Optional[str], threshold: float, **settings):
        super().__init__(vocab, name, threshold=threshold, **settings)
        self.label_map = prompt_labels(labels, component=name)
        self.label_chunks = chunk_labels(list(self.label_map.values()), label_chunk_size)
        self.spans_key = check_spans_key(spans_key, name)
        self.extraction = SpanExtraction(name, {text: label for label, text in self.label_map.items()},
                                         alignment_mode=alignment_mode, case_sensitive=case_sensitive,
                                         constrained=self.constrained, stats=self.stats)

    @property
    def labels(self) -> tuple:
        return tuple(self.label_map)

    def make_requests(self, docs: Sequence[Doc]):
        return self.window_requests(docs, EXTRACT, lambda _: self.label_chunks)

    def predict(self, docs: Sequence[Doc]) -> List[List[ScoredSpan]]:
        requests = self.make_requests(docs)
        return self.extraction.per_doc(docs, requests, self.ask(docs, requests, self.extraction.grammar))

    def set_annotations(self, docs: Sequence[Doc], predictions: Sequence[List[ScoredSpan]]) -> None:
        for doc, scored in zip(docs, predictions):
            if self.spans_key is None:
                add_ents(doc, self.kept(scored))
            else:
                add_spans(doc, self.spans_key, self.kept(scored))

    def scorer_settings(self) -> dict:
        return {"spans_key": self.spans_key}
