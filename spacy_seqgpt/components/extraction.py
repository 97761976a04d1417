"""The extraction part of a component: its answer grammar, and its answers read back as spans.

Each answer phrase is searched in its window; every occurrence becomes a span, scored by the
probability of the answer tokens that wrote the phrase. Phrases that do not occur are dropped
and counted in ``stats["dropped"]`` (``stats["unaligned"]`` for matches that ``alignment_mode``
cannot map to tokens); constrained decoding makes both impossible. The last span of an answer
that ``max_new_tokens`` cut short is left out (``stats["cut"]``): it may end early. With
``decoding.span_search`` the spans the search found beside the answer (``Answer.found``, at
least ``threshold`` likely) are read too (``stats["searched"]``), and of overlapping spans of one
label the likeliest is kept.
"""
from collections import Counter
from typing import Dict, Iterator, List, Sequence, Tuple

from spacy.tokens import Doc, Span

from ..decoding import Answer, Asker, Decoding, Request
from ..decoding.requests import extraction_grammar
from ..kernels.constraints import ExtractionGrammar
from ..text.alignment import ALIGNMENT_MODES, apart_per_label, char_spans_to_tokens, find_phrases
from .spans import ScoredSpan


class SpanExtraction:
    """Reads extraction answers of ``owner``'s requests; ``label_of`` maps a prompt text to the
    label its spans get (a request's own ``label_of`` comes first). ``decoding``: the owner's
    block; ``threshold``: the owner's, the floor of the span search where the block asks for it."""

    def __init__(self, owner: str, label_of: Dict[str, str], *, alignment_mode: str = "expand",
                 case_sensitive: bool = False, decoding: Decoding, threshold: float, stats: Counter):
        if alignment_mode not in ALIGNMENT_MODES:
            raise ValueError(f"{owner}: 'alignment_mode' must be one of {ALIGNMENT_MODES}, got {alignment_mode!r}.")
        decoding.check_floor(threshold, owner)
        self.label_of = label_of
        self.alignment_mode = alignment_mode
        self.case_sensitive = bool(case_sensitive)
        self.constrained = decoding.constrained
        self.threshold = threshold
        self.stats = stats

    def grammar(self, doc: Doc, request: Request) -> ExtractionGrammar:
        """Spans that :meth:`spans` will find and align: they begin and end where
        ``find_phrases`` lets a match (not inside a word), and for the strict alignment modes
        also on token boundaries."""
        token_edges = None
        if self.alignment_mode != "expand":
            offset = request.start_char
            window = doc.char_span(offset, offset + len(request.text), alignment_mode="contract")
            tokens = window if window is not None else []
            token_edges = (
                {token.idx - offset for token in tokens},
                {token.idx + len(token) - offset for token in tokens},
            )
        return extraction_grammar(request.text, request.label_texts, token_edges)

    def ask(self, asker: Asker, docs: Sequence[Doc], requests: Sequence[Request]) -> List[List[ScoredSpan]]:
        """The scored spans of each Doc: ``requests`` asked through ``asker``, read back."""
        return self.per_doc(docs, requests, self.answers(asker, docs, requests))

    def answers(self, asker: Asker, docs: Sequence[Doc], requests: Sequence[Request]) -> List[Answer]:
        """The answers to ``requests`` under this part's grammar (and span search, where asked for)."""
        return asker.ask(docs, requests, self.grammar, span_floor=self.threshold) if requests else []

    def answered(self, docs: Sequence[Doc], requests: Sequence[Request], answers: Sequence[Answer]
                 ) -> Iterator[Tuple[Request, ScoredSpan]]:
        """Each scored span of the answers, with the request it answers."""
        for request, answer in zip(requests, answers):
            for scored in self.spans(docs[request.doc_index], request, answer):
                yield request, scored

    def per_doc(self, docs: Sequence[Doc], requests: Sequence[Request], answers: Sequence[Answer]
                ) -> List[List[ScoredSpan]]:
        """The scored spans of each Doc's answers."""
        found: List[List[ScoredSpan]] = [[] for _ in docs]
        for request, scored in self.answered(docs, requests, answers):
            found[request.doc_index].append(scored)
        return found

    def spans(self, doc: Doc, request: Request, answer: Answer) -> List[ScoredSpan]:
        labels_of = request.label_of or self.label_of
        written = answer.written_spans(request.label_texts)
        if not answer.complete and self.constrained and written:
            written.pop()  # max_new_tokens cut the answer: its last span may be cut short of where it ends
            self.stats["cut"] += 1
        found = answer.found_spans(request.label_texts)
        if found:
            self.stats["searched"] += len(found)
        phrases = [span for _, span, _ in written + found]
        labels = [labels_of[label] for label, _, _ in written + found]
        scores = [score for _, _, score in written + found]
        matches = find_phrases(request.text, phrases, case_sensitive=self.case_sensitive)
        self.stats["answers"] += len(phrases)
        dropped = len(phrases) - len({index for index, _, _ in matches})
        if dropped:
            self.stats["dropped"] += dropped
        if not matches:
            return []
        token_starts, token_ends = char_spans_to_tokens(
            doc, [request.start_char + start for _, start, _ in matches],
            [request.start_char + end for _, _, end in matches], self.alignment_mode)
        spans = []
        for (index, _, _), start, end in zip(matches, token_starts.tolist(), token_ends.tolist()):
            if start < 0 or start == end:
                self.stats["unaligned"] += 1
            else:
                spans.append((Span(doc, start, end, label=labels[index]), scores[index]))
        if not answer.found:
            return spans
        # the search found spans beside the answer's: of overlapping ones of a label, the likeliest
        return [spans[i] for i in apart_per_label([span.start for span, _ in spans], [span.end for span, _ in spans],
                                                  [score for _, score in spans], [span.label for span, _ in spans])]
