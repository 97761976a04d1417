"""Loading causal LMs for the SeqGPT components, once per process.

Components that ask for the same model on the same device (with the same dtype,
quantization and adapter) share one copy of the weights: the loaded models live in a
weak-value cache, so they are freed when the last component holding them is gone.
torch and transformers are imported only when a model is really loaded, so that spaCy,
which imports every registered factory when it creates a pipeline, stays fast.
"""
import hashlib
import os
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

DEFAULT_MODEL = "DAMO-NLP/SeqGPT-560M"
QUANTIZE_OPTIONS = (None, "8bit", "4bit")
_DTYPES = {
    "float32": "float32", "fp32": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


class ModelLoadError(OSError):
    """A model or tokenizer could not be loaded; the message says which and how to fix it."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides which weights end up in memory; made by :meth:`resolve`."""

    model: str
    device: str
    dtype: str
    quantize: Optional[str]
    adapter: Optional[str]
    trust_remote_code: bool
    # A layer group code (e.g. "0110") of a model trained as a prefix-LM: those layers see the
    # prompt both ways (spacy_seqgpt.unmask, mode="prompt"). It changes the model, so it is part of the key.
    unmask: Optional[str] = None
    # Set when loading a pipeline saved by this package: a hash of the saved weights, so
    # components saved from one model share one copy again, whichever folder they load from.
    weights_id: Optional[str] = None

    @classmethod
    def resolve(cls, model: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto", quantize: Optional[str] = None,
                adapter: Optional[str] = None, trust_remote_code: bool = False,
                unmask: Optional[str] = None) -> "ModelSpec":
        """Validate the user's settings and turn ``auto`` into concrete choices."""
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"'model' must be a hub id or a local folder, got {model!r}.")
        if quantize not in QUANTIZE_OPTIONS:
            raise ValueError(f"'quantize' must be null, \"8bit\" or \"4bit\", got {quantize!r}.")
        if adapter is not None and (not isinstance(adapter, str) or not adapter.strip()):
            raise ValueError(f"'adapter' must be a path or hub id of a PEFT adapter, got {adapter!r}.")
        if unmask is not None and (not isinstance(unmask, str) or not unmask or set(unmask) - {"0", "1"}):
            raise ValueError(f"'unmask' must be null or a layer group code of 0s and 1s such as \"0110\" "
                             f"(the prefix-LM layers of a model trained with unmask(mode='prompt')), got {unmask!r}.")
        resolved_device = _resolve_device(device)
        if quantize is not None and not resolved_device.startswith("cuda"):
            raise ValueError(
                f"quantize={quantize!r} needs a CUDA GPU (bitsandbytes), but the model would run on "
                f"{resolved_device!r}. Set 'quantize' to null to run unquantized on this device."
            )
        return cls(model=model, device=resolved_device, dtype=_resolve_dtype(dtype, resolved_device),
                   quantize=quantize, adapter=adapter, trust_remote_code=bool(trust_remote_code), unmask=unmask)


def _resolve_device(device: str) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"'device' must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got {device!r}.") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but no CUDA GPU is available here. Use \"cpu\" or \"auto\".")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible.")
    return str(parsed)


def _resolve_dtype(dtype: str, device: str) -> str:
    if dtype in (None, "auto"):
        if not device.startswith("cuda"):
            return "float32"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if dtype not in _DTYPES:
        raise ValueError(f"'dtype' must be \"auto\", \"float32\", \"float16\" or \"bfloat16\", got {dtype!r}.")
    return _DTYPES[dtype]


class SharedModel:
    """A loaded model with its tokenizer, shared by every component that asked for it."""

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any):
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer

    @property
    def device(self):
        return next(self.model.parameters()).device

    def save(self, path: Path) -> str:
        """Write weights (safetensors) and tokenizer, and return the weights' hash.

        A PEFT-wrapped (quantized) model writes its adapter, which names its base model.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return weights_hash(path)


def weights_hash(path: Path) -> str:
    """A hash of the safetensors files in ``path``: equal weights, equal hash (writing is deterministic)."""
    digest = hashlib.blake2b(digest_size=16)
    for file in sorted(Path(path).glob("*.safetensors")):
        digest.update(file.name.encode())
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


_CACHE: "weakref.WeakValueDictionary[ModelSpec, SharedModel]" = weakref.WeakValueDictionary()


def load_model(spec: ModelSpec) -> SharedModel:
    """Return the shared model for ``spec``, loading it on first use."""
    # Saved components that came from one model share it again, whichever folder they load from.
    key = replace(spec, model="") if spec.weights_id else spec
    shared = _CACHE.get(key)
    if shared is None:
        shared = _load(spec)
        _CACHE[key] = shared
    return shared


def _load(spec: ModelSpec) -> SharedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _check_local_path(spec.model, "model")
    kwargs = {"trust_remote_code": spec.trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model_kwargs = dict(kwargs, dtype=getattr(torch, spec.dtype))
        if spec.quantize is not None:
            model_kwargs["quantization_config"] = _quantization_config(spec)
            model_kwargs["device_map"] = {"": spec.device}
        model = AutoModelForCausalLM.from_pretrained(source, **model_kwargs)
    except (OSError, ValueError, ImportError, KeyError) as err:
        raise ModelLoadError(_load_error_message("model", spec.model, err)) from err
    if spec.quantize is None:
        model.to(spec.device)
    if spec.adapter is not None:
        model = _apply_adapter(model, spec)
    if spec.unmask is not None:
        from .unmasking import unmask

        unmask(model, spec.unmask, mode="prompt")
    model.eval()
    _prepare_tokenizer(tokenizer, model, spec.model)
    return SharedModel(spec, model, tokenizer)


def _quantization_config(spec: ModelSpec):
    import torch
    from transformers import BitsAndBytesConfig

    if spec.quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=getattr(torch, spec.dtype))


def _apply_adapter(model, spec: ModelSpec):
    from peft import PeftModel

    source = _check_local_path(spec.adapter, "adapter")
    try:
        model = PeftModel.from_pretrained(model, source)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(_load_error_message("adapter", spec.adapter, err)) from err
    # Merging makes inference as fast as the base model and lets the pipeline save plain
    # weights; 4-/8-bit weights cannot take a merge without loss, so those keep the adapter.
    return model if spec.quantize else model.merge_and_unload()


def _prepare_tokenizer(tokenizer, model, name: str) -> None:
    if tokenizer.eos_token_id is None:
        eos = getattr(model.generation_config, "eos_token_id", None)
        if eos is None:
            raise ModelLoadError(f"The tokenizer of {name!r} has no end-of-sequence token, so generation could not stop.")
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos if isinstance(eos, int) else eos[0])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def _looks_like_path(name: str) -> bool:
    # A hub id is "name" or "org/name": anything else with a separator is meant as a folder.
    return name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or Path(name).expanduser().exists()


def _check_local_path(name: str, what: str) -> str:
    """Where to load ``name`` from: an existing folder, or a hub id left as it is."""
    if not _looks_like_path(name):
        return name
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"Could not load the {what} {name!r}: no such folder. Pass an existing local folder "
                             f"or a Hugging Face hub id such as {DEFAULT_MODEL!r}.")
    return str(path)


def _load_error_message(what: str, name: str, err: Exception) -> str:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    hint = (
        f"If this machine cannot reach the Hugging Face hub{' (HF_HUB_OFFLINE is set)' if offline else ''}, "
        f"download the {what} where it can (e.g. `hf download {name} --local-dir {name.rsplit('/', 1)[-1]}`) "
        f"and pass the local folder instead, e.g. config={{\"{what}\": \"path/to/folder\"}}."
    )
    return f"Could not load the {what} {name!r}: {reason} {hint}"


def with_weights(spec: ModelSpec, path: Path, weights_id: str) -> ModelSpec:
    """The spec of a component's saved weights: same device and precision, read from ``path``."""
    return replace(spec, model=str(path), adapter=None, weights_id=weights_id)
