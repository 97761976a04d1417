"""Classification questions about spans already on a Doc: the base of typing and relations.

SeqGPT reduces span-conditioned tasks to classification: the input is a question that names
the spans in their context (``template`` with a placeholder per span and ``{text}``), the
labels are the answers. The context is the spans' sentence when the Doc has sentences, else
the window of at most ``max_input_tokens`` subwords holding them all.
"""
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

from spacy.tokens import Doc, Span

from ..decoding import Request
from ..decoding.queries import LINE_BREAKS_TO_SPACES
from ..prompts import CLASSIFY, fill_question
from ..text.windows import subword_starts, window_ranges
from .textcat import SeqGPTTextcat


class SpanContexts:
    """Where questions about spans of ``doc`` find their context: the spans' sentence when the
    Doc has sentences, else the first window of at most ``max_tokens`` subwords holding them."""

    def __init__(self, doc: Doc, tokenizer, max_tokens: int):
        self.doc, self.tokenizer, self.max_tokens = doc, tokenizer, max_tokens
        self._windows = None

    def of(self, spans: Sequence[Span]) -> Optional[Tuple[int, int]]:
        """``(start char, end char)`` of the context of ``spans``; None when no window holds them whole."""
        if self.doc.has_annotation("SENT_START") and all(s.sent == spans[0].sent for s in spans):
            return spans[0].sent.start_char, spans[0].sent.end_char
        if self._windows is None:
            self._windows = window_ranges(self.doc, subword_starts(self.tokenizer, self.doc.text), self.max_tokens)
        first, last = min(s.start_char for s in spans), max(s.end_char for s in spans)
        return next(((s, e) for s, e in self._windows if s <= first and last <= e), None)


@dataclass
class SpanRequest(Request):
    """A question about some spans of a Doc: which one of the component's ``questions``, and
    its spans' token bounds (start, end of each span in turn)."""

    target: int = -1
    span_bounds: Tuple[int, ...] = ()


class SpanQuestions(SeqGPTTextcat):
    """A ``seqgpt_textcat`` whose prompts ask about spans; subclasses say which (``questions``)
    and write the answers (``_write_cats``, a row of label values per question)."""

    placeholders: Tuple[str, ...]  # the template's span placeholders, in the order questions give spans

    def __init__(self, vocab, name: str, *, spans_key: Optional[str], template: str, **settings):
        super().__init__(vocab, name, **settings)
        missing = [f"{{{field}}}" for field in (*self.placeholders, "text") if f"{{{field}}}" not in template]
        if missing:
            raise ValueError(f"{name}: template must contain {', '.join(missing)}, got {template!r}")
        self.spans_key = spans_key
        self.template = template

    def targets(self, doc: Doc) -> Sequence[Span]:
        """The spans asked about: ``doc.ents``, or ``doc.spans[spans_key]``."""
        if self.spans_key is None:
            return doc.ents
        return doc.spans[self.spans_key] if self.spans_key in doc.spans else []

    def questions(self, doc: Doc) -> Iterable[Tuple[int, Sequence[Span]]]:
        """``(target, spans)`` for each question about ``doc`` (spans fill the placeholders)."""
        raise NotImplementedError

    def make_requests(self, docs: Sequence[Doc]) -> List[Request]:
        labels = self.label_chunks()[0]
        requests = []
        for doc_index, doc in enumerate(docs):
            contexts = SpanContexts(doc, self.shared.tokenizer, self.max_input_tokens)
            for target, spans in self.questions(doc):
                context = contexts.of(spans)
                if context is None:  # no window holds the spans whole
                    self.stats["over_window"] += 1
                    continue
                start, end = context
                text = fill_question(self.template, text=doc.text[start:end],
                                     **{placeholder: span.text for placeholder, span in zip(self.placeholders, spans)})
                requests.append(SpanRequest(doc_index, start, text.translate(LINE_BREAKS_TO_SPACES), CLASSIFY,
                                            labels, target, tuple(i for span in spans for i in (span.start, span.end))))
        return requests
