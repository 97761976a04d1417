"""``seqgpt_ner``: entities (or any spans) for labels chosen at ``add_pipe``."""
from typing import Dict, List, Optional, Sequence, Union

from spacy.language import Language
from spacy.scorer import Scorer, get_ner_prf
from spacy.tokens import Doc, Span
from spacy.training import validate_examples

from ..alignment import ALIGNMENT_MODES, char_spans_to_tokens, find_phrases, resolve_overlaps
from ..prompts import DEFAULT_LABEL_CHUNK_SIZE, EXTRACT, chunk_labels, parse_answer
from .base import MODEL_SETTINGS, Request, SeqGPTComponent, logger


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
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_seqgpt_ner(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]], model: str, device: str,
                    dtype: str, quantize: Optional[str], adapter: Optional[str], trust_remote_code: bool,
                    batch_size: int, max_new_tokens: int, num_beams: int, max_input_tokens: int,
                    label_chunk_size: int, alignment_mode: str, case_sensitive: bool,
                    spans_key: Optional[str]) -> "SeqGPTNER":
    return SeqGPTNER(nlp.vocab, name, labels=labels, model=model, device=device, dtype=dtype, quantize=quantize,
                     adapter=adapter, trust_remote_code=trust_remote_code, batch_size=batch_size,
                     max_new_tokens=max_new_tokens, num_beams=num_beams, max_input_tokens=max_input_tokens,
                     label_chunk_size=label_chunk_size, alignment_mode=alignment_mode,
                     case_sensitive=case_sensitive, spans_key=spans_key)


class SeqGPTNER(SeqGPTComponent):
    """Asks the model to extract spans for each label and writes those found in the text.

    Each answer phrase is searched in its window; every occurrence becomes a span. Phrases
    that do not occur are dropped and counted in ``stats["dropped"]`` (``stats["unaligned"]``
    for matches that ``alignment_mode`` cannot map to tokens).
    """

    task = EXTRACT

    def __init__(self, vocab, name: str, *, label_chunk_size: int, alignment_mode: str, case_sensitive: bool,
                 spans_key: Optional[str], **settings):
        super().__init__(vocab, name, **settings)
        if alignment_mode not in ALIGNMENT_MODES:
            raise ValueError(f"{name}: 'alignment_mode' must be one of {ALIGNMENT_MODES}, got {alignment_mode!r}.")
        if spans_key is not None and (not isinstance(spans_key, str) or not spans_key):
            raise ValueError(f"{name}: 'spans_key' must be null (write doc.ents) or a non-empty string.")
        self._chunks = chunk_labels(list(self.label_map.values()), label_chunk_size)
        self.alignment_mode = alignment_mode
        self.case_sensitive = case_sensitive
        self.spans_key = spans_key

    def label_chunks(self) -> List[List[str]]:
        return self._chunks

    def set_annotations(self, docs: Sequence[Doc], requests: Sequence[Request], answers: Sequence[str]) -> None:
        found: List[List[Span]] = [[] for _ in docs]
        for request, answer in zip(requests, answers):
            found[request.doc_index].extend(self._spans(docs[request.doc_index], request, answer))
        for doc, spans in zip(docs, found):
            if self.spans_key is None:
                add_ents(doc, spans)
            else:
                add_spans(doc, self.spans_key, spans)

    def _spans(self, doc: Doc, request: Request, answer: str) -> List[Span]:
        phrases, labels = [], []
        for prompt_text, answer_spans in parse_answer(EXTRACT, answer, request.labels).items():
            phrases.extend(answer_spans)
            labels.extend([self.label_for(prompt_text)] * len(answer_spans))
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
                spans.append(Span(doc, start, end, label=labels[index]))
        return spans

    def score(self, examples, **kwargs) -> Dict:
        validate_examples(examples, "SeqGPTNER.score")
        if self.spans_key is None:
            return get_ner_prf(examples)
        key = self.spans_key
        return Scorer.score_spans(examples, f"spans_{key}", getter=lambda doc, attr: list(doc.spans.get(key, [])),
                                  has_annotation=lambda doc: key in doc.spans, allow_overlap=True, **kwargs)


def add_ents(doc: Doc, spans: List[Span]) -> None:
    """Add a maximal set of non-overlapping spans, longest first; entities already set are kept."""
    taken = {i for ent in doc.ents for i in range(ent.start, ent.end)}
    free = [span for span in spans if not taken.intersection(range(span.start, span.end))]
    if free:
        kept = resolve_overlaps([span.start for span in free], [span.end for span in free])
        doc.ents = sorted([*doc.ents, *(free[i] for i in kept)], key=lambda span: span.start)


def add_spans(doc: Doc, key: str, spans: List[Span]) -> None:
    """Add every span (overlaps allowed) to ``doc.spans[key]``, keeping what is there, once each."""
    existing = list(doc.spans[key]) if key in doc.spans else []
    seen = {(span.start, span.end, span.label) for span in existing}
    for span in sorted(spans, key=lambda span: (span.start, span.end)):
        if (span.start, span.end, span.label) not in seen:
            existing.append(span)
            seen.add((span.start, span.end, span.label))
    doc.spans[key] = existing
