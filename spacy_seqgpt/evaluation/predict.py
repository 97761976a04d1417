"""Answers of a model to atomic-task records, decoded as the components decode.

Each record's text becomes a Doc (the language's blank tokenizer) and is asked what
``seqgpt_ner`` (extraction) or ``seqgpt_textcat`` (classification) would ask it: through one
:class:`~spacy_seqgpt.decoding.Asker` with the components' ``decoding`` block, the same
requests (``decoding.requests``: windows of at most ``max_input_tokens`` subwords,
extraction labels in chunks of ``label_chunk_size``, SeqGPT's 6) and the same answer grammars
(classification: one label, or with ``multi_label`` any of them, as ``seqgpt_textcat``'s
setting). The answers of a record's prompts are merged into one parsed answer and one text.
"""
from typing import Dict, List, Optional, Sequence, Tuple

from ..decoding import Asker, Decoding, Request
from ..decoding.requests import chosen_labels, classification_grammar, extraction_grammar
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


def record_requests(asker: Asker, records: Sequence[dict], docs: Optional[List] = None,
                    label_chunk_size: int = DEFAULT_LABEL_CHUNK_SIZE) -> List[Request]:
    """The prompts of each record, as a component with its labels would ask them of its Doc."""
    asks = [(r["task"], chunk_labels(r["labels"], label_chunk_size) if r["task"] == EXTRACT else [list(r["labels"])])
            for r in records]
    return asker.windows(record_docs(records) if docs is None else docs, asks.__getitem__)


def predict_records(shared: SharedModel, records: Sequence[dict], decoding: Decoding = Decoding(), *,
                    multi_label: bool = False, label_chunk_size: int = DEFAULT_LABEL_CHUNK_SIZE,
                    progress: bool = False) -> Tuple[List, List[str]]:
    """``(parsed answers, generated texts)``, one of each per record, decoded as ``decoding``
    says; classification answers one label, or with ``multi_label`` any of them."""
    asker = Asker(shared, decoding)
    docs = record_docs(records)
    requests = record_requests(asker, records, docs, label_chunk_size)

    def grammar(doc, request):  # seqgpt_ner's (alignment "expand") and seqgpt_textcat's
        if request.task == EXTRACT:
            return extraction_grammar(request.text, request.label_texts)
        return classification_grammar(tuple(request.label_texts), not multi_label)

    answers = asker.ask(docs, requests, grammar, progress=progress)
    parsed: List = [{} if r["task"] == EXTRACT else [] for r in records]
    generated: List[List[str]] = [[] for _ in records]
    for request, answer in zip(requests, answers):
        index = request.doc_index
        if request.task == EXTRACT:
            for label, spans in parse_answer(EXTRACT, answer.text, request.label_texts).items():
                merged = parsed[index].setdefault(label, [])
                merged.extend(span for span in spans if span not in merged)
        else:  # as seqgpt_textcat reads it
            chosen = chosen_labels(answer.text, request.label_texts, multi_label)
            parsed[index].extend(label for label in chosen if label not in parsed[index])
        generated[index].append(answer.text.strip())
    return parsed, ["\n".join(parts) for parts in generated]
