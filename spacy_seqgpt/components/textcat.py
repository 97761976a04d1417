"""``seqgpt_textcat``: document categories for labels chosen at ``add_pipe``."""
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from spacy.language import Language
from spacy.tokens import Doc

from ..decoding import Asker, Decoding, Request
from ..models import HFModel
from ..prompts import CLASSIFY, LabelSpec, prompt_labels
from .classification import LabelClassification
from .pipe import SETTINGS, SeqGPTPipe
from .scorers import scorer_ref


@Language.factory(
    "seqgpt_textcat",
    assigns=["doc.cats"],
    default_config={"labels": [], **SETTINGS, "multi_label": False, "probabilities": False,
                    "scorer": scorer_ref("cats")},
    default_score_weights={"cats_score": 1.0, "cats_score_desc": None, "cats_micro_p": None, "cats_micro_r": None,
                           "cats_micro_f": None, "cats_macro_p": None, "cats_macro_r": None,
                           "cats_macro_f": None, "cats_macro_auc": None, "cats_f_per_type": None},
)
def make_seqgpt_textcat(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]],
                        model: Union[str, HFModel], decoding: Decoding, multi_label: bool, probabilities: bool,
                        scorer: Callable) -> "SeqGPTTextcat":
    return SeqGPTTextcat(nlp.vocab, name, labels=labels, model=model, decoding=decoding, multi_label=multi_label,
                         probabilities=probabilities, scorer=scorer)


class SeqGPTTextcat(SeqGPTPipe):
    """Asks the model which of the labels apply and writes ``doc.cats`` for every label: each
    label's value (``components.classification``) averaged over the Doc's windows. Generating,
    that is the share of windows whose answer chose the label (one window for most Docs, so
    1.0 or 0.0); with ``probabilities``, the model's probabilities.
    """

    def __init__(self, vocab, name: str, *, labels: LabelSpec, multi_label: bool, probabilities: bool, **settings):
        super().__init__(vocab, name, **settings)
        self.classification = LabelClassification(prompt_labels(labels, component=name), multi_label=multi_label,
                                                  probabilities=probabilities)

    @property
    def labels(self) -> tuple:
        return self.classification.labels

    def make_requests(self, docs: Sequence[Doc], asker: Optional[Asker] = None) -> List[Request]:
        return (asker or self.asker()).windows(docs, lambda _: (CLASSIFY, [self.classification.texts]))

    def predict(self, docs: Sequence[Doc]) -> np.ndarray:
        """``(docs, labels)``: each label's value, averaged over each Doc's windows."""
        asker = self.asker()
        requests = self.make_requests(docs, asker)
        values = self.classification.values(asker, docs, requests)
        totals = np.zeros((len(docs), len(self.labels)))
        windows = np.zeros(len(docs))
        for request, row in zip(requests, values):
            totals[request.doc_index] += row
            windows[request.doc_index] += 1
        return totals / np.maximum(windows, 1)[:, None]

    def set_annotations(self, docs: Sequence[Doc], predictions: np.ndarray) -> None:
        for doc, row in zip(docs, predictions):
            doc.cats.update({label: float(value) for label, value in zip(self.labels, row)})

    def scorer_settings(self) -> dict:
        return {"labels": self.labels, "multi_label": self.classification.multi_label}
