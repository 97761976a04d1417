"""The classification part of a component: its answer grammar, and each label's value per prompt.

Generating (the default), a label's value is 1.0 where the answer chose it (unless
``multi_label``, only an answer's first label counts). With ``scoring``, nothing is generated:
every label is ranked by the model's likelihood of answering it, all labels of a prompt in one
forward pass. Exclusive labels: the answer "label" then end, normalised over the labels, so
they sum to 1. ``multi_label``: the probability that the answer names the label first and
then ends or names another.
"""
from functools import cached_property
from typing import Dict, Sequence

import numpy as np

from ..decoding import Answer, Request, make_queries
from ..kernels.constraints import ClassificationGrammar
from ..prompts import CLASSIFY, LABEL_SEPARATOR, parse_answer


class LabelClassification:
    """``label_map``: ``{label: prompt text}``, the labels every prompt offers."""

    def __init__(self, label_map: Dict[str, str], *, multi_label: bool, scoring: bool):
        self.label_map = label_map
        self.labels = tuple(label_map)
        self.texts = list(label_map.values())  # what every prompt offers, in the labels' order
        self.multi_label = bool(multi_label)
        self.scoring = bool(scoring)
        self._column = {text: i for i, text in enumerate(self.texts)}

    @cached_property
    def grammar(self) -> ClassificationGrammar:
        # Every prompt offers all labels, and a grammar keeps no state: one serves them all.
        return ClassificationGrammar(self.texts, exclusive=not self.multi_label)

    def __getstate__(self) -> dict:
        # a compiled grammar does not pickle; another process compiles its own
        return {name: value for name, value in self.__dict__.items() if name != "grammar"}

    def values(self, pipe, docs, requests: Sequence[Request]) -> np.ndarray:
        """``(requests, labels)``: each label's value for each request, asked through ``pipe``."""
        if self.scoring:
            return self.probabilities(pipe, [query.prompt for query in make_queries(requests)])
        return self.chosen(requests, pipe.ask(docs, requests, lambda doc, request: self.grammar))

    def chosen(self, requests: Sequence[Request], answers: Sequence[Answer]) -> np.ndarray:
        values = np.zeros((len(requests), len(self.labels)))
        for row, (request, answer) in enumerate(zip(requests, answers)):
            named = parse_answer(CLASSIFY, answer.text, request.labels)
            for prompt_text in named if self.multi_label else named[:1]:
                values[row, self._column[prompt_text]] = 1.0
        return values

    def probabilities(self, pipe, prompts: Sequence[str]) -> np.ndarray:
        """``(prompts, labels)``: each label's probability as the answer (see the module's docs)."""
        tokenizer = pipe.shared.tokenizer
        answers = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in self.texts]
        ends = [[tokenizer.eos_token_id]]
        if self.multi_label:
            ends.append(tokenizer(LABEL_SEPARATOR, add_special_tokens=False)["input_ids"][:1])
        logprobs = pipe.decoder().continuation_logprobs(prompts, [answer + end for end in ends for answer in answers])
        by_end = logprobs.reshape(len(prompts), len(ends), len(answers))
        if self.multi_label:
            return np.clip(np.exp(by_end).sum(1), 0.0, 1.0)
        import torch

        return torch.softmax(torch.from_numpy(by_end[:, 0]), 1).numpy()
