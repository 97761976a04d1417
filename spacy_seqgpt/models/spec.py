"""Which model a component runs: the ``[components.<name>.model]`` block of a pipeline config.

    [components.seqgpt_ner.model]
    @seqgpt_models = "spacy_seqgpt.HFModel.v1"
    name = "DAMO-NLP/SeqGPT-560M"
    device = "auto"
    ...

:class:`HFModel` is both the registered function (its fields are the block's settings) and the
handle the components load through, so a setting is added in one place, and a user can swap
the loader by registering a subclass under another name. torch is imported only to resolve
``auto``; nothing is loaded until :meth:`HFModel.load` is called.

``dtype = "auto"``: bfloat16 on a CUDA GPU that computes it (else float16); on a CPU, bfloat16
where the processor computes it natively (AVX512-BF16 or AMX: about twice float32's matrix
rate, and answers that agree with float32's), float32 elsewhere. A model that trains (the
tagger, ``seqgpt train``) keeps float32 weights on a CPU: its compute precision is the
``mixed_precision`` setting's.
"""
import logging
import os
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import List, Optional, Union

from spacy.util import registry

from ..about import DEFAULT_MODEL
from ..validation import check_unmask_code

# "8bit"/"4bit": bitsandbytes on a CUDA GPU; "int8": torch's dynamic int8 linear layers on a CPU
BITSANDBYTES = ("8bit", "4bit")
QUANTIZE_OPTIONS = (None, *BITSANDBYTES, "int8")
DTYPES = {
    "float32": "float32", "fp32": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}
REGISTRY = "seqgpt_models"
logger = logging.getLogger("spacy_seqgpt")
if not hasattr(registry, REGISTRY):
    registry.create(REGISTRY)


@dataclass(frozen=True)
class HFModel:
    """A Hugging Face model (hub id or local folder) and how to load it.

    ``unmask``: a layer group code (``"0110"``) or list of layer indices whose causal mask is
    removed (:func:`spacy_seqgpt.unmask`); the component decides the mode (the SeqGPT
    components: prefix-LM over the prompt; the tagger: fully bidirectional).
    """

    name: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    quantize: Optional[str] = None
    adapter: Optional[str] = None
    trust_remote_code: bool = False
    unmask: Optional[Union[str, List[int]]] = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"the model 'name' must be a hub id or a local folder, got {self.name!r}.")
        if self.quantize not in QUANTIZE_OPTIONS:
            raise ValueError(f"'quantize' must be null, \"8bit\", \"4bit\" (bitsandbytes, CUDA) or \"int8\" (CPU), "
                             f"got {self.quantize!r}.")
        if self.adapter is not None and (not isinstance(self.adapter, str) or not self.adapter.strip()):
            raise ValueError(f"'adapter' must be a path or hub id of a PEFT adapter, got {self.adapter!r}.")
        if self.dtype not in ("auto", *DTYPES):
            raise ValueError(f"'dtype' must be \"auto\", \"float32\", \"float16\" or \"bfloat16\", got {self.dtype!r}.")
        if isinstance(self.unmask, list):  # a config list; a tuple keeps the settings hashable
            object.__setattr__(self, "unmask", tuple(self.unmask))
        if self.unmask is not None:
            check_unmask_code(self.unmask)
        object.__setattr__(self, "trust_remote_code", bool(self.trust_remote_code))

    @property
    def bitsandbytes(self) -> bool:
        """Whether the weights load quantized by bitsandbytes (a CUDA GPU; QLoRA in training)."""
        return self.quantize in BITSANDBYTES

    def resolved(self, *, trains: bool = False) -> "HFModel":
        """The same settings with ``auto`` made concrete for this machine; a device that is not
        there, or a quantization the device cannot run, is refused here (at ``add_pipe``, not at
        first use). ``trains``: the model is trained (float32 weights on a CPU, no int8)."""
        device = _resolve_device(self.device)
        on_cuda = device.startswith("cuda")
        if self.bitsandbytes and not on_cuda:
            raise ValueError(
                f"quantize={self.quantize!r} needs a CUDA GPU (bitsandbytes), but the model would run on "
                f"{device!r}. Set 'quantize' to null, or to \"int8\" for int8 linear layers on a CPU."
            )
        if self.quantize == "int8":
            if on_cuda:
                raise ValueError('quantize="int8" is torch\'s dynamic int8 quantization for CPUs; on a CUDA GPU use '
                                 '"8bit" (bitsandbytes), or run on device "cpu".')
            if trains:
                raise ValueError('quantize="int8" is for inference: int8 weights cannot be trained. Set quantize to '
                                 'null (or "4bit" with LoRA on a CUDA GPU).')
            if self.dtype not in ("auto", "float32", "fp32"):
                raise ValueError(f'quantize="int8" computes in float32 between its int8 matrix products: set dtype '
                                 f'to "auto" or "float32", not {self.dtype!r}.')
        cpu_bf16 = not trains and self.quantize is None
        return replace(self, device=device, dtype=_resolve_dtype(self.dtype, device, cpu_bf16=cpu_bf16))

    def load(self, **kwargs):
        """``(model, tokenizer)``: see :func:`spacy_seqgpt.models.loading.load_pretrained`.
        A subclass registered under another name can load differently."""
        from .loading import load_pretrained

        return load_pretrained(self, **kwargs)


getattr(registry, REGISTRY).register("spacy_seqgpt.HFModel.v1", func=HFModel)


def model_block(**defaults) -> dict:
    """A component's ``default_config`` model block: every setting of :class:`HFModel`, with
    this component's ``defaults`` where they differ."""
    unknown = set(defaults) - {f.name for f in fields(HFModel)}
    if unknown:
        raise TypeError(f"not HFModel settings: {sorted(unknown)}")
    values = {f.name: defaults.get(f.name, f.default) for f in fields(HFModel)}
    return {"@seqgpt_models": "spacy_seqgpt.HFModel.v1", **values}


def model_settings(model: Union[str, HFModel], owner: str, defaults: Optional[dict] = None) -> HFModel:
    """A component's :class:`HFModel`: the block, or a model name (the short form ``"model": "path"``)
    with the component's ``defaults``."""
    if isinstance(model, str):
        return HFModel(**{**(defaults or {}), "name": model})
    if not isinstance(model, HFModel):
        raise ValueError(f"{owner}: 'model' must be a model name or folder, or a [components.{owner}.model] block "
                         f"(@seqgpt_models = \"spacy_seqgpt.HFModel.v1\"), got {model!r}.")
    return model


def _resolve_device(device: str) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"'device' must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got {device!r}.") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f'device={device!r} was asked for, but no CUDA GPU is available here. Use "cpu" or "auto".')
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible.")
    return str(parsed)


def _resolve_dtype(dtype: str, device: str, *, cpu_bf16: bool) -> str:
    if dtype not in (None, "auto"):
        return DTYPES[dtype]
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_bf16 and cpu_computes_bf16() else "float32"


@lru_cache(maxsize=None)
def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX), as torch's
    own dispatch detects it; asked once a process, so a pipeline answers the same every time
    on the same machine. Elsewhere torch emulates bfloat16, slower than float32.
    ``SEQGPT_CPU_BF16=0`` (or ``1``) decides instead: the test suite sets 0, so that it computes
    the same numbers on every machine."""
    import torch

    forced = os.environ.get("SEQGPT_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        logger.info('dtype "auto" on this CPU: %s (SEQGPT_CPU_BF16=%s)', "bfloat16" if forced == "1" else "float32",
                    forced)
        return forced == "1"
    cpu = getattr(torch, "cpu", None)
    found = [name for name, probe in (("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
             if callable(getattr(cpu, probe, None)) and getattr(cpu, probe)()]
    logger.info('dtype "auto" on this CPU: %s', f"bfloat16 ({' and '.join(found)})" if found
                else "float32 (no native bfloat16)")
    return bool(found)
