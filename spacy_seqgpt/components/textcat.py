"""``seqgpt_textcat``: document categories for labels chosen at ``add_pipe``."""
from functools import cached_property
from typing import Dict, List, Optional, Sequence, Union

from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Doc
from spacy.training import validate_examples

import numpy as np

from ..decoding import DEFAULT_DRAFT_TOKENS, Answer, Request, make_queries
from ..kernels.constraints import ClassificationGrammar
from ..models import HFModel
from ..prompts import CLASSIFY, LABEL_SEPARATOR, parse_answer
from .base import SETTINGS, SeqGPTComponent


@Language.factory(
    "seqgpt_textcat",
    assigns=["doc.cats"],
    default_config={"labels": [], **SETTINGS, "multi_label": False, "scoring": False},
    default_score_weights={"cats_score": 1.0, "cats_score_desc": None, "cats_micro_p": None, "cats_micro_r": None,
                           "cats_micro_f": None, "cats_macro_p": None, "cats_macro_r": None,
                           "cats_macro_f": None, "cats_macro_auc": None, "cats_f_per_type": None},
)
def make_seqgpt_textcat(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]],
                        model: Union[str, HFModel], batch_size: int, max_new_tokens: int, num_beams: int,
                        max_input_tokens: int, constrained: bool, multi_label: bool, scoring: bool,
                        # model settings as pipelines saved by 0.1 have them (see models.spec.model_settings)
                        device: Optional[str] = None, dtype: Optional[str] = None, quantize: Optional[str] = None,
                        adapter: Optional[str] = None, trust_remote_code: Optional[bool] = None,
                        unmask: Optional[str] = None,
                        jump_forward: bool = True, speculate: bool = True,
                        draft_tokens: int = DEFAULT_DRAFT_TOKENS) -> "SeqGPTTextcat":
    return SeqGPTTextcat(nlp.vocab, name, labels=labels, model=model, batch_size=batch_size,
                         max_new_tokens=max_new_tokens, num_beams=num_beams, max_input_tokens=max_input_tokens,
                         constrained=constrained, multi_label=multi_label, scoring=scoring, device=device,
                         dtype=dtype, quantize=quantize, adapter=adapter, trust_remote_code=trust_remote_code,
                         unmask=unmask, jump_forward=jump_forward,
                         speculate=speculate, draft_tokens=draft_tokens)


class SeqGPTTextcat(SeqGPTComponent):
    """Asks the model which of the labels apply and writes ``doc.cats`` for every label.

    Generating (the default), a label's score is the share of the Doc's windows whose answer
    chose it (one window for most Docs, so 1.0 or 0.0); unless ``multi_label``, only the first
    label of an answer counts. With ``scoring``, nothing is generated: every label is ranked
    by the model's likelihood of answering it, all labels of a window in one forward pass, and
    ``doc.cats`` holds probabilities (averaged over windows). Exclusive labels: the answer
    "label" then end, normalised over the labels, so they sum to 1. ``multi_label``: the
    probability that the answer names the label first and then ends or names another.
    """

    task = CLASSIFY

    def __init__(self, vocab, name: str, *, multi_label: bool, scoring: bool, **settings):
        super().__init__(vocab, name, **settings)
        self.multi_label = bool(multi_label)
        self.scoring = bool(scoring)

    _process_local = (*SeqGPTComponent._process_local, "classification_grammar")

    @cached_property
    def classification_grammar(self) -> ClassificationGrammar:
        # Every request asks about all labels, and a grammar keeps no state: one serves them all.
        return ClassificationGrammar(list(self.label_map.values()), exclusive=not self.multi_label)

    def grammar(self, doc: Doc, request: Request) -> ClassificationGrammar:
        return self.classification_grammar

    def annotate(self, docs: Sequence[Doc]) -> None:
        if not self.scoring:
            return super().annotate(docs)
        requests = self.make_requests(docs)
        self._write_cats(docs, requests, self.label_probabilities(
            [query.prompt for query in make_queries(requests)]))

    def label_probabilities(self, prompts: Sequence[str]) -> np.ndarray:
        """``(prompts, labels)``: each label's probability as the answer (see the class docs)."""
        tokenizer = self.shared.tokenizer
        answers = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in self.label_map.values()]
        ends = [[tokenizer.eos_token_id]]
        if self.multi_label:
            ends.append(tokenizer(LABEL_SEPARATOR, add_special_tokens=False)["input_ids"][:1])
        logprobs = self.decoder().continuation_logprobs(prompts, [answer + end for end in ends for answer in answers])
        by_end = logprobs.reshape(len(prompts), len(ends), len(answers))
        if self.multi_label:
            return np.clip(np.exp(by_end).sum(1), 0.0, 1.0)
        import torch

        return torch.softmax(torch.from_numpy(by_end[:, 0]), 1).numpy()

    def set_annotations(self, docs: Sequence[Doc], requests: Sequence[Request], answers: Sequence[Answer]) -> None:
        column = {label: i for i, label in enumerate(self.labels)}
        chosen = np.zeros((len(requests), len(self.labels)))
        for row, (request, answer) in enumerate(zip(requests, answers)):
            named = parse_answer(CLASSIFY, answer.text, request.labels)
            for prompt_text in named if self.multi_label else named[:1]:
                chosen[row, column[self.label_for(prompt_text)]] = 1.0
        self._write_cats(docs, requests, chosen)

    def _write_cats(self, docs: Sequence[Doc], requests: Sequence[Request], values: np.ndarray) -> None:
        """``doc.cats``: each label's value (a row per request) averaged over the Doc's windows."""
        totals = np.zeros((len(docs), len(self.labels)))
        windows = np.zeros(len(docs))
        for request, row in zip(requests, values):
            totals[request.doc_index] += row
            windows[request.doc_index] += 1
        for doc, total, count in zip(docs, totals, windows):
            doc.cats.update({label: float(value / max(count, 1)) for label, value in zip(self.labels, total)})

    def score(self, examples, **kwargs) -> Dict:
        validate_examples(examples, "SeqGPTTextcat.score")
        return Scorer.score_cats(examples, "cats", labels=self.labels, multi_label=self.multi_label, **kwargs)
