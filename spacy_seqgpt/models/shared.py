"""The components' loaded models: one :class:`SharedModel` per set of weights, and what belongs to it.

:func:`load_shared` keeps models in a weak-value cache, so components that ask for the same
weights share one copy, freed with the last component that holds it. What is known about a
loaded model lives on its :class:`SharedModel`: the bytes its tokens write (for the answer
grammars), what a forward pass costs on its device, where its weights were last saved, and
how its layers are unmasked.
"""
import os
import weakref
from dataclasses import fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Tuple

from .loading import quiet_progress_bars
from .pass_costs import PassCosts
from .saved_weights import check_saved_source, weights_hash
from .spec import HFModel


class SharedModel:
    """A loaded causal LM with its tokenizer, shared by every component that asked for it;
    ``source`` and ``weights_id``: the saved folder it was read from, if any, and its hash."""

    def __init__(self, spec: HFModel, model: Any, tokenizer: Any, source: Optional[Path] = None,
                 weights_id: Optional[str] = None):
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self.weights_id = weights_id
        # (folder, weights hash) of the last save_once(): components of one pipeline write it once
        self.saved_to: Optional[Tuple[Path, str]] = None

    @property
    def device(self):
        return next(self.model.parameters()).device

    @cached_property
    def token_table(self):
        """The bytes each token writes, for the answer grammars (``text.token_bytes``); built once."""
        from ..kernels.constraints import TokenBytes
        from ..text.token_bytes import token_pieces

        size = max(self.model.get_output_embeddings().weight.shape[0], len(self.tokenizer))
        return TokenBytes(token_pieces(self.tokenizer, size), self.tokenizer.eos_token_id)

    @cached_property
    def costs(self) -> PassCosts:
        """What a forward pass costs on this model's device, and the guesses decoding on it kept."""
        return PassCosts.on(self.device)

    @property
    def unmasking(self):
        """How :func:`spacy_seqgpt.unmask` changed this model's attention (``UnmaskState``), or None."""
        from .unmasking import unmask_state

        return unmask_state(self.model)

    @property
    def prefix_lm(self) -> bool:
        """Whether some layers read each prompt both ways (``unmask(mode="prompt")``): every
        forward pass then needs the rows' prompt lengths."""
        state = self.unmasking
        return state is not None and "prompt" in state.modes.values()

    @property
    def narrowed(self) -> bool:
        """Whether the weights in memory are narrower than float32 on a CPU (``dtype = "auto"``'s
        bfloat16, int8 layers): a saved pipeline must not lose what its source had."""
        return self.device.type == "cpu" and (self.spec.quantize == "int8" or self.spec.dtype != "float32")

    def save(self, path: Path) -> str:
        """Write weights (safetensors) and tokenizer, and return the weights' hash.

        A PEFT-wrapped (quantized) model writes its adapter, which names its base model. A model
        narrowed on a CPU writes the float32 weights it was narrowed from (read again from its
        source), so that a pipeline saved where bfloat16 runs loads as float32 where it does not.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model = self.model
        if self.narrowed:
            spec = replace(self.spec, dtype="float32", quantize=None, unmask=None,
                           adapter=None if self.source is not None else self.spec.adapter)
            model, _ = spec.load(task="causal_lm", source=str(self.source) if self.source is not None else None)
        with quiet_progress_bars():
            model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return weights_hash(path)

    def saved_beside(self, folder: Path) -> Optional[Tuple[Path, str]]:
        """``(model folder, weights hash)`` where these weights were last saved for a component of
        the pipeline ``folder`` (a sibling component folder), if they are still there."""
        if self.saved_to is None:
            return None
        where, weights_id = self.saved_to
        if where.parent.parent == folder.parent and where.is_dir() and where != folder / "model":
            return where, weights_id
        return None


_CACHE: "weakref.WeakValueDictionary[tuple, SharedModel]" = weakref.WeakValueDictionary()


def load_shared(spec: HFModel, *, source: Optional[Path] = None, weights_id: Optional[str] = None) -> SharedModel:
    """The causal LM of the resolved settings ``spec``, loaded on first use and shared.

    ``source`` and ``weights_id``: weights a component saved (their hash); components saved
    from one model share it again, whichever folder they load from. The adapter, if any, was
    merged into (or saved with) those weights."""
    if weights_id is not None:  # whichever folder they are read from: every setting but the name and adapter
        key: tuple = (type(spec), weights_id, *(getattr(spec, f.name) for f in fields(spec)
                                                if f.name not in ("name", "adapter")))
    else:
        key = (spec,)
    shared = _CACHE.get(key)
    if shared is None:
        if source is not None:
            check_saved_source(source, weights_id)
        saved = replace(spec, adapter=None) if source is not None else spec
        model, tokenizer = saved.load(task="causal_lm", source=str(source) if source is not None else None,
                                      unmask_mode="prompt")
        model.eval()
        shared = SharedModel(spec, model, tokenizer, source, weights_id)
        _CACHE[key] = shared
    return shared


_THREADS_SET_IN: Optional[int] = None


def use_worker_threads() -> None:
    """In a worker process (``nlp.pipe(n_process=...)``, any multiprocessing child), torch runs on
    one thread: the workers share the cores, and a forked child cannot use the OpenMP threads
    of its parent at all (its first parallel region would hang). Call before torch runs."""
    global _THREADS_SET_IN
    if _THREADS_SET_IN != os.getpid():
        _THREADS_SET_IN = os.getpid()
        import multiprocessing

        if multiprocessing.parent_process() is not None:
            import torch

            torch.set_num_threads(1)
