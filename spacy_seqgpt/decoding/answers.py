"""What the decoder is asked and what it answers."""
from dataclasses import dataclass, field
from typing import Hashable, List, Tuple

import numpy as np

from ..prompts import locate_spans


@dataclass
class Query:
    """One prompt; queries with equal ``group`` share their common leading tokens."""

    prompt: str
    group: Hashable = None
    grammar: object = None  # a kernels.constraints grammar, or None for free decoding


@dataclass
class Answer:
    """A generated answer: its text and each token's log-probability (end-of-sequence excluded).
    An answer made from text alone has no tokens, and every part of it probability 1.
    ``complete`` is False when ``max_new_tokens`` cut the answer short. ``found``: what the span
    search found beside the answer (``decoding.span_search``), ``(line, span, probability)``, a
    line being the answer's line of the prompt's label of that index, best first."""

    text: str
    tokens: List[int] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    token_ends: List[int] = field(default_factory=list)  # byte offset in the UTF-8 answer where each token ends
    complete: bool = True
    found: List[Tuple[int, str, float]] = field(default_factory=list)

    def probability(self, start: int, end: int) -> float:
        """Probability of the tokens that wrote characters ``start:end`` of ``text``."""
        byte_start = len(self.text[:start].encode("utf8"))
        byte_end = byte_start + len(self.text[start:end].encode("utf8"))
        total, token_start = 0.0, 0
        for token_end, logprob in zip(self.token_ends, self.logprobs):
            if token_start < byte_end and token_end > byte_start:
                total += logprob
            token_start = token_end
        return float(np.exp(total))

    def written_spans(self, label_texts: List[str]) -> List[Tuple[str, str, float]]:
        """``(label text, span, probability)`` of each span the answer wrote, in order, scored by
        the tokens that wrote it."""
        return [(label, span, self.probability(offset, offset + len(span)))
                for label, span, offset in locate_spans(self.text, label_texts)]

    def found_spans(self, label_texts: List[str]) -> List[Tuple[str, str, float]]:
        """``(label text, span, probability)`` of each span the span search found, best first."""
        return [(label_texts[line], span, probability) for line, span, probability in self.found]
