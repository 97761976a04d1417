"""``seqgpt_ner``: entities (or any spans) for labels chosen at ``add_pipe``."""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

from spacy.language import Language
from spacy.tokens import Doc, Span

from ..decoding import DEFAULT_DRAFT_TOKENS, Answer, Request
from ..decoding.queries import extraction_grammar
from ..kernels.constraints import ExtractionGrammar
from ..models import HFModel
from ..prompts import DEFAULT_LABEL_CHUNK_SIZE, EXTRACT, chunk_labels, locate_spans
from ..text.alignment import ALIGNMENT_MODES, char_spans_to_tokens, find_phrases
from ..validation import check_spans_key
from .base import SETTINGS, SeqGPTComponent, logger
from .spans import ScoredSpan, add_ents, add_spans, score_spans


@Language.factory(
    "seqgpt_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={
        "labels": [],
        **SETTINGS,
        "label_chunk_size": DEFAULT_LABEL_CHUNK_SIZE,
        "alignment_mode": "expand",
        "case_sensitive": False,
        "spans_key": None,
        "threshold": 0.0,
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_seqgpt_ner(nlp: Language, name: str, labels: Union[List[str], Dict[str, str]], model: Union[str, HFModel],
                    batch_size: int, max_new_tokens: int, num_beams: int, max_input_tokens: int, constrained: bool,
                    label_chunk_size: int, alignment_mode: str, case_sensitive: bool, spans_key: Optional[str],
                    threshold: float,
                    # model settings as pipelines saved by 0.1 have them (see models.spec.model_settings)
                    device: Optional[str] = None, dtype: Optional[str] = None, quantize: Optional[str] = None,
                    adapter: Optional[str] = None, trust_remote_code: Optional[bool] = None,
                    unmask: Optional[str] = None,
                    jump_forward: bool = True, speculate: bool = True,
                    draft_tokens: int = DEFAULT_DRAFT_TOKENS) -> "SeqGPTNER":
    return SeqGPTNER(nlp.vocab, name, labels=labels, model=model, batch_size=batch_size,
                     max_new_tokens=max_new_tokens, num_beams=num_beams, max_input_tokens=max_input_tokens,
                     constrained=constrained, label_chunk_size=label_chunk_size, alignment_mode=alignment_mode,
                     case_sensitive=case_sensitive, spans_key=spans_key, threshold=threshold, device=device,
                     dtype=dtype, quantize=quantize, adapter=adapter, trust_remote_code=trust_remote_code,
                     unmask=unmask, jump_forward=jump_forward,
                     speculate=speculate, draft_tokens=draft_tokens)


@dataclass
class QueryRequest(Request):
    """A request whose queries are its own, not the component's labels: ``ids`` maps each query
    asked to the label its spans get (questions, event arguments)."""

    ids: Dict[str, str] = field(default_factory=dict)


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
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"{name}: 'threshold' is a span probability between 0 and 1, got {threshold!r}.")
        self._chunks = chunk_labels(list(self.label_map.values()), label_chunk_size)
        self.alignment_mode = alignment_mode
        self.case_sensitive = case_sensitive
        self.spans_key = check_spans_key(spans_key, name)
        self.threshold = float(threshold)

    def label_chunks(self) -> List[List[str]]:
        return self._chunks

    def grammar(self, doc: Doc, request: Request) -> ExtractionGrammar:
        """Spans that :meth:`_spans` will find and align: they begin and end where
        ``find_phrases`` lets a match (not inside a word), and for the strict alignment modes
        also on token boundaries."""
        token_edges = None
        if self.alignment_mode != "expand":
            offset = request.start_char
            window = doc.char_span(offset, offset + len(request.text), alignment_mode="contract")
            tokens = window if window is not None else []
            token_edges = ({token.idx - offset for token in tokens}, {token.idx + len(token) - offset for token in tokens})
        return extraction_grammar(request.text, request.labels, token_edges)

    def set_annotations(self, docs: Sequence[Doc], requests: Sequence[Request], answers: Sequence[Answer]) -> None:
        found: List[List[ScoredSpan]] = [[] for _ in docs]
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

    def _spans(self, doc: Doc, request: Request, answer: Answer) -> List[ScoredSpan]:
        phrases, labels, scores = [], [], []
        located = locate_spans(answer.text, request.labels)
        if not answer.complete and self.constrained and located:
            # max_new_tokens cut the answer: its last span may be cut short of where it ends
            located.pop()
            self.stats["cut"] += 1
        for prompt_text, phrase, offset in located:
            phrases.append(phrase)
            labels.append(request.ids[prompt_text] if isinstance(request, QueryRequest) else self.label_for(prompt_text))
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
        return score_spans(examples, self.spans_key, "SeqGPTNER", **kwargs)
