"""Answers of a model to atomic-task records, decoded as the components decode.

Each record's text becomes a Doc (the language's blank tokenizer) and is asked what
``seqgpt_ner`` (extraction) or ``seqgpt_textcat`` (classification) would ask it: through one
:class:`~spacy_seqgpt.decoding.Asker` with the components' ``decoding`` block, the same
requests (``decoding.requests``: windows of at most ``max_input_tokens`` subwords,
extraction labels in chunks of ``label_chunk_size``, SeqGPT's 6) and the same answer grammars
(classification: one label, or with ``multi_label`` any of them, as ``seqgpt_textcat``'s
setting). The answers of a record's prompts are merged into one parsed answer and one text.
With a ``threshold`` extraction answers are read as ``seqgpt_ner`` reads them with that
threshold: the spans written and those the span search found (``decoding.span_search``), each at
least ``threshold`` likely and found in the text, the likeliest of overlapping spans of a label.
"""
from typing import Dict, List, Optional, Sequence, Tuple

from ..decoding import Asker, Decoding, Request
from ..decoding.answers import Answer
from ..decoding.requests import chosen_labels, classification_grammar, extraction_grammar
from ..models import SharedModel
from ..prompts import DEFAULT_LABEL_CHUNK_SIZE, EXTRACT, chunk_labels, parse_answer
from ..text.alignment import apart_per_label, find_phrases

# spaCy has no blank pipeline for some codes a record may carry; "xx" splits on spaces.
_BLANK_LANGS: Dict[str, object] = {}


def record_docs(records: Sequence[dict]) -> List:
    """A Doc of each record's text, tokenized as ``spacy.blank(record["lang"])`` would."""
    import spacy

    docs = []
    for record in records:
        lang = record.get("lang", "en")
        if lang not in _BLANK_LANGS:
            try:
                _BLANK_LANGS[lang] = spacy.blank(lang)
            except ImportError:
                _BLANK_LANGS[lang] = spacy.blank("xx")
        docs.append(_BLANK_LANGS[lang].make_doc(record["text"]))
    return docs


def record_requests(asker: Asker, records: Sequence[dict], docs: Optional[List] = None,
                    label_chunk_size: int = DEFAULT_LABEL_CHUNK_SIZE) -> List[Request]:
    """The prompts of each record, as a component with its labels would ask them of its Doc."""
    asks = [(r["task"], chunk_labels(r["labels"], label_chunk_size) if r["task"] == EXTRACT else [list(r["labels"])])
            for r in records]
    return asker.windows(record_docs(records) if docs is None else docs, asks.__getitem__)


def predict_records(shared: SharedModel, records: Sequence[dict], decoding: Decoding = Decoding(), *,
                    multi_label: bool = False, threshold: float = 0.0,
                    label_chunk_size: int = DEFAULT_LABEL_CHUNK_SIZE, progress: bool = False) -> Tuple[List, List[str]]:
    """``(parsed answers, generated texts)``, one of each per record, decoded as ``decoding``
    says; classification answers one label, or with ``multi_label`` any of them; extraction
    answers with a ``threshold`` are read as ``seqgpt_ner`` reads them (see the module's docs)."""
    answered = ask_records(shared, records, decoding, multi_label=multi_label, span_floor=threshold,
                           label_chunk_size=label_chunk_size, progress=progress)
    return read_answers(records, *answered, multi_label=multi_label, threshold=threshold,
                        constrained=decoding.constrained)


def ask_records(shared: SharedModel, records: Sequence[dict], decoding: Decoding, *, multi_label: bool,
                span_floor: float = 0.0, label_chunk_size: int = DEFAULT_LABEL_CHUNK_SIZE, progress: bool = False
                ) -> Tuple[List[Request], List[Answer]]:
    """The records' requests and the model's answers (with ``span_search``, every span at least
    ``span_floor`` likely found too): what ``read_answers`` reads, at one threshold or several."""
    asker = Asker(shared, decoding)
    docs = record_docs(records)
    requests = record_requests(asker, records, docs, label_chunk_size)

    def grammar(doc, request):  # seqgpt_ner's (alignment "expand") and seqgpt_textcat's
        if request.task == EXTRACT:
            return extraction_grammar(request.text, request.label_texts)
        return classification_grammar(tuple(request.label_texts), not multi_label)

    return requests, asker.ask(docs, requests, grammar, progress=progress, span_floor=span_floor)


def read_answers(records: Sequence[dict], requests: Sequence[Request], answers: Sequence[Answer], *,
                 multi_label: bool, threshold: float = 0.0, constrained: bool = True) -> Tuple[List, List[str]]:
    """``(parsed answers, generated texts)`` of each record from its requests' answers."""
    parsed: List = [{} if r["task"] == EXTRACT else [] for r in records]
    generated: List[List[str]] = [[] for _ in records]
    for request, answer in zip(requests, answers):
        index = request.doc_index
        if request.task == EXTRACT:
            read = (scored_phrases(request.text, answer, request.label_texts, threshold, constrained)
                    if threshold > 0 else parse_answer(EXTRACT, answer.text, request.label_texts))
            for label, spans in read.items():
                merged = parsed[index].setdefault(label, [])
                merged.extend(span for span in spans if span not in merged)
        else:  # as seqgpt_textcat reads it
            chosen = chosen_labels(answer.text, request.label_texts, multi_label)
            parsed[index].extend(label for label in chosen if label not in parsed[index])
        generated[index].append(answer.text.strip())
    return parsed, ["\n".join(parts) for parts in generated]


def scored_phrases(text: str, answer: Answer, label_texts: List[str], threshold: float, constrained: bool
                   ) -> Dict[str, List[str]]:
    """An extraction answer's spans per label text as ``seqgpt_ner`` keeps them at ``threshold``:
    written (less the last of an answer cut short, when constrained) or found by the span search,
    at least ``threshold`` likely, found in ``text`` (case-folded, as ``seqgpt_ner``); where the
    search found spans, of overlapping occurrences of one label's spans the likeliest."""
    written = answer.written_spans(label_texts)
    if constrained and not answer.complete and written:
        written.pop()
    scored = [item for item in written + answer.found_spans(label_texts) if item[2] >= threshold]
    matches = find_phrases(text, [span for _, span, _ in scored], case_sensitive=False)
    if answer.found:
        starts, ends = [start for _, start, _ in matches], [end for _, _, end in matches]
        matches = [matches[i] for i in apart_per_label(starts, ends, [scored[i][2] for i, _, _ in matches],
                                                       [scored[i][0] for i, _, _ in matches])]
    kept: Dict[str, List[str]] = {}
    for index in sorted({index for index, _, _ in matches}):
        label, span, _ = scored[index]
        if span not in kept.setdefault(label, []):
            kept[label].append(span)
    return kept

