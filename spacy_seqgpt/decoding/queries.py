"""What a document is asked: each window of its text times each chunk of labels, as decoder queries.

Shared by the components and by ``seqgpt evaluate``, so evaluation scores the decoding the
pipeline runs: the same windows (at most ``max_input_tokens`` subwords, on sentence
boundaries when the Doc has them), the same prompts, the same answer grammars.
"""
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple

from spacy.tokens import Doc

from ..kernels.charclass import splits_word
from ..kernels.constraints import ExtractionGrammar
from ..prompts import LINE_BREAKS, build_prompt
from ..text.windows import subword_starts, window_ranges
from .answers import Query

# Line breaks would end the prompt's input field early; each becomes one space, so offsets hold.
LINE_BREAKS_TO_SPACES = str.maketrans({char: " " for char in LINE_BREAKS})


@dataclass
class Request:
    """One prompt: a window of one Doc, asked about some labels (their prompt texts).

    ``ids``: the label each prompt text stands for where it is not the component's own (a Doc's
    own questions, an event's roles); ``about``: what on the Doc the prompt asks about (a span's
    index, a pair's token bounds, a trigger's index)."""

    doc_index: int
    start_char: int
    text: str
    task: str  # prompts.EXTRACT or prompts.CLASSIFY
    labels: List[str]
    ids: Optional[Dict[str, str]] = None
    about: Hashable = None


# For a Doc's index: its task and the label chunks asked per window.
Asks = Callable[[int], Tuple[str, List[List[str]]]]


def window_requests(docs: Sequence[Doc], tokenizer, asks: Asks, max_input_tokens: int) -> List[Request]:
    """A request per window of each Doc and chunk of labels it ``asks``."""
    requests = []
    for doc_index, doc in enumerate(docs):
        task, chunks = asks(doc_index)
        for start, end in window_ranges(doc, subword_starts(tokenizer, doc.text), max_input_tokens):
            text = doc.text[start:end].translate(LINE_BREAKS_TO_SPACES)
            requests.extend(Request(doc_index, start, text, task, chunk) for chunk in chunks)
    return requests


def make_queries(requests: Sequence[Request], grammar: Optional[Callable[[Request], object]] = None) -> List[Query]:
    """The decoder's queries: a window's chunks share their prompt prefix; ``grammar(request)``
    constrains each answer (None: free decoding)."""
    return [Query(build_prompt(request.task, request.text, request.labels), (request.doc_index, request.start_char),
                  grammar(request) if grammar is not None else None)
            for request in requests]


@lru_cache(maxsize=64)  # a window's label chunks ask for the same text
def word_edges(text: str) -> Tuple[List[int], List[int]]:
    """Where a span of ``text`` may start and end for ``find_phrases``: not inside a word of a
    spaced script, and not on a space."""
    cuts = [i for i in range(len(text) + 1) if i in (0, len(text)) or not splits_word(text[i - 1], text[i])]
    return ([i for i in cuts if i < len(text) and not text[i].isspace()],
            [i for i in cuts if i > 0 and not text[i - 1].isspace()])


def extraction_grammar(text: str, labels: Sequence[str], token_edges: Optional[Tuple[set, set]] = None
                       ) -> ExtractionGrammar:
    """The answer grammar of extracting ``labels`` from ``text``: spans begin and end where
    ``find_phrases`` can match them, and also on ``token_edges`` (starts, ends) when given."""
    starts, ends = word_edges(text)
    if token_edges is not None:
        starts = [i for i in starts if i in token_edges[0]]
        ends = [i for i in ends if i in token_edges[1]]
    return ExtractionGrammar(text, list(labels), (starts, ends))
