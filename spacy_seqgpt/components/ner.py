"""``seqgpt_ner``: entities (or any spans) for labels chosen at ``add_pipe``."""
from typing import Callable, Dict, List, Optional, Sequence, Union

from spacy.language import Language
from spacy.tokens import Doc

from ..decoding import Asker, Decoding, Request
from ..models import HFModel
from ..prompts import DEFAULT_LABEL_CHUNK_SIZE, EXTRACT, LabelSpec, chunk_labels, prompt_labels
from ..validation import check_spans_key
from .extraction import SpanExtraction
from .pipe import SETTINGS, SeqGPTPipe
from .scorers import scorer_ref
from .spans import ScoredSpan, write_spans


@Language.factory(
    "seqgpt_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={"labels": [], **SETTINGS, "label_chunk_size": DEFAULT_LABEL_CHUNK_SIZE, "alignment_mode": "expand",
                    "case_sensitive": False, "spans_key": None, "overwrite": False, "threshold": 0.0,
                    "scorer": scorer_ref("spans")},
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_seqgpt_ner(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]], model: Union[str, HFModel],
                    decoding: Decoding, label_chunk_size: int, alignment_mode: str, case_sensitive: bool,
                    spans_key: Optional[str], overwrite: bool, threshold: float, scorer: Callable) -> "SeqGPTNER":
    return SeqGPTNER(nlp.vocab, name, labels=labels, model=model, decoding=decoding,
                     label_chunk_size=label_chunk_size, alignment_mode=alignment_mode, case_sensitive=case_sensitive,
                     spans_key=spans_key, overwrite=overwrite, threshold=threshold, scorer=scorer)


class SeqGPTNER(SeqGPTPipe):
    """Asks the model to extract spans for each label and writes those found in the text
    (``components.extraction`` reads them): to ``doc.ents`` with each score in
    ``span._.seqgpt_score``, or to ``doc.spans[spans_key]`` with the scores in
    ``attrs["scores"]``; what is there already is kept unless ``overwrite``. Spans scored below
    ``threshold`` are not written (``stats["below_threshold"]``).
    """

    def __init__(self, vocab, name: str, *, labels: LabelSpec, label_chunk_size: int, alignment_mode: str,
                 case_sensitive: bool, spans_key: Optional[str], overwrite: bool = False, threshold: float,
                 **settings):
        super().__init__(vocab, name, threshold=threshold, **settings)
        self.overwrite = bool(overwrite)
        self.label_map = prompt_labels(labels, component=name)
        self.label_chunks = chunk_labels(list(self.label_map.values()), label_chunk_size)
        self.spans_key = check_spans_key(spans_key, name)
        self.extraction = SpanExtraction(name, {text: label for label, text in self.label_map.items()},
                                         alignment_mode=alignment_mode, case_sensitive=case_sensitive,
                                         decoding=self.decoding, threshold=self.threshold, stats=self.stats)

    @property
    def labels(self) -> tuple:
        return tuple(self.label_map)

    def make_requests(self, docs: Sequence[Doc], asker: Optional[Asker] = None) -> List[Request]:
        return (asker or self.asker()).windows(docs, lambda _: (EXTRACT, self.label_chunks))

    def predict(self, docs: Sequence[Doc]) -> List[List[ScoredSpan]]:
        asker = self.asker()
        return self.extraction.ask(asker, docs, self.make_requests(docs, asker))

    def set_annotations(self, docs: Sequence[Doc], predictions: Sequence[List[ScoredSpan]]) -> None:
        for doc, scored in zip(docs, predictions):
            write_spans(doc, self.spans_key, self.kept(scored), overwrite=self.overwrite)

    def scorer_settings(self) -> dict:
        return {"spans_key": self.spans_key}
