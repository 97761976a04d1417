"""``llm_unmasked_tagger``: a decoder LLM fine-tuned as an IOB2 entity tagger (Dukić & Šnajder).

The LLM with a dropout and linear head over the IOB2 tags of the labels, the causal mask
removed in the layer groups of ``unmask``, trained with (Q)LoRA through ``spacy train``.
Each spaCy token is scored by its first subword; the loss sees only those positions.
Predictions are decoded to the most probable valid IOB2 sequence and written to ``doc.ents``
(each confidence in ``span._.seqgpt_score``) or to ``doc.spans[spans_key]`` (confidences in
``attrs["scores"]``), keeping what is there unless ``overwrite`` (``components.spans``). Spans
less confident than ``threshold`` are not written. Windows hold at most ``max_input_tokens``
subwords, as the SeqGPT components' do.
"""
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import numpy
import srsly
from spacy import util
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples, validate_get_examples
from thinc.api import Model

from ..models.adapters import LORA_DEFAULTS
from ..models.shared import use_worker_threads
from ..models.saved_weights import check_saved_source, refuse_remote_code, weights_hash
from ..models.spec import HFModel, model_block, model_settings
from ..models.token_classifier import TaggerSettings, TokenClassifier, softmax
from ..models.torch_optimizer import TORCH_OPTIMIZERS, step, torch_optimizer
from ..text.alignment import resolve_overlaps
from ..text.iob import OUTSIDE, decode, gold_tag_indices, iob_tags, tags_from_spans
from ..validation import check_spans_key, check_threshold
from ..atomic import atomic_folder
from .scorers import scorer_ref
from .serialization import FolderBytes, read_cfg
from .spans import write_spans

# The paper's decoder, with its middle layer groups unmasked; float32 weights to train (4-bit
# QLoRA computes in ``dtype``: the 7B configs set bfloat16).
TAGGER_MODEL = {"name": "mistralai/Mistral-7B-v0.1", "unmask": "0110", "dtype": "float32"}


@Language.factory(
    "llm_unmasked_tagger",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type", "doc.spans"],
    default_config={
        "model": model_block(**TAGGER_MODEL),
        "lora": dict(LORA_DEFAULTS),
        "max_input_tokens": 128,
        "batch_size": 16,
        "dropout": 0.1,
        "gradient_checkpointing": False,
        "mixed_precision": True,
        "torch_optimizer": "adamw",
        "spans_key": None,
        "overwrite": False,
        "threshold": 0.0,
        "store_base_weights": True,
        "scorer": scorer_ref("spans"),
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_llm_unmasked_tagger(nlp: Language, name: str, model: Union[str, HFModel], lora: Optional[Dict[str, Any]],
                             max_input_tokens: int, batch_size: int, dropout: float, gradient_checkpointing: bool,
                             mixed_precision: bool, torch_optimizer: str, spans_key: Optional[str], overwrite: bool,
                             threshold: float, store_base_weights: bool, scorer: Callable) -> "LLMUnmaskedTagger":
    settings = TaggerSettings(model=model_settings(model, name, TAGGER_MODEL), lora=lora,
                              max_input_tokens=max_input_tokens,
                              batch_size=batch_size, dropout=dropout, gradient_checkpointing=gradient_checkpointing,
                              mixed_precision=mixed_precision)
    return LLMUnmaskedTagger(nlp.vocab, name, settings=settings, torch_optimizer=torch_optimizer,
                             spans_key=spans_key, overwrite=overwrite, threshold=threshold,
                             store_base_weights=store_base_weights, scorer=scorer)


def token_scores_model() -> Model:
    """Docs -> per-token tag probabilities ``(tokens, tags)``; the backward pass takes the
    gradient with respect to the logits (softmax cross-entropy), as spaCy's tagger does.
    Tokens without a subword of their own (whitespace) get a row of zeros."""
    return Model("llm_token_classifier", _forward, attrs={"classifier": None})


def _forward(model: Model, docs: Sequence[Doc], is_train: bool):
    import torch

    use_worker_threads()
    classifier: Optional[TokenClassifier] = model.attrs["classifier"]
    if classifier is None:
        raise ValueError("llm_unmasked_tagger is not initialized: call nlp.initialize() (or load a trained pipeline)")
    classifier.model.train(is_train)
    windows = classifier.encode(docs)
    with torch.set_grad_enabled(is_train):
        logits = classifier.logits(windows)
    probs = softmax(logits)
    # Row of each scored token in the Docs' tokens laid end to end: one scatter, one gather.
    rows = numpy.concatenate([[0], numpy.cumsum(windows.n_tokens)[:-1]]).astype(int)[windows.doc] + windows.token
    flat = numpy.zeros((sum(windows.n_tokens), len(classifier.tags)), dtype="float32")
    flat[rows] = probs
    scores = numpy.split(flat, numpy.cumsum(windows.n_tokens)[:-1])

    def backprop(d_scores: List[numpy.ndarray]) -> List[Doc]:
        grad = numpy.concatenate(d_scores)[rows] if len(rows) else numpy.zeros_like(probs)
        logits.backward(torch.as_tensor(grad, dtype=logits.dtype, device=logits.device))
        return []

    return scores, backprop


class LLMUnmaskedTagger(FolderBytes, TrainablePipe):
    # Bytes hold the same files as a folder: transformers and PEFT read weights from files only.
    def __init__(self, vocab, name: str = "llm_unmasked_tagger", *, settings: TaggerSettings,
                 torch_optimizer: str = "adamw", spans_key: Optional[str] = None, overwrite: bool = False,
                 threshold: float = 0.0, store_base_weights: bool = True, scorer: Optional[Callable] = None):
        if torch_optimizer not in TORCH_OPTIMIZERS:
            raise ValueError(f"{name}: 'torch_optimizer' must be one of {TORCH_OPTIMIZERS}, got {torch_optimizer!r}.")
        self.vocab = vocab
        self.name = name
        self.model = token_scores_model()
        self.settings = settings
        self.torch_optimizer = torch_optimizer
        self.spans_key = check_spans_key(spans_key, name)
        self.overwrite = bool(overwrite)
        self.threshold = check_threshold(threshold, name)
        self.scorer = scorer
        self.store_base_weights = bool(store_base_weights)
        self.cfg: Dict[str, Any] = {"labels": []}
        self._optimizer = None
        self._optimizer_of = None  # the thinc optimizer the torch one mirrors

    # A pickled copy (another process) gets the settings, labels and trained weights ------------
    def __getstate__(self) -> dict:
        state = self.attributes(exclude=("model", "_optimizer", "_optimizer_of"))
        state["_bytes"] = self.to_bytes() if self.classifier is not None else None
        return state

    def __setstate__(self, state: dict) -> None:
        data = state.pop("_bytes")
        self.set_attributes({**state, "model": token_scores_model(), "_optimizer": None, "_optimizer_of": None})
        if data is not None:
            self.from_bytes(data)

    # Labels and tags ---------------------------------------------------------------------------
    @property
    def labels(self) -> tuple:
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        return list(self.labels)

    @property
    def tags(self) -> List[str]:
        return iob_tags(self.labels)

    @property
    def classifier(self) -> Optional[TokenClassifier]:
        return self.model.attrs["classifier"]

    def add_label(self, label: str) -> int:
        self._check_label(label)
        if self.classifier is not None and label not in self.labels:
            raise ValueError(f"{self.name}: cannot add the label {label!r} to an initialized tagger (its head has one "
                             "output per tag); pass all labels to initialize instead.")
        if label in self.labels:
            return 0
        self.cfg["labels"].append(label)
        return 1

    def _check_label(self, label) -> None:
        if not isinstance(label, str) or not label.strip() or any(ch.isspace() for ch in label):
            raise ValueError(f"{self.name}: a label must be a non-empty string without spaces, got {label!r}.")

    def initialize(self, get_examples=None, *, nlp=None, labels: Optional[Iterable[str]] = None) -> None:
        """Set the labels (given, e.g. from a labels file, or read from the examples) and load the model
        with a fresh head and adapter."""
        if labels is not None:
            if isinstance(labels, str) or not isinstance(labels, Iterable):
                raise ValueError(f"{self.name}: 'labels' must be a list of strings, got {labels!r}.")
            labels = list(dict.fromkeys(labels))
        else:
            validate_get_examples(get_examples, "LLMUnmaskedTagger.initialize")
            labels = sorted({span.label_ for eg in get_examples() for span in self._gold_spans(eg.reference)})
        for label in labels:
            self._check_label(label)
        if not labels:
            raise ValueError(f"{self.name}: no labels: the examples have no entities and none were given. Pass "
                             f"labels in [initialize.components.{self.name}] or train on annotated examples.")
        self.cfg["labels"] = labels
        self._set_classifier(TokenClassifier.load(self.settings, self.tags))

    def _set_classifier(self, classifier: TokenClassifier) -> None:
        self.model.attrs["classifier"] = classifier
        self._optimizer = self._optimizer_of = None

    def _gold_spans(self, doc: Doc) -> List[Span]:
        if self.spans_key is None:
            return list(doc.ents)
        return list(doc.spans.get(self.spans_key, []))

    # Prediction --------------------------------------------------------------------------------
    def predict(self, docs: Iterable[Doc]) -> List[numpy.ndarray]:
        docs = list(docs)
        if not any(len(doc) for doc in docs):
            return [numpy.zeros((len(doc), len(self.tags)), dtype="float32") for doc in docs]
        return self.model.predict(docs)

    def set_annotations(self, docs: Iterable[Doc], scores: Sequence[numpy.ndarray]) -> None:
        tags = self.tags
        for doc, probs in zip(docs, scores):
            found = decode(probs, tags) if len(doc) else []
            scored = [(Span(doc, start, end, label=label), confidence) for start, end, label, confidence in found
                      if confidence >= self.threshold]
            write_spans(doc, self.spans_key, scored, overwrite=self.overwrite)

    # Training ----------------------------------------------------------------------------------
    def update(self, examples: Iterable[Example], *, drop: float = 0.0, sgd=None,
               losses: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        """One forward and backward pass (the head's dropout is the ``dropout`` setting; spaCy's
        ``drop`` does not reach inside the LLM); steps the weights when ``sgd`` is given."""
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "LLMUnmaskedTagger.update")
        if not any(len(eg.predicted) for eg in examples):
            return losses
        scores, backprop = self.model.begin_update([eg.predicted for eg in examples])
        loss, d_scores = self.get_loss(examples, scores)
        backprop(d_scores)
        if sgd not in (None, False):
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def get_loss(self, examples: Iterable[Example], scores: Sequence[numpy.ndarray]):
        """Mean softmax cross-entropy over tokens scored by a subword and with a gold tag."""
        tag_index = {tag: i for i, tag in enumerate(self.tags)}
        d_scores, log_likelihood, n = [], 0.0, 0
        for eg, probs in zip(examples, scores):
            gold = numpy.array(gold_tag_indices(self._gold_tags(eg), tag_index, component=self.name), dtype=int)
            gold[probs.sum(1) == 0] = -1  # tokens without a subword are not predicted
            rows = numpy.flatnonzero(gold >= 0)
            d_doc = probs.copy()
            d_doc[gold < 0] = 0
            d_doc[rows, gold[rows]] -= 1
            log_likelihood += float(numpy.log(numpy.maximum(probs[rows, gold[rows]], 1e-12)).sum())
            n += len(rows)
            d_scores.append(d_doc)
        n = max(n, 1)
        return -log_likelihood / n, [d / n for d in d_scores]

    def _gold_tags(self, eg: Example) -> List[Optional[str]]:
        """IOB2 tags of the reference aligned to the predicted tokens; None where unknown."""
        if self.spans_key is None:
            tags = []
            for tag in eg.get_aligned_ner():
                if tag in (None, "-", ""):
                    tags.append(None)
                else:
                    prefix, _, label = tag.partition("-")
                    tags.append(OUTSIDE if prefix == OUTSIDE else f"{'B' if prefix in 'BU' else 'I'}-{label}")
            return tags
        if self.spans_key not in eg.reference.spans:
            return [None] * len(eg.predicted)
        spans = eg.get_aligned_spans_y2x(eg.reference.spans[self.spans_key], allow_overlap=True)
        kept = resolve_overlaps([s.start for s in spans], [s.end for s in spans])
        return tags_from_spans(len(eg.predicted), [(spans[i].start, spans[i].end, spans[i].label_) for i in kept])

    def finish_update(self, sgd) -> None:
        """Step the torch weights with the settings of spaCy's optimizer (``models.torch_optimizer``)."""
        classifier = self.classifier
        if classifier is None:
            raise ValueError(f"{self.name} is not initialized: call nlp.initialize() before training")
        params = classifier.trainable_parameters()
        if self._optimizer is None or self._optimizer_of is not sgd:
            self._optimizer = torch_optimizer(sgd, params, self.torch_optimizer)
            self._optimizer_of = sgd
        step(self._optimizer, sgd, params)

    @contextmanager
    def use_params(self, params: dict):
        # thinc's parameter averages do not cover torch weights: evaluation uses the weights as they are.
        yield

    def score(self, examples: Iterable[Example], **kwargs) -> Dict[str, Any]:
        return self.scorer(examples, **{"spans_key": self.spans_key, **kwargs})

    # Serialization -----------------------------------------------------------------------------
    def to_disk(self, path, *, exclude=tuple()) -> None:
        """Labels, tokenizer, adapter and head, and (unless ``store_base_weights`` is false) the base
        weights, so ``spacy.load`` and ``spacy package`` need nothing else; ``weights_id`` is the
        hash of every file but ``cfg``."""
        path = util.ensure_path(path)
        cfg = {"labels": list(self.labels), "source_model": self.settings.model.name, "parts": None}
        with atomic_folder(path) as draft:  # a save cut short leaves the old folder, not half a new one
            if self.classifier is not None and "model" not in exclude:
                cfg["parts"] = self.classifier.save(draft, include_base=self.store_base_weights)
                cfg["weights_id"] = weights_hash(draft, self.name, skip=("cfg",))
            srsly.write_json(draft / "cfg", cfg)

    def from_disk(self, path, *, exclude=tuple()) -> "LLMUnmaskedTagger":
        """Read what :meth:`to_disk` wrote. Every file is checked against ``weights_id`` and read
        from inside ``path``; no code that comes with it runs. Without stored base weights, the
        base is the model the pipeline's config names."""
        path = Path(util.ensure_path(path))
        cfg = read_cfg(path, self.name)
        refuse_remote_code(self.settings.model, self.name, path)
        self.cfg["labels"] = list(cfg["labels"])
        parts = cfg.get("parts")
        if parts and "model" not in exclude:
            check_saved_source(path, cfg.get("weights_id"), self.name, skip=("cfg",))
            self._set_classifier(TokenClassifier.load(
                self.settings, self.tags, base=str(path / "base") if parts.get("base") else None,
                tokenizer=str(path / "tokenizer"), adapter=str(path / "adapter") if parts.get("adapter") else None))
        return self
