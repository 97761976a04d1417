"""A decoder LLM as a token classifier: loading (QLoRA, unmasking), windows, logits, saving.

The model is transformers' ``AutoModelForTokenClassification`` of the decoder (Llama,
Mistral, Qwen2 or BLOOM: the body, dropout and a linear head), with the causal mask removed
in the chosen layer groups by :func:`spacy_seqgpt.unmask`, optionally quantized (QLoRA: 4-bit
NF4, double quantization) and wrapped with a PEFT LoRA adapter that also trains the head.
Docs are tokenized with offsets and cut into windows of at most ``max_input_tokens`` subwords
between spaCy tokens; the logits of each token's first subword are its scores.
"""
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy
from spacy.tokens import Doc

from ..text.alignment import align_subwords
from ..validation import check_positive_int
from .adapters import add_lora, lora_settings, prepare_for_training, quiet_peft
from .errors import ModelLoadError
from .loading import quiet_progress_bars
from .spec import HFModel, cpu_computes_bf16


@dataclass(frozen=True)
class TaggerSettings:
    """The tagger's model and training settings, checked once; the model resolved for this machine."""

    model: HFModel
    lora: Optional[Dict[str, Any]]
    max_input_tokens: int
    batch_size: int
    dropout: float
    gradient_checkpointing: bool
    mixed_precision: bool

    def __post_init__(self):
        for key in ("max_input_tokens", "batch_size"):
            check_positive_int(getattr(self, key), key)
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"'dropout' must be a number in [0, 1), got {self.dropout!r}.")
        if self.model.adapter is not None:
            raise ValueError("the tagger trains its own LoRA adapter (the 'lora' setting) and saves it with the "
                             "pipeline: leave the model's 'adapter' null.")
        if self.lora is not None:
            lora_settings(self.lora)
        elif self.model.bitsandbytes:
            raise ValueError(f"quantize={self.model.quantize!r} trains through LoRA (QLoRA): quantized weights cannot "
                             "be trained directly. Give 'lora' settings (e.g. {\"r\": 64, \"alpha\": 16}) or set "
                             "quantize to null.")
        object.__setattr__(self, "model", self.model.resolved(trains=True))


@dataclass
class Windows:
    """Docs cut into model inputs, and where each token's first subword sits in them."""

    input_ids: List[List[int]]
    # One entry per token that has a subword: its window, its position there, its doc and index.
    window: numpy.ndarray
    position: numpy.ndarray
    doc: numpy.ndarray
    token: numpy.ndarray
    n_tokens: List[int]


class TokenClassifier:
    """The torch model and tokenizer behind ``llm_unmasked_tagger``."""

    def __init__(self, model, tokenizer, settings: TaggerSettings, tags: Sequence[str]):
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.tags = list(tags)
        self._prefix, self._suffix = _special_tokens(tokenizer)
        if len(self._prefix) + len(self._suffix) >= settings.max_input_tokens:
            raise ValueError(f"max_input_tokens={settings.max_input_tokens} leaves no room for text next to the "
                             "tokenizer's special tokens")

    @classmethod
    def load(cls, settings: TaggerSettings, tags: Sequence[str], *, base: Optional[str] = None,
             tokenizer: Optional[str] = None, adapter: Optional[str] = None) -> "TokenClassifier":
        """The base model (``settings.model`` unless ``base`` is given) with a head for ``tags``,
        unmasked, quantized and wrapped with a LoRA adapter as the settings say; ``adapter``: a
        saved adapter (and head) to load instead of a fresh one."""
        model, tok = settings.model.load(task="token_classification", source=base, tokenizer_source=tokenizer,
                                         tags=tags, dropout=settings.dropout, unmask_mode="full")
        if not getattr(tok, "is_fast", False):
            raise ModelLoadError(f"{settings.model.name!r} has no fast tokenizer: the tagger needs subword offsets.")
        model = prepare_for_training(model, quantized=settings.model.bitsandbytes,
                                     gradient_checkpointing=settings.gradient_checkpointing)
        if settings.lora is not None and adapter is not None:  # a saved adapter and head
            from peft import PeftModel

            with quiet_peft():
                model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        elif settings.lora is not None:
            model = add_lora(model, settings.lora, "TOKEN_CLS")
        return cls(model, tok, settings, tags)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def trainable_parameters(self) -> List[Any]:
        return [param for param in self.model.parameters() if param.requires_grad]

    def encode(self, docs: Sequence[Doc]) -> Windows:
        """Tokenize the Docs and cut them into windows of at most ``max_input_tokens`` subwords."""
        budget = self.settings.max_input_tokens - len(self._prefix) - len(self._suffix)
        texts = [doc.text for doc in docs]
        encoded = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True) if texts else None
        input_ids: List[List[int]] = []
        rows: List[tuple] = []
        for doc_index, doc in enumerate(docs):
            ids = encoded["input_ids"][doc_index]
            first, _ = align_subwords(doc, encoded["offset_mapping"][doc_index])
            for start, end in _window_bounds(len(ids), first, budget):
                window = len(input_ids)
                input_ids.append(self._prefix + ids[start:end] + self._suffix)
                inside = numpy.flatnonzero((first >= start) & (first < end))
                rows.extend((window, len(self._prefix) + first[t] - start, doc_index, t) for t in inside)
        table = numpy.array(rows, dtype=numpy.int64).reshape(-1, 4)
        return Windows(input_ids, table[:, 0], table[:, 1], table[:, 2], table[:, 3], [len(doc) for doc in docs])

    def logits(self, windows: Windows):
        """``(tokens with a subword, tags)`` logits, in the order of ``windows``' entries; runs in
        batches of similar-length windows, keeping the autograd graph when grad is enabled."""
        import torch

        device = self.device
        out = torch.zeros(len(windows.window), len(self.tags), device=device)
        order = sorted(range(len(windows.input_ids)), key=lambda w: len(windows.input_ids[w]))
        # bf16 autocast where the device computes it natively; elsewhere it would be slower than float32
        autocast = self.settings.mixed_precision and (device.type == "cuda" or cpu_computes_bf16())
        pieces, placed = [], []
        for start in range(0, len(order), self.settings.batch_size):
            batch = order[start : start + self.settings.batch_size]
            padded = self.tokenizer.pad({"input_ids": [windows.input_ids[w] for w in batch]}, padding_side="right",
                                        return_tensors="pt")
            slot = {w: i for i, w in enumerate(batch)}
            entries = numpy.flatnonzero(numpy.isin(windows.window, batch))
            if not len(entries):
                continue
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = self.model(input_ids=padded["input_ids"].to(device),
                                    attention_mask=padded["attention_mask"].to(device)).logits
            rows = torch.as_tensor([slot[w] for w in windows.window[entries]], device=device)
            cols = torch.as_tensor(windows.position[entries], device=device)
            pieces.append(logits[rows, cols].float())
            placed.append(torch.as_tensor(entries, device=device))
        if pieces:
            out = out.index_copy(0, torch.cat(placed), torch.cat(pieces))
        return out

    def save(self, path: Path, *, include_base: bool) -> Dict[str, bool]:
        """Write the tokenizer, the adapter with the head (LoRA) and, unless ``include_base`` is
        false, the base weights; returns which parts were written."""
        path = Path(path)
        if self.settings.lora is None and not include_base:
            raise ValueError("a fully fine-tuned tagger (lora = null) changed its base weights, so they must "
                             "be saved: set store_base_weights = true")
        self.tokenizer.save_pretrained(path / "tokenizer")
        with quiet_progress_bars():
            if self.settings.lora is None:
                self.model.save_pretrained(path / "base")
                return {"base": True, "adapter": False}
            self.model.save_pretrained(path / "adapter")
            if include_base:
                base = self.model.get_base_model()
                base.save_pretrained(path / "base", state_dict=_base_state_dict(base))
        return {"base": include_base, "adapter": True}


def _base_state_dict(base) -> Dict[str, Any]:
    """The base model's own weights out of a PEFT-wrapped model: LoRA matrices and trained head
    copies left out (they are in the adapter), wrapped originals under their own names."""
    state = {}
    for key, value in base.state_dict().items():
        if "lora_" in key or ".modules_to_save." in key:
            continue
        state[key.replace(".base_layer.", ".").replace(".original_module.", ".")] = value
    return state


def _special_tokens(tokenizer) -> tuple:
    """The ids the tokenizer puts before and after a text (Llama: BOS; BLOOM: none)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    return [], []


def _window_bounds(n_subwords: int, first_subword: numpy.ndarray, budget: int) -> List[tuple]:
    """Subword ranges of at most ``budget`` subwords, cut where a spaCy token starts when one does
    inside the range (a token longer than the budget is cut between its subwords)."""
    token_starts = sorted(set(int(i) for i in first_subword if i >= 0))
    bounds, start = [], 0
    while start < n_subwords:
        end = start + budget
        if end < n_subwords:
            k = bisect_right(token_starts, end) - 1
            if k >= 0 and token_starts[k] > start:
                end = token_starts[k]
        bounds.append((start, min(end, n_subwords)))
        start = min(end, n_subwords)
    return bounds


def softmax(logits) -> numpy.ndarray:
    import torch

    return torch.softmax(logits.detach().float(), dim=-1).cpu().numpy()

