"""What ``seqgpt_ner`` and ``seqgpt_textcat`` share: settings, the model, prompting, saving.

A component turns each Doc into prompts (one per window of text and label chunk), has the
shared model answer all prompts of a batch of Docs together, and hands the answers to the
subclass, which writes them on the Docs.
"""
import logging
import os
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import srsly
from spacy import util
from spacy.pipeline import Pipe
from spacy.tokens import Doc

from ..decoding import Answer, Decoder, Query
from ..generation import subword_starts
from ..loading import DEFAULT_MODEL, ModelSpec, SharedModel, load_model, with_weights
from ..prompts import LabelSpec, build_prompt, prompt_labels
from ..serialization import FolderBytes
from ..windows import window_ranges

logger = logging.getLogger("spacy_seqgpt")

# Line breaks would end the prompt's input field early; each becomes one space, so offsets hold.
_LINE_BREAKS = str.maketrans({char: " " for char in "\n\r\u2028\u2029\x0b\x0c\x85"})

MODEL_SETTINGS = {
    "model": DEFAULT_MODEL,
    "device": "auto",
    "dtype": "auto",
    "quantize": None,
    "adapter": None,
    "trust_remote_code": False,
    "batch_size": 16,
    "max_new_tokens": 256,
    "num_beams": 1,
    "max_input_tokens": 512,
    "constrained": True,
    "unmask": None,
}


# Where each shared model was last written by to_disk, and its hash (see SeqGPTComponent.to_disk).
_SAVED_WEIGHTS: "weakref.WeakKeyDictionary[SharedModel, tuple]" = weakref.WeakKeyDictionary()


@dataclass
class Request:
    """One prompt: a window of one Doc, asked about some labels (their prompt texts)."""

    doc_index: int
    start_char: int
    text: str
    labels: List[str]


class SeqGPTComponent(FolderBytes, Pipe):
    # Bytes hold the same files as a folder: transformers and PEFT read weights from files only.
    task: str  # "extract" or "classify", set by the subclass

    def __init__(self, vocab, name: str, *, labels: LabelSpec, model: str, device: str, dtype: str,
                 quantize: Optional[str], adapter: Optional[str], trust_remote_code: bool, batch_size: int,
                 max_new_tokens: int, num_beams: int, max_input_tokens: int, constrained: bool,
                 unmask: Optional[str]):
        self.vocab = vocab
        self.name = name
        self.label_map: Dict[str, str] = prompt_labels(labels, component=name)
        self._label_of_text = {text: label for label, text in self.label_map.items()}
        for key, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens),
                           ("num_beams", num_beams), ("max_input_tokens", max_input_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: '{key}' must be a positive integer, got {value!r}.")
        self.spec = ModelSpec.resolve(model, device, dtype, quantize, adapter, trust_remote_code, unmask)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.max_input_tokens = max_input_tokens
        self.constrained = bool(constrained)
        self.stats: Counter = Counter()
        self._shared: Optional[SharedModel] = None

    @property
    def labels(self) -> tuple:
        return tuple(self.label_map)

    @property
    def shared(self) -> SharedModel:
        """The model, loaded on first use: a pipeline loaded from disk never fetches the original."""
        if self._shared is None:
            self._shared = load_model(self.spec)
        return self._shared

    def initialize(self, get_examples=None, *, nlp=None) -> None:
        """Nothing to train; loads the model now instead of on the first Doc."""
        self.shared

    def __call__(self, doc: Doc) -> Doc:
        self.annotate([doc])
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        error_handler = self.get_error_handler()
        for docs in util.minibatch(stream, size=batch_size):
            try:
                self.annotate(docs)
                yield from docs
            except Exception as err:
                error_handler(self.name, self, docs, err)

    def annotate(self, docs: Sequence[Doc]) -> None:
        """Prompt, generate and write the answers for all windows of ``docs`` at once.

        The prompts of one window (its label chunks) share their leading tokens' KV cache;
        with ``constrained``, every answer follows the grammar of :meth:`grammar`."""
        requests = self.make_requests(docs)
        queries = [Query(build_prompt(self.task, request.text, request.labels), (request.doc_index, request.start_char),
                         self.grammar(docs[request.doc_index], request) if self.constrained else None)
                   for request in requests]
        self.set_annotations(docs, requests, self.decoder().decode(queries))

    def decoder(self) -> Decoder:
        return Decoder(self.shared, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                       num_beams=self.num_beams)

    def grammar(self, doc: Doc, request: Request):
        """The answer grammar of ``request`` (kernels.constraints), for constrained decoding."""
        raise NotImplementedError

    def label_chunks(self) -> List[List[str]]:
        """The label prompt texts of each prompt asked per window."""
        return [list(self.label_map.values())]

    def make_requests(self, docs: Sequence[Doc]) -> List[Request]:
        requests = []
        chunks = self.label_chunks()
        for doc_index, doc in enumerate(docs):
            starts = subword_starts(self.shared, doc.text)
            for start, end in window_ranges(doc, starts, self.max_input_tokens):
                text = doc.text[start:end].translate(_LINE_BREAKS)
                requests.extend(Request(doc_index, start, text, chunk) for chunk in chunks)
        return requests

    def set_annotations(self, docs: Sequence[Doc], requests: Sequence[Request], answers: Sequence[Answer]) -> None:
        raise NotImplementedError

    def label_for(self, prompt_text: str) -> str:
        return self._label_of_text[prompt_text]

    def to_disk(self, path, *, exclude=tuple()) -> None:
        """Save the model's weights (safetensors) and tokenizer, so the pipeline loads without a hub.

        Components of one pipeline that share a model write it once: the first writes it, the
        others (saved into sibling folders) point at it with a relative path."""
        path = util.ensure_path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = {"source_model": self.spec.model, "weights_id": None}
        if "model" not in exclude:
            saved = _SAVED_WEIGHTS.get(self.shared)
            if saved is not None and saved[0].parent.parent == path.parent and saved[0].is_dir() and saved[0] != path / "model":
                cfg["weights_in"] = os.path.relpath(saved[0], path)
                cfg["weights_id"] = saved[1]
            else:
                cfg["weights_id"] = self.shared.save(path / "model")
                _SAVED_WEIGHTS[self.shared] = (path / "model", cfg["weights_id"])
        srsly.write_json(path / "cfg", cfg)

    def from_disk(self, path, *, exclude=tuple()) -> "SeqGPTComponent":
        path = util.ensure_path(path)
        cfg = srsly.read_json(path / "cfg") if (path / "cfg").exists() else {}
        folder = Path(path) / cfg.get("weights_in", "model")
        if "model" not in exclude and cfg.get("weights_id") and folder.is_dir():
            self._shared = load_model(with_weights(self.spec, folder.resolve(), cfg["weights_id"]))
        return self
