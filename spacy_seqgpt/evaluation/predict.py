"""Answers of a model to atomic-task records, decoded as the components decode.

Each record's text becomes a Doc (the language's blank tokenizer), cut into the components'
windows of at most ``max_input_tokens`` subwords; extraction labels go in chunks of
``label_chunk_size`` per prompt (SeqGPT's 6). All prompts go through one :class:`Decoder`
(batches across records, shared prompt prefixes, and with ``constrained`` the components'
answer grammars). The answers of a record's prompts are merged into one parsed answer and
one answer text.
"""
from typing import Dict, List, Sequence, Tuple

from ..decoding import Decoder, Request, make_queries, window_requests
from ..decoding.queries import extraction_grammar
from ..kernels.constraints import ClassificationGrammar
from ..models import SharedModel
from ..prompts import DEFAULT_LABEL_CHUNK_SIZE, EXTRACT, chunk_labels, parse_answer

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


def record_requests(records: Sequence[dict], tokenizer, max_input_tokens: int,
                    label_chunk_size: int = DEFAULT_LABEL_CHUNK_SIZE) -> List[Request]:
    """The prompts of each record, as a component with its labels would ask them of its Doc."""
    asks = [(r["task"], chunk_labels(r["labels"], label_chunk_size) if r["task"] == EXTRACT else [list(r["labels"])])
            for r in records]
    return window_requests(record_docs(records), tokenizer, asks.__getitem__, max_input_tokens)


def predict_records(shared: SharedModel, records: Sequence[dict], *, batch_size: int = 16, max_new_tokens: int = 256,
                    num_beams: int = 1, max_input_tokens: int = 512, constrained: bool = True,
                    label_chunk_size: int = DEFAULT_LABEL_CHUNK_SIZE, progress: bool = False) -> Tuple[List, List[str]]:
    """``(parsed answers, generated texts)``, one of each per record. ``constrained``: answers
    follow the answer grammars (classification: each queried label at most once)."""
    requests = record_requests(records, shared.tokenizer, max_input_tokens, label_chunk_size)
    classification: Dict[tuple, ClassificationGrammar] = {}

    def grammar(request):
        if request.task == EXTRACT:
            return extraction_grammar(request.text, request.labels)
        key = tuple(request.labels)
        if key not in classification:  # a grammar keeps no state: one per label set
            classification[key] = ClassificationGrammar(list(key), exclusive=False)
        return classification[key]

    decoder = Decoder(shared, batch_size=batch_size, max_new_tokens=max_new_tokens, num_beams=num_beams)
    answers = decoder.decode(make_queries(requests, grammar if constrained else None), progress=progress)
    parsed: List = [{} if r["task"] == EXTRACT else [] for r in records]
    generated: List[List[str]] = [[] for _ in records]
    for request, answer in zip(requests, answers):
        index = request.doc_index
        found = parse_answer(request.task, answer.text, request.labels)
        if request.task == EXTRACT:
            for label, spans in found.items():
                merged = parsed[index].setdefault(label, [])
                merged.extend(span for span in spans if span not in merged)
        else:
            parsed[index].extend(label for label in found if label not in parsed[index])
        generated[index].append(answer.text.strip())
    return parsed, ["\n".join(parts) for parts in generated]
