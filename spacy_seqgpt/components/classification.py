"""The classification part of a component: its answer grammar, and each label's value per prompt.

Generating (the default), a label's value is 1.0 where the answer chose it (unless
``multi_label``, only an answer's first label counts). With ``probabilities``, nothing is generated:
every label is ranked by the model's likelihood of answering it, all labels of a prompt in one
forward pass. Exclusive labels: the answer "label" then end, normalised over the labels, so
they sum to 1. ``multi_label``: the probability that the answer names the label first and
then ends or names another.
"""
from typing import Dict, Sequence

import numpy as np

from ..decoding import Answer, Asker, Request, make_queries
from ..decoding.requests import chosen_labels, classification_grammar
from ..kernels.constraints import ClassificationGrammar
from ..prompts import LABEL_SEPARATOR


class LabelClassification:
    """``label_map``: ``{label: prompt text}``, the labels every prompt offers."""

    def __init__(self, label_map: Dict[str, str], *, multi_label: bool, probabilities: bool):
        self.label_map = label_map
        self.labels = tuple(label_map)
        self.texts = list(label_map.values())  # what every prompt offers, in the labels' order
        self.multi_label = bool(multi_label)
        self.probabilities = bool(probabilities)
        self._column = {text: i for i, text in enumerate(self.texts)}

    def grammar(self, doc=None, request: Request = None) -> ClassificationGrammar:
        """The answer grammar of every prompt (each offers all labels)."""
        return classification_grammar(tuple(self.texts), not self.multi_label)

    def values(self, asker: Asker, docs, requests: Sequence[Request]) -> np.ndarray:
        """``(requests, labels)``: each label's value for each request, asked through ``asker``."""
        if self.probabilities:
            return self.label_probabilities(asker, [query.prompt for query in make_queries(requests)])
        return self.chosen(requests, asker.ask(docs, requests, self.grammar))

    def chosen(self, requests: Sequence[Request], answers: Sequence[Answer]) -> np.ndarray:
        values = np.zeros((len(requests), len(self.labels)))
        for row, (request, answer) in enumerate(zip(requests, answers)):
            for prompt_text in chosen_labels(answer.text, request.label_texts, self.multi_label):
                values[row, self._column[prompt_text]] = 1.0
        return values

    def label_probabilities(self, asker: Asker, prompts: Sequence[str]) -> np.ndarray:
        """``(prompts, labels)``: each label's probability as the answer (see the module's docs)."""
        tokenizer = asker.tokenizer
        answers = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in self.texts]
        ends = [[tokenizer.eos_token_id]]
        if self.multi_label:
            ends.append(tokenizer(LABEL_SEPARATOR, add_special_tokens=False)["input_ids"][:1])
        logprobs = asker.continuation_logprobs(prompts, [answer + end for end in ends for answer in answers])
        by_end = logprobs.reshape(len(prompts), len(ends), len(answers))
        if self.multi_label:
            return np.clip(np.exp(by_end).sum(1), 0.0, 1.0)
        import torch

        return torch.softmax(torch.from_numpy(by_end[:, 0]), 1).numpy()
