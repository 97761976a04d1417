"""The one object that asks: a loaded model, the decoding settings, and the counts of what was left out.

A component hands its parts (extraction, classification, the questions about spans) an
:class:`Asker` for each batch of Docs; the parts build their requests (``decoding.requests``)
and ask through it, and never see the component. ``seqgpt evaluate`` asks through one too.
"""
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from spacy.tokens import Doc

from ..models.shared import SharedModel
from .answers import Answer
from .decoder import Decoder
from .requests import (Asks, ContextQueries, Questions, Request, SpanContexts, context_requests, make_queries,
                       span_requests, window_requests)
from .settings import Decoding

# For a request about one of the Docs: its answer grammar (None: free decoding).
Grammar = Callable[[Doc, Request], object]


class Asker:
    """Asks ``shared`` as ``decoding`` says; ``stats`` counts questions left out
    (``over_window``) and whatever the parts count."""

    def __init__(self, shared: SharedModel, decoding: Decoding, stats: Optional[Counter] = None):
        self.shared = shared
        self.decoding = decoding
        self.stats = Counter() if stats is None else stats
        self._contexts: Dict[int, Tuple[Doc, SpanContexts]] = {}

    @property
    def tokenizer(self):
        return self.shared.tokenizer

    def windows(self, docs: Sequence[Doc], asks: Asks) -> List[Request]:
        """A request per window of each Doc and chunk of labels it ``asks`` (``asks(doc index)``:
        the task and its chunks of label prompt texts)."""
        return window_requests(docs, self.tokenizer, asks, self.decoding.max_input_tokens)

    def contexts(self, doc: Doc) -> SpanContexts:
        """Where questions about spans of ``doc`` find their context; one per Doc this asker asks
        about, so a Doc is cut into subwords once however many questions it gets."""
        if id(doc) not in self._contexts:  # (the Doc is kept with it: its id stays its own)
            self._contexts[id(doc)] = doc, SpanContexts(doc, self.tokenizer, self.decoding.max_input_tokens)
        return self._contexts[id(doc)][1]

    def about_spans(self, docs: Sequence[Doc], template: str, questions: Questions,
                    label_texts: List[str]) -> List[Request]:
        """A classification request per question about spans of ``docs``; a question whose spans
        are over ``max_input_tokens`` on their own is left out (``stats["over_window"]``)."""
        return self._counted(span_requests(docs, self.contexts, template, questions, label_texts))

    def in_context(self, docs: Sequence[Doc], queries: ContextQueries, chunk_size: int) -> List[Request]:
        """Extraction requests of queries about spans over each span's context (an event's roles
        about its trigger); a span over ``max_input_tokens`` on its own is left out
        (``stats["over_window"]``)."""
        return self._counted(context_requests(docs, self.contexts, queries, chunk_size))

    def _counted(self, built: Tuple[List[Request], int]) -> List[Request]:
        requests, left_out = built
        if left_out:
            self.stats["over_window"] += left_out
        return requests

    def ask(self, docs: Sequence[Doc], requests: Sequence[Request], grammar: Optional[Grammar] = None, *,
            progress: bool = False, span_floor: float = 0.0) -> List[Answer]:
        """The model's answers to ``requests`` about ``docs``, batched together; with
        ``constrained``, each follows ``grammar(doc, request)`` (kernels.constraints); with
        ``span_search``, extraction answers also hold every span at least ``span_floor`` likely."""
        constrain = (lambda request: grammar(docs[request.doc_index], request)
                     ) if self.decoding.constrained and grammar is not None else None
        return self.decoder().decode(make_queries(requests, constrain), progress=progress, span_floor=span_floor)

    def continuation_logprobs(self, prompts: Sequence[str], continuations: Sequence[List[int]]) -> np.ndarray:
        """``(prompts, continuations)``: the log-probability of each continuation after each prompt."""
        return self.decoder().continuation_logprobs(prompts, continuations)

    def decoder(self) -> Decoder:
        return Decoder(self.shared, self.decoding)
