"""Questions about spans already on a Doc, the way SeqGPT asks span-conditioned tasks.

The prompt's input is a template with a placeholder per span and ``{text}``, the spans'
context: their sentence when the Doc has sentences, else the window of at most
``max_input_tokens`` subwords holding them all; a window of that budget centred on the spans
where the sentence is longer. Typing, relations and event types ask them.
"""
from functools import cached_property
from typing import Callable, Hashable, Iterable, List, Optional, Sequence, Tuple

from spacy.tokens import Doc, Span

from ..decoding import Request
from ..decoding.queries import LINE_BREAKS_TO_SPACES
from ..prompts import CLASSIFY
from ..templates import fill_template
from ..text.windows import SubwordCounter, centred_window, subword_starts, window_ranges
from ..validation import check_key


class SpanContexts:
    """Where questions about spans of ``doc`` find their context, never more than ``max_tokens``
    subwords whatever the text: the spans' sentence when the Doc has sentences, else the first
    window (``text.windows``) holding them; where that is over budget (a run-on sentence), a
    window centred on the spans inside it, cut between spaCy tokens."""

    def __init__(self, doc: Doc, tokenizer, max_tokens: int):
        self.doc, self.tokenizer, self.max_tokens = doc, tokenizer, max_tokens
        self._windows = None

    @cached_property
    def starts(self) -> List[int]:
        """Where each subword of the Doc starts: counted once, and only for a Doc asked about."""
        return subword_starts(self.tokenizer, self.doc.text)

    @cached_property
    def count(self) -> SubwordCounter:
        return SubwordCounter(self.starts)

    def of(self, spans: Sequence[Span]) -> Optional[Tuple[int, int]]:
        """``(start char, end char)`` of the context of ``spans``; None when the spans alone are
        over budget."""
        doc = self.doc
        start, end = min(s.start for s in spans), max(s.end for s in spans)
        if doc.has_annotation("SENT_START"):
            region = doc[start].sent.start, doc[end - 1].sent.end
            sentences = doc[region[0]:region[1]]
            if self.count(sentences.start_char, sentences.end_char) <= self.max_tokens:
                return _trimmed(sentences)
        else:
            region = 0, len(doc)
            if self._windows is None:
                self._windows = window_ranges(doc, self.starts, self.max_tokens)
            first, last = doc[start].idx, doc[end - 1].idx + len(doc[end - 1])
            window = next(((s, e) for s, e in self._windows if s <= first and last <= e), None)
            if window is not None:
                return window
        return centred_window(doc, self.count, start, end, region, self.max_tokens)


def _trimmed(span: Span) -> Tuple[int, int]:
    """``span``'s characters without the whitespace tokens at its edges."""
    tokens = [token for token in span if not token.is_space]  # (the spans asked about are among them)
    return tokens[0].idx, tokens[-1].idx + len(tokens[-1])


# For a Doc (its index, itself): (what the question is about, {placeholder: span}) per question.
Questions = Callable[[int, Doc], Iterable[Tuple[Hashable, dict]]]


def span_requests(pipe, docs: Sequence[Doc], template: str, questions: Questions, labels: List[str]) -> List[Request]:
    """A classification request of ``pipe`` per question about spans of ``docs`` (``about``:
    what it asks about); a question whose spans no window of ``pipe.max_input_tokens``
    subwords holds (the spans alone are over budget) is left out and counted in
    ``pipe.stats["over_window"]``."""
    requests = []
    for doc_index, doc in enumerate(docs):
        contexts = SpanContexts(doc, pipe.shared.tokenizer, pipe.max_input_tokens)
        for about, spans in questions(doc_index, doc):
            context = contexts.of(list(spans.values()))
            if context is None:
                pipe.stats["over_window"] += 1
                continue
            start, end = context
            text = fill_template(template, text=doc.text[start:end], **{key: span.text for key, span in spans.items()})
            requests.append(Request(doc_index, start, text.translate(LINE_BREAKS_TO_SPACES), CLASSIFY, labels,
                                    about=about))
    return requests


def input_spans(doc: Doc, input_key: Optional[str]) -> Sequence[Span]:
    """The spans a component reads: ``doc.ents``, or ``doc.spans[input_key]`` (none if absent)."""
    if input_key is None:
        return doc.ents
    return doc.spans[input_key] if input_key in doc.spans else []


def check_input_key(input_key: Optional[str], owner: str) -> Optional[str]:
    return check_key(input_key, owner, "input_key", optional=True, null_means="read doc.ents")
