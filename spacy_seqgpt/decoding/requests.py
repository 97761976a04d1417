"""What a document is asked, as decoder queries: the one place prompts are built.

Each window of a Doc's text times each chunk of labels (``window_requests``); a question about
spans already on a Doc in their context (``span_requests``, ``SpanContexts``); queries about a
span over its context (``context_requests``: an event's roles about its trigger); and the
answer grammars of both tasks. The components, ``SeqGPT`` (through them) and ``seqgpt evaluate`` all
ask through here, so evaluation scores the decoding the pipeline runs: the same windows (at
most ``max_input_tokens`` subwords, on sentence boundaries when the Doc has them), the same
prompts, the same answer grammars.
"""
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

from spacy.tokens import Doc, Span

from ..kernels.charclass import splits_word
from ..kernels.constraints import ClassificationGrammar, ExtractionGrammar
from ..prompts import CLASSIFY, EXTRACT, LINE_BREAKS, build_prompt, check_label, chunk_labels, parse_answer
from ..templates import fill_template
from ..text.windows import SubwordCounter, centred_window, subword_starts, window_ranges
from .answers import Query

# Line breaks would end the prompt's input field early; each becomes one space, so offsets hold.
LINE_BREAKS_TO_SPACES = str.maketrans({char: " " for char in LINE_BREAKS})


@dataclass
class Request:
    """One prompt: a window of one Doc (``text``, from ``start_char``), asked about labels.

    ``label_texts``: the labels as the prompt writes them (their prompt texts); ``label_of``:
    the label each prompt text stands for where it is not the component's own (a Doc's own
    questions, an event's roles); ``subject``: what on the Doc a question about spans asks
    about (a span's index, a pair's token bounds, a trigger's index)."""

    doc_index: int
    start_char: int
    text: str
    task: str  # prompts.EXTRACT or prompts.CLASSIFY
    label_texts: List[str]
    label_of: Optional[Dict[str, str]] = None
    subject: Hashable = None


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
    return [Query(build_prompt(request.task, request.text, request.label_texts), (request.doc_index,
                                                                                  request.start_char),
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


def chosen_labels(answer_text: str, label_texts: Sequence[str], multi_label: bool) -> List[str]:
    """The label texts a classification answer chooses: every one it names with ``multi_label``,
    else its first (what a single-label answer grammar lets it write anyway)."""
    named = parse_answer(CLASSIFY, answer_text, label_texts)
    return named if multi_label else named[:1]


@lru_cache(maxsize=256)  # a grammar keeps no state: one serves every prompt offering these labels
def classification_grammar(label_texts: Tuple[str, ...], exclusive: bool) -> ClassificationGrammar:
    """The answer grammar of classifying with ``label_texts``: one of them (``exclusive``), or
    any of them, each at most once."""
    return ClassificationGrammar(list(label_texts), exclusive=exclusive)


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


def span_requests(docs: Sequence[Doc], contexts: Callable[[Doc], SpanContexts], template: str,
                  questions: Questions, label_texts: List[str]) -> Tuple[List[Request], int]:
    """A classification request per question about spans of ``docs`` (``subject``: what it
    asks about), and how many questions were left out: those whose spans no context of
    ``contexts(doc)`` holds (the spans alone are over budget)."""
    requests, left_out = [], 0
    for doc_index, doc in enumerate(docs):
        for subject, spans in questions(doc_index, doc):
            context = contexts(doc).of(list(spans.values()))
            if context is None:
                left_out += 1
                continue
            start, end = context
            text = fill_template(template, text=doc.text[start:end], **{key: span.text for key, span in spans.items()})
            requests.append(Request(doc_index, start, text.translate(LINE_BREAKS_TO_SPACES), CLASSIFY, label_texts,
                                    subject=subject))
    return requests, left_out


# For a Doc (its index, itself): (what the queries are about, the span whose context they read,
# {query: the label its spans get}) per span asked about.
ContextQueries = Callable[[int, Doc], Iterable[Tuple[Hashable, Span, Dict[str, str]]]]


def context_requests(docs: Sequence[Doc], contexts: Callable[[Doc], SpanContexts], queries: ContextQueries,
                     chunk_size: int) -> Tuple[List[Request], int]:
    """Extraction requests of queries about a span (an event's roles about its trigger) over the
    span's context, the queries in chunks of ``chunk_size``, and how many spans were left out
    (over budget on their own)."""
    requests, left_out = [], 0
    for doc_index, doc in enumerate(docs):
        for subject, span, label_of in queries(doc_index, doc):
            context = contexts(doc).of([span])
            if context is None:
                left_out += 1
                continue
            text = doc.text[context[0]:context[1]].translate(LINE_BREAKS_TO_SPACES)
            requests.extend(Request(doc_index, context[0], text, EXTRACT, chunk, label_of, subject)
                            for chunk in _query_chunks(list(label_of), chunk_size))
    return requests, left_out


def _query_chunks(queries: List[str], size: int) -> List[List[str]]:
    """Queries that may share a prompt go in chunks of ``size``; one that holds a separator alone."""
    shareable, alone = [], []
    for query in queries:
        try:
            check_label(query)
            shareable.append(query)
        except ValueError:
            alone.append([query])
    return (chunk_labels(shareable, size) if shareable else []) + alone
