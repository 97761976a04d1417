"""``seqgpt_ner``: entities (or any spans) for labels chosen at ``add_pipe``."""
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple, Union

from spacy.language import Language
from spacy.scorer import Scorer, get_ner_prf
from spacy.tokens import Doc, Span
from spacy.training import validate_examples

from ..alignment import ALIGNMENT_MODES, char_spans_to_tokens, find_phrases, resolve_overlaps
from ..decoding import Answer
from ..kernels.charclass import splits_word
from ..kernels.constraints import ExtractionGrammar
from ..prompts import DEFAULT_LABEL_CHUNK_SIZE, EXTRACT, chunk_labels, locate_spans
from .base import MODEL_SETTINGS, Request, SeqGPTComponent, logger

SCORE_ATTR = "seqgpt_score"  # span._.seqgpt_score: the score of an entity its component wrote
if not Span.has_extension(SCORE_ATTR):
    Span.set_extension(SCORE_ATTR, default=None)


@Language.factory(
    "seqgpt_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={
        "labels": [],
        **MODEL_SETTINGS,
        "label_chunk_size": DEFAULT_LABEL_CHUNK_SIZE,
        "alignment_mode": "expand",
        "case_sensitive": False,
        "spans_key": None,
        "threshold": 0.0,
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_seqgpt_ner(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]], model: str, device: str,
                    dtype: str, quantize: Optional[str], adapter: Optional[str], trust_remote_code: bool,
                    batch_size: int, max_new_tokens: int, num_beams: int, max_input_tokens: int,
                    constrained: bool, unmask: Optional[str], label_chunk_size: int, alignment_mode: str,
                    case_sensitive: bool, spans_key: Optional[str], threshold: float) -> "SeqGPTNER":
    return SeqGPTNER(nlp.vocab, name, labels=labels, model=model, device=device, dtype=dtype, quantize=quantize,
                     adapter=adapter, trust_remote_code=trust_remote_code, batch_size=batch_size,
                     max_new_tokens=max_new_tokens, num_beams=num_beams, max_input_tokens=max_input_tokens,
                     constrained=constrained, unmask=unmask, label_chunk_size=label_chunk_size,
                     alignment_mode=alignment_mode, case_sensitive=case_sensitive, spans_key=spans_key,
                     threshold=threshold)


class SeqGPTNER(SeqGPTComponent):
    """Asks the model to extract spans for each label and writes those found in the text.

    Each answer phrase is searched in its window; every occurrence becomes a span, scored by
    the probability of the answer tokens that wrote the phrase (``doc.spans[key].attrs["scores"]``,
    or ``span._.seqgpt_score`` on entities). Spans scored below ``threshold`` are left out
    (``stats["below_threshold"]``), and so is the last span of an answer that ``max_new_tokens``
    cut short (``stats["cut"]``). Phrases that do not occur are dropped and counted in
    ``stats["dropped"]`` (``stats["unaligned"]`` for matches that ``alignment_mode`` cannot map
    to tokens); constrained decoding makes both impossible.
    """

    task = EXTRACT

    def __init__(self, vocab, name: str, *, label_chunk_size: int, alignment_mode: str, case_sensitive: bool,
                 spans_key: Optional[str], threshold: float, **settings):
        super().__init__(vocab, name, **settings)
        if alignment_mode not in ALIGNMENT_MODES:
            raise ValueError(f"{name}: 'alignment_mode' must be one of {ALIGNMENT_MODES}, got {alignment_mode!r}.")
        if spans_key is not None and (not isinstance(spans_key, str) or not spans_key):
            raise ValueError(f"{name}: 'spans_key' must be null (write doc.ents) or a non-empty string.")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"{name}: 'threshold' is a span probability between 0 and 1, got {threshold!r}.")
        self._chunks = chunk_labels(list(self.label_map.values()), label_chunk_size)
        self.alignment_mode = alignment_mode
        self.case_sensitive = case_sensitive
        self.spans_key = spans_key
        self.threshold = float(threshold)

    def label_chunks(self) -> List[List[str]]:
        return self._chunks

    def grammar(self, doc: Doc, request: Request) -> ExtractionGrammar:
        """Spans that :meth:`_spans` will find and align: they begin and end where
        ``find_phrases`` lets a match (not inside a word), and for the strict alignment modes
        also on token boundaries."""
        text = request.text
        starts, ends = word_edges(text)
        if self.alignment_mode != "expand":
            window = doc.char_span(request.start_char, request.start_char + len(text), alignment_mode="contract")
            tokens = window if window is not None else []
            token_starts = {token.idx - request.start_char for token in tokens}
            token_ends = {token.idx + len(token) - request.start_char for token in tokens}
            starts = [i for i in starts if i in token_starts]
            ends = [i for i in ends if i in token_ends]
        return ExtractionGrammar(text, request.labels, (starts, ends))

    def set_annotations(self, docs: Sequence[Doc], requests: Sequence[Request], answers: Sequence[Answer]) -> None:
        found: List[List[Tuple[Span, float]]] = [[] for _ in docs]
        for request, answer in zip(requests, answers):
            found[request.doc_index].extend(self._spans(docs[request.doc_index], request, answer))
        for doc, scored in zip(docs, found):
            kept = [(span, score) for span, score in scored if score >= self.threshold]
            if len(kept) < len(scored):
                self.stats["below_threshold"] += len(scored) - len(kept)
            if self.spans_key is None:
                add_ents(doc, kept)
            else:
                add_spans(doc, self.spans_key, kept)

    def _spans(self, doc: Doc, request: Request, answer: Answer) -> List[Tuple[Span, float]]:
        phrases, labels, scores = [], [], []
        located = locate_spans(answer.text, request.labels)
        if not answer.complete and self.constrained and located:
            # max_new_tokens cut the answer: its last span may be cut short of where it ends
            located.pop()
            self.stats["cut"] += 1
        for prompt_text, phrase, offset in located:
            phrases.append(phrase)
            labels.append(self.label_for(prompt_text))
            scores.append(answer.probability(offset, offset + len(phrase)))
        matches = find_phrases(request.text, phrases, case_sensitive=self.case_sensitive)
        self.stats["answers"] += len(phrases)
        matched = {index for index, _, _ in matches}
        if len(matched) < len(phrases):
            self.stats["dropped"] += len(phrases) - len(matched)
            logger.debug("%s dropped answers not in the text: %s", self.name,
                         [phrase for i, phrase in enumerate(phrases) if i not in matched])
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
        return spans

    def score(self, examples, **kwargs) -> Dict:
        validate_examples(examples, "SeqGPTNER.score")
        if self.spans_key is None:
            return get_ner_prf(examples)
        key = self.spans_key
        return Scorer.score_spans(examples, f"spans_{key}", getter=lambda doc, attr: list(doc.spans.get(key, [])),
                                  has_annotation=lambda doc: key in doc.spans, allow_overlap=True, **kwargs)


@lru_cache(maxsize=64)  # a window's label chunks ask for the same text
def word_edges(text: str) -> Tuple[List[int], List[int]]:
    """Where a span of ``text`` may start and end for ``find_phrases``: not inside a word of a
    spaced script, and not on a space."""
    cuts = [i for i in range(len(text) + 1) if i in (0, len(text)) or not splits_word(text[i - 1], text[i])]
    return ([i for i in cuts if i < len(text) and not text[i].isspace()],
            [i for i in cuts if i > 0 and not text[i - 1].isspace()])


def add_ents(doc: Doc, scored: List[Tuple[Span, float]]) -> None:
    """Add a maximal set of non-overlapping ``(span, score)`` pairs, longest first, each score in
    ``span._.seqgpt_score``; entities already set are kept."""
    taken = {i for ent in doc.ents for i in range(ent.start, ent.end)}
    free = [(span, score) for span, score in scored if not taken.intersection(range(span.start, span.end))]
    if free:
        kept = [free[i] for i in resolve_overlaps([span.start for span, _ in free], [span.end for span, _ in free])]
        doc.ents = sorted([*doc.ents, *(span for span, _ in kept)], key=lambda span: span.start)
        for span, score in kept:
            span._.set(SCORE_ATTR, score)


def add_spans(doc: Doc, key: str, scored: List[Tuple[Span, float]]) -> None:
    """Add every span (overlaps allowed) to ``doc.spans[key]`` with its score in the group's
    ``attrs["scores"]``, keeping what is there; a span found twice keeps its best score."""
    group = doc.spans[key] if key in doc.spans else None
    spans = list(group) if group is not None else []
    scores = list(group.attrs.get("scores", [None] * len(spans))) if group is not None else []
    where = {(span.start, span.end, span.label): i for i, span in enumerate(spans)}
    for span, score in sorted(scored, key=lambda item: (item[0].start, item[0].end)):
        i = where.get((span.start, span.end, span.label))
        if i is None:
            where[(span.start, span.end, span.label)] = len(spans)
            spans.append(span)
            scores.append(score)
        elif scores[i] is None or score > scores[i]:
            scores[i] = score
    doc.spans[key] = spans
    doc.spans[key].attrs["scores"] = scores
