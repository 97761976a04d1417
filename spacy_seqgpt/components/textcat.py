"""``seqgpt_textcat``: document categories for labels chosen at ``add_pipe``."""
from collections import Counter
from typing import Dict, List, Optional, Sequence, Union

from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Doc
from spacy.training import validate_examples

from ..prompts import CLASSIFY, parse_answer
from .base import MODEL_SETTINGS, Request, SeqGPTComponent


@Language.factory(
    "seqgpt_textcat",
    assigns=["doc.cats"],
    default_config={"labels": [], **MODEL_SETTINGS, "multi_label": False},
    default_score_weights={"cats_score": 1.0, "cats_score_desc": None, "cats_micro_p": None, "cats_micro_r": None,
                           "cats_micro_f": None, "cats_macro_p": None, "cats_macro_r": None,
                           "cats_macro_f": None, "cats_macro_auc": None, "cats_f_per_type": None},
)
def make_seqgpt_textcat(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]], model: str,
                        device: str, dtype: str, quantize: Optional[str], adapter: Optional[str],
                        trust_remote_code: bool, batch_size: int, max_new_tokens: int, num_beams: int,
                        max_input_tokens: int, multi_label: bool) -> "SeqGPTTextcat":
    return SeqGPTTextcat(nlp.vocab, name, labels=labels, model=model, device=device, dtype=dtype,
                         quantize=quantize, adapter=adapter, trust_remote_code=trust_remote_code,
                         batch_size=batch_size, max_new_tokens=max_new_tokens, num_beams=num_beams,
                         max_input_tokens=max_input_tokens, multi_label=multi_label)


class SeqGPTTextcat(SeqGPTComponent):
    """Asks the model which of the labels apply and writes ``doc.cats`` for every label.

    A label's score is the share of the Doc's windows whose answer chose it (one window for
    most Docs, so 1.0 or 0.0). Unless ``multi_label``, only the first label of an answer counts.
    """

    task = CLASSIFY

    def __init__(self, vocab, name: str, *, multi_label: bool, **settings):
        super().__init__(vocab, name, **settings)
        self.multi_label = bool(multi_label)

    def set_annotations(self, docs: Sequence[Doc], requests: Sequence[Request], answers: Sequence[str]) -> None:
        votes = [Counter() for _ in docs]
        windows = Counter()
        for request, answer in zip(requests, answers):
            chosen = parse_answer(CLASSIFY, answer, request.labels)
            for prompt_text in chosen if self.multi_label else chosen[:1]:
                votes[request.doc_index][self.label_for(prompt_text)] += 1
            windows[request.doc_index] += 1
        for i, doc in enumerate(docs):
            doc.cats.update({label: votes[i][label] / windows[i] if windows[i] else 0.0 for label in self.labels})

    def score(self, examples, **kwargs) -> Dict:
        validate_examples(examples, "SeqGPTTextcat.score")
        return Scorer.score_cats(examples, "cats", labels=self.labels, multi_label=self.multi_label, **kwargs)
