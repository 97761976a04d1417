"""What every SeqGPT component shares: the model and decoding blocks, an asker, saving.

A component is a spaCy pipe: ``predict(docs)`` turns each Doc into prompts (one per window of
text and label chunk, or per question about spans), has the shared model answer all prompts
of a batch of Docs together and reads the answers back; ``set_annotations(docs, predictions)``
writes them (``components.spans``), applying ``threshold`` where the component has one. The
parts a component is made of (``extraction``, ``classification``) know the two atomic tasks
and ask through the :class:`~spacy_seqgpt.decoding.Asker` they are handed (the model, the
decoding block, ``stats``); the component only says what to ask and where to write.
"""
import os
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import srsly
from spacy import util
from spacy.pipeline import Pipe
from spacy.tokens import Doc

from ..decoding import Asker, Decoding
from ..decoding.settings import decoding_block, decoding_settings
from ..models import HFModel, SharedModel, load_shared
from ..models.saved_weights import refuse_remote_code
from ..models.shared import use_worker_threads
from ..models.spec import model_block, model_settings
from ..validation import check_threshold
from ..atomic import atomic_folder
from .serialization import FolderBytes, folder_from_bytes, folder_to_bytes, read_cfg


# Every SeqGPT component's two blocks: [components.<name>.model] and [components.<name>.decoding].
SETTINGS = {"model": model_block(), "decoding": decoding_block()}


class SeqGPTPipe(FolderBytes, Pipe):
    # Bytes hold the same files as a folder: transformers and PEFT read weights from files only.

    def __init__(self, vocab, name: str, *, model: Union[str, HFModel], decoding: Union[Decoding, dict, None] = None,
                 scorer: Optional[Callable] = None, threshold: Optional[float] = None):
        self.vocab = vocab
        self.name = name
        self.spec = model_settings(model, name).resolved()
        self.decoding = decoding_settings(decoding, name)
        self.scorer = scorer
        self.threshold = None if threshold is None else check_threshold(threshold, name)
        self.stats: Counter = Counter()
        self._shared: Optional[SharedModel] = None

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
        self.shared  # noqa: B018 (the property loads the model)

    def __call__(self, doc: Doc) -> Doc:
        self.set_annotations([doc], self.predict([doc]))
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        error_handler = self.get_error_handler()
        for docs in util.minibatch(stream, size=batch_size):
            try:
                self.set_annotations(docs, self.predict(docs))
                yield from docs
            except Exception as err:
                error_handler(self.name, self, docs, err)

    def predict(self, docs: Sequence[Doc]):
        """Ask the model about ``docs``; what it answers, read back, one item per Doc."""
        raise NotImplementedError

    def set_annotations(self, docs: Sequence[Doc], predictions) -> None:
        """Write what :meth:`predict` returned for ``docs``."""
        raise NotImplementedError

    def score(self, examples, **kwargs) -> Dict:
        """The registered ``scorer`` on the component's output (see ``components.scorers``)."""
        return self.scorer(examples, **{**self.scorer_settings(), **kwargs})

    def scorer_settings(self) -> dict:
        """What the scorer needs to know of this component's settings."""
        return {}

    def asker(self) -> Asker:
        """What the parts ask through for one batch of Docs: the model, the decoding block, ``stats``."""
        return Asker(self.shared, self.decoding, self.stats)

    def kept(self, scored: List[Tuple[object, float]]) -> List[Tuple[object, float]]:
        """The ``(item, score)`` pairs at or above ``threshold``; those below are counted in
        ``stats["below_threshold"]``."""
        kept = [(item, score) for item, score in scored if score >= self.threshold]
        if len(kept) < len(scored):
            self.stats["below_threshold"] += len(scored) - len(kept)
        return kept

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
                saved = self.shared.saved_beside(path) if point_at_siblings else None
                if saved is not None:
                    cfg["weights_in"] = os.path.relpath(saved[0], path)
                    cfg["weights_id"] = saved[1]
                else:
                    cfg["weights_id"] = self.shared.save(draft / "model")
            srsly.write_json(draft / "cfg", cfg)
        if point_at_siblings and cfg["weights_id"] and "weights_in" not in cfg:
            self.shared.saved_to = (path / "model", cfg["weights_id"])

    def from_disk(self, path, *, exclude=tuple()) -> "SeqGPTPipe":
        """Read what :meth:`to_disk` wrote; a folder that is incomplete, points outside its
        pipeline or holds other files than it recorded is refused, never replaced by the source
        model in silence, and no code that comes with it runs."""
        path = Path(util.ensure_path(path))
        return self._read(path, exclude, pipeline=path.parent)

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()) -> "SeqGPTPipe":
        """Read what :meth:`to_bytes` wrote: the weights must be in the bytes themselves."""
        folder_from_bytes(bytes_data, lambda folder: self._read(folder, exclude, pipeline=None))
        return self

    def _read(self, path: Path, exclude, *, pipeline: Optional[Path]) -> "SeqGPTPipe":
        """``pipeline``: the folder the weights may be shared from (None: bytes, no sharing)."""
        cfg = read_cfg(path, self.name)
        refuse_remote_code(self.spec, self.name, path)
        if cfg.get("weights_id") is None and ((path / "model").exists() or "weights_in" in cfg):
            # saved without its model (exclude=["model"]) records no weights; a folder with weights must
            raise ValueError(f"{self.name}: {path / 'cfg'} records no weights_id, but the folder has weights: it "
                             "was not saved by this package. Save the pipeline again.")
        if "weights_in" in cfg and not isinstance(cfg["weights_in"], str):
            raise ValueError(f"{self.name}: the saved weights_in {cfg['weights_in']!r} is not a folder name")
        if "model" not in exclude and cfg.get("weights_id"):
            folder = path / "model"
            if "weights_in" in cfg:
                if pipeline is None:
                    raise ValueError(f"{self.name}: these bytes point at weights outside them (weights_in "
                                     f"{cfg['weights_in']!r}); a component's bytes must carry its weights. "
                                     "Make them with to_bytes().")
                folder = (path / cfg["weights_in"]).resolve()
                if not folder.is_relative_to(pipeline.resolve()):
                    raise ValueError(f"{self.name}: the saved weights_in {cfg['weights_in']!r} leads outside the "
                                     f"pipeline folder {pipeline}; refusing to read it.")
            if not folder.is_dir():
                raise ValueError(f"{self.name}: the saved weights {folder} are missing: the pipeline was not saved "
                                 "completely. Save it again.")
            self._shared = load_shared(self.spec, source=folder, weights_id=cfg["weights_id"])
        return self
