"""What ``seqgpt_ner`` and ``seqgpt_textcat`` share: settings, the model, prompting, saving.

A component turns each Doc into prompts (one per window of text and label chunk), has the
shared model answer all prompts of a batch of Docs together, and hands the answers to the
subclass, which writes them on the Docs.
"""
import logging
import os
import weakref
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import srsly
from spacy import util
from spacy.pipeline import Pipe
from spacy.tokens import Doc

from ..decoding import Answer, Decoder, Request, make_queries, window_requests
from ..decoding.decoder import DEFAULT_DRAFT_TOKENS
from ..models import HFModel, SharedModel, load_shared
from ..models.loading import refuse_remote_code, use_worker_threads
from ..models.spec import model_block, model_settings
from ..prompts import LabelSpec, check_label, prompt_labels
from ..validation import check_positive_int
from ..atomic import atomic_folder
from .serialization import FolderBytes, folder_from_bytes, folder_to_bytes, read_cfg

logger = logging.getLogger("spacy_seqgpt")

# Shared by both components' default_config; the model block is [components.<name>.model].
SETTINGS = {
    "model": model_block(),
    "batch_size": 16,
    "max_new_tokens": 256,
    "num_beams": 1,
    "max_input_tokens": 512,
    "constrained": True,
    # greedy decoding's shortcuts (decoding/decoder.py); off, it goes step by step
    "jump_forward": True,
    "speculate": True,
    "draft_tokens": DEFAULT_DRAFT_TOKENS,
}

# Where each shared model was last written by to_disk, and its hash (see SeqGPTComponent.to_disk).
_SAVED_WEIGHTS: "weakref.WeakKeyDictionary[SharedModel, tuple]" = weakref.WeakKeyDictionary()


class SeqGPTComponent(FolderBytes, Pipe):
    # Bytes hold the same files as a folder: transformers and PEFT read weights from files only.
    task: str  # "extract" or "classify", set by the subclass
    label_check = staticmethod(check_label)  # refuses label prompt texts that could not be read back
    labels_required = True  # False where Docs may bring their own (seqgpt_questions)

    def __init__(self, vocab, name: str, *, labels: LabelSpec, model: Union[str, HFModel], batch_size: int,
                 max_new_tokens: int, num_beams: int, max_input_tokens: int, constrained: bool,
                 jump_forward: bool = True, speculate: bool = True,
                 draft_tokens: int = DEFAULT_DRAFT_TOKENS, **legacy):
        self.vocab = vocab
        self.name = name
        self.label_map: Dict[str, str] = (prompt_labels(labels, component=name, check=self.label_check)
                                          if labels or self.labels_required else {})
        self._label_of_text = {text: label for label, text in self.label_map.items()}
        for key, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens),
                           ("num_beams", num_beams), ("max_input_tokens", max_input_tokens),
                           ("draft_tokens", draft_tokens)):
            check_positive_int(value, key, name)
        self.spec = model_settings(model, name, **legacy).resolved()
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.max_input_tokens = max_input_tokens
        self.constrained = bool(constrained)
        self.jump_forward = bool(jump_forward)
        self.speculate = bool(speculate)
        self.draft_tokens = draft_tokens
        self.stats: Counter = Counter()
        self._shared: Optional[SharedModel] = None

    @property
    def labels(self) -> tuple:
        return tuple(self.label_map)

    @property
    def shared(self) -> SharedModel:
        """The model, loaded on first use: a pipeline loaded from disk never fetches the original."""
        use_worker_threads()
        if self._shared is None:
            self._shared = load_shared(self.spec)
        return self._shared

    # Attributes that belong to one process: a pickled copy (another process of nlp.pipe, say)
    # loads its own model, from where this one came from.
    _process_local = ("_shared",)

    def __getstate__(self) -> dict:
        state = self.attributes(exclude=self._process_local)
        shared = self._shared
        if shared is not None and shared.source is not None:
            if shared.source.is_dir():  # a saved pipeline's folder: read again there
                state["_weights_from"] = (str(shared.source), shared.weights_id)
            else:  # read from bytes, whose folder is gone: the weights travel along
                state["_weights_bytes"] = (folder_to_bytes(shared.save), shared.weights_id)
        return state

    def __setstate__(self, state: dict) -> None:
        weights_from, weights_bytes = state.pop("_weights_from", None), state.pop("_weights_bytes", None)
        self.set_attributes(state)
        self._shared = None
        if weights_from is not None:
            self._shared = load_shared(self.spec, source=Path(weights_from[0]), weights_id=weights_from[1])
        elif weights_bytes is not None:
            data, weights_id = weights_bytes
            folder_from_bytes(data, lambda folder: setattr(
                self, "_shared", load_shared(self.spec, source=folder, weights_id=weights_id)))

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
        grammar = (lambda request: self.grammar(docs[request.doc_index], request)) if self.constrained else None
        self.set_annotations(docs, requests, self.decoder().decode(make_queries(requests, grammar)))

    def decoder(self) -> Decoder:
        return Decoder(self.shared, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                       num_beams=self.num_beams, jump_forward=self.jump_forward, speculate=self.speculate,
                       draft_tokens=self.draft_tokens)

    def grammar(self, doc: Doc, request: Request):
        """The answer grammar of ``request`` (kernels.constraints), for constrained decoding."""
        raise NotImplementedError

    def label_chunks(self) -> List[List[str]]:
        """The label prompt texts of each prompt asked per window."""
        return [list(self.label_map.values())]

    def make_requests(self, docs: Sequence[Doc]) -> List[Request]:
        asks = (self.task, self.label_chunks())
        return window_requests(docs, self.shared.tokenizer, lambda _: asks, self.max_input_tokens)

    def set_annotations(self, docs: Sequence[Doc], requests: Sequence[Request], answers: Sequence[Answer]) -> None:
        raise NotImplementedError

    def label_for(self, prompt_text: str) -> str:
        return self._label_of_text[prompt_text]

    def to_disk(self, path, *, exclude=tuple()) -> None:
        """Save the model's weights (safetensors) and tokenizer, so the pipeline loads without a hub.

        Components of one pipeline that share a model write it once: the first writes it, the
        others (saved into sibling folders) point at it with a relative path."""
        self._save(util.ensure_path(path), exclude, point_at_siblings=True)

    def to_bytes(self, *, exclude=tuple()) -> bytes:
        """The files :meth:`to_disk` writes, the weights always among them (bytes stand alone)."""
        return folder_to_bytes(lambda folder: self._save(folder, exclude, point_at_siblings=False))

    def _save(self, path: Path, exclude, *, point_at_siblings: bool) -> None:
        cfg = {"source_model": self.spec.name, "weights_id": None}
        with atomic_folder(path) as draft:  # a save cut short leaves the old folder, not half a new one
            if "model" not in exclude:
                saved = _SAVED_WEIGHTS.get(self.shared) if point_at_siblings else None
                if (saved is not None and saved[0].parent.parent == path.parent and saved[0].is_dir()
                        and saved[0] != path / "model"):
                    cfg["weights_in"] = os.path.relpath(saved[0], path)
                    cfg["weights_id"] = saved[1]
                else:
                    cfg["weights_id"] = self.shared.save(draft / "model")
            srsly.write_json(draft / "cfg", cfg)
        if point_at_siblings and cfg["weights_id"] and "weights_in" not in cfg:
            _SAVED_WEIGHTS[self.shared] = (path / "model", cfg["weights_id"])

    def from_disk(self, path, *, exclude=tuple()) -> "SeqGPTComponent":
        """Read what :meth:`to_disk` wrote; a folder that is incomplete, points outside its
        pipeline or holds other files than it recorded is refused, never replaced by the source
        model in silence, and no code that comes with it runs."""
        path = Path(util.ensure_path(path))
        return self._read(path, exclude, pipeline=path.parent)

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()) -> "SeqGPTComponent":
        """Read what :meth:`to_bytes` wrote: the weights must be in the bytes themselves."""
        folder_from_bytes(bytes_data, lambda folder: self._read(folder, exclude, pipeline=None))
        return self

    def _read(self, path: Path, exclude, *, pipeline: Optional[Path]) -> "SeqGPTComponent":
        """``pipeline``: the folder the weights may be shared from (None: bytes, no sharing)."""
        cfg = read_cfg(path, self.name)
        refuse_remote_code(self.spec, self.name, path)
        if "model" not in exclude and cfg.get("weights_id"):
            folder = path / "model"
            if "weights_in" in cfg:
                if pipeline is None:
                    raise ValueError(f"{self.name}: these bytes point at weights outside them (weights_in "
                                     f"{cfg['weights_in']!r}); a component's bytes must carry its weights. "
                                     "Make them with to_bytes().")
                folder = (path / str(cfg["weights_in"])).resolve()
                if not folder.is_relative_to(pipeline.resolve()):
                    raise ValueError(f"{self.name}: the saved weights_in {cfg['weights_in']!r} leads outside the "
                                     f"pipeline folder {pipeline}; refusing to read it.")
            if not folder.is_dir():
                raise ValueError(f"{self.name}: the saved weights {folder} are missing: the pipeline was not saved "
                                 "completely. Save it again.")
            self._shared = load_shared(self.spec, source=folder, weights_id=cfg["weights_id"])
        return self
