"""Loading Hugging Face models: one loader for the SeqGPT components, the tagger and training.

:func:`load_pretrained` reads a tokenizer and a model (a causal LM, or a token classifier for
the tagger) at the dtype, device and quantization of an :class:`HFModel` (bitsandbytes on a GPU,
int8 linear layers on a CPU), applies a PEFT
adapter, removes the causal mask where ``unmask`` says, and completes the tokenizer by one
rule (a missing end-of-sequence token is taken from the model's generation config; a missing
padding token is the end-of-sequence token, else the unknown token). Whatever goes wrong is a
:class:`ModelLoadError` that names the model and says what to do; a hub that cannot be reached
is noticed within seconds, and only the local cache is read.

torch and transformers are imported only when a model is really loaded (``models.shared`` keeps
the components' loaded models).
"""
import os
import socket
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Tuple
from urllib.parse import urlparse

from ..about import DEFAULT_MODEL
from ..validation import require
from .errors import ModelLoadError

if TYPE_CHECKING:  # HFModel.load calls in here: the settings are only read
    from .spec import HFModel

TASKS = ("causal_lm", "token_classification")
HUB_TIMEOUT = 3.0  # seconds to wait for a connection to the hub before loading from the local cache only


def _load_errors() -> tuple:
    """What transformers, tokenizers, PEFT, safetensors (a truncated file) and the hub raise for a
    model that cannot be read."""
    from safetensors import SafetensorError

    return OSError, ValueError, ImportError, KeyError, SafetensorError


def load_pretrained(spec: "HFModel", *, task: str = "causal_lm", source: Optional[str] = None,
                    tokenizer_source: Optional[str] = None, tags: Sequence[str] = (), dropout: Optional[float] = None,
                    unmask_mode: str = "prompt") -> Tuple[Any, Any]:
    """``(model, tokenizer)`` for the resolved settings ``spec``.

    ``source``/``tokenizer_source``: read the weights/tokenizer from these folders instead of
    ``spec.name`` (a saved pipeline). ``task="token_classification"`` puts a fresh head with one
    output per tag of ``tags`` (and ``dropout`` before it) on the decoder. ``unmask_mode``: how
    the layers of ``spec.unmask`` see the sequence (:func:`spacy_seqgpt.unmask`).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    name = source or spec.name
    path = checked_source(name, "model")
    remote = {"trust_remote_code": spec.trust_remote_code, **hub_access(path)}
    kwargs: dict = {"dtype": getattr(torch, spec.dtype), **remote}
    if source is not None:  # a saved pipeline's folder: its weights are safetensors, never pickle
        kwargs["use_safetensors"] = True
    if spec.bitsandbytes:  # (outside the try: a missing package is not a model that failed to load)
        kwargs.update(quantization_config=quantization_config(spec), device_map={"": spec.device})
    try:
        tokenizer = AutoTokenizer.from_pretrained(checked_source(tokenizer_source, "tokenizer") if tokenizer_source
                                                  else path, **remote)
        if task == "token_classification":
            config = AutoConfig.from_pretrained(path, num_labels=len(tags), id2label=dict(enumerate(tags)),
                                                label2id={tag: i for i, tag in enumerate(tags)}, **remote)
            if dropout is not None:
                config.classifier_dropout = dropout
            with quiet_progress_bars():
                model = AutoModelForTokenClassification.from_pretrained(
                    path, config=config, attn_implementation=built_in_attention(config, task), **kwargs)
        else:
            config = AutoConfig.from_pretrained(path, **remote)
            with quiet_progress_bars():
                model = AutoModelForCausalLM.from_pretrained(
                    path, config=config, attn_implementation=built_in_attention(config, task), **kwargs)
    except _load_errors() as err:
        raise load_error("model", name, err) from None  # the reason is in the message: no chained traceback
    if not spec.bitsandbytes:
        model.to(spec.device)
    if spec.adapter is not None:
        model = _apply_adapter(model, spec)
    if spec.quantize == "int8":  # after the adapter's merge: the merged weights are quantized
        from .cpu_int8 import quantize_linear_layers

        quantize_linear_layers(model)
    if spec.unmask is not None:
        from .unmasking import unmask

        unmask(model, spec.unmask, mode=unmask_mode)
    check_tokenizer(tokenizer, model, tokenizer_source or name)
    complete_tokenizer(tokenizer, model, name, needs_eos=task == "causal_lm")
    return model, tokenizer


def check_tokenizer(tokenizer, model, name: str) -> None:
    """A tokenizer that can write text as ids the model has embeddings for: one without a
    vocabulary, or with ids past the embedding table, would fail at the first Doc instead."""
    if not tokenizer("a b", add_special_tokens=False)["input_ids"]:
        raise ModelLoadError(f"The tokenizer of {name!r} ({type(tokenizer).__name__}) turns text into no tokens: it "
                             "has no vocabulary (its tokenizer.json or vocabulary file is missing).")
    largest, embeddings = max(tokenizer.get_vocab().values()), model.get_input_embeddings().num_embeddings
    if largest >= embeddings:
        raise ModelLoadError(f"The tokenizer of {name!r} has token ids up to {largest}, but the model has embeddings "
                             f"for {embeddings}: they do not belong together.")


def built_in_attention(config, task: str) -> str:
    """The attention a model is loaded with: transformers' SDPA where it has it for the
    architecture, else eager. Whatever a ``config.json`` names instead is not followed: a hub
    kernel (``"kernels-community/flash-attn"``) would be fetched and run as native code, and
    the components set their own attention where they unmask layers."""
    from transformers.models.auto import modeling_auto

    mapping = (modeling_auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING if task == "token_classification"
               else modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING)
    try:
        model_class = mapping[type(config)]
    except KeyError:  # an architecture transformers does not know: from_pretrained names it
        return "eager"
    return "sdpa" if getattr(model_class, "_supports_sdpa", False) else "eager"


def complete_tokenizer(tokenizer, model, name: str, *, needs_eos: bool) -> None:
    """Give ``tokenizer`` an end-of-sequence token (from the model's generation config when the
    tokenizer lacks one) and a padding token (end-of-sequence, else unknown)."""
    if tokenizer.eos_token_id is None:
        generation = getattr(model, "generation_config", None)
        eos = getattr(generation, "eos_token_id", None)
        eos = eos if eos is not None else getattr(model.config, "eos_token_id", None)
        if eos is not None:
            tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos if isinstance(eos, int) else eos[0])
        elif needs_eos:
            raise ModelLoadError(f"The tokenizer of {name!r} has no end-of-sequence token and the model names none, "
                                 "so answers could not end. Set eos_token in its tokenizer_config.json.")
    if tokenizer.pad_token_id is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelLoadError(f"The tokenizer of {name!r} has no padding, end-of-sequence or unknown token to "
                                 "pad batches with. Set pad_token in its tokenizer_config.json.")
        tokenizer.pad_token = fallback
    model.config.pad_token_id = tokenizer.pad_token_id


def quantization_config(spec: "HFModel"):
    """bitsandbytes settings: 8-bit, or 4-bit NF4 with double quantization computing in ``spec.dtype``."""
    import torch
    from transformers import BitsAndBytesConfig

    require("bitsandbytes", f"quantize={spec.quantize!r}")
    if spec.quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=getattr(torch, spec.dtype))


def _apply_adapter(model, spec: "HFModel"):
    from peft import PeftModel

    from .adapters import quiet_peft

    source = checked_source(spec.adapter, "adapter")
    try:
        with quiet_progress_bars(), quiet_peft():
            model = PeftModel.from_pretrained(model, source, **hub_access(source))
    except _load_errors() as err:
        raise load_error("adapter", spec.adapter, err) from None
    # Merging makes inference as fast as the base model and lets the pipeline save plain
    # weights; 4-/8-bit weights cannot take a merge without loss, so those keep the adapter.
    return model if spec.bitsandbytes else model.merge_and_unload()


@contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """transformers draws a bar for every load and save ("Loading weights"); spaCy's components
    draw none, so they load and save without them."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            logging.enable_progress_bar()


@lru_cache(maxsize=None)
def hub_unreachable() -> Optional[str]:
    """Why the Hugging Face hub cannot be asked now (HF_HUB_OFFLINE, or no connection within a few
    seconds), or None. Checked once per process: unreachable, the hub client would retry for
    about a minute before it gives up."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    try:
        socket.create_connection((parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)),
                                 timeout=HUB_TIMEOUT).close()
    except (OSError, TypeError) as err:
        return f"{endpoint} cannot be reached ({err})"
    return None


def hub_access(source: str) -> dict:
    """``local_files_only`` for a hub id when the hub cannot be reached: the local cache only, and
    at once the error that says how to pass a folder."""
    return {"local_files_only": True} if not _looks_like_path(source) and hub_unreachable() else {}


def _looks_like_path(name: str) -> bool:
    # A hub id is "name" or "org/name": anything else with a separator is meant as a folder.
    return name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or Path(name).expanduser().exists()


def checked_source(name: str, what: str) -> str:
    """Where to load ``name`` from: an existing folder, or a hub id left as it is."""
    if not _looks_like_path(name):
        return name
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"Could not load the {what} {name!r}: there is no such folder.", *_hints(what))
    return str(path)


def _hints(what: str) -> Tuple[str, str]:
    """How to name a local folder instead: from Python, and on spaCy's command line."""
    key = "name" if what == "model" else what
    return ((f"Pass a local folder or a hub id such as {DEFAULT_MODEL!r} instead, e.g. "
             f'config={{"{what}": "path/to/folder"}}.'),
            (f"Pass a local folder or a hub id instead by overriding the config, e.g. --vars.model path/to/folder "
             f"(the shipped configs/pipelines/*.cfg) or --components.<name>.model.{key} path/to/folder."))


def load_error(what: str, name: str, err: Exception) -> ModelLoadError:
    """The error for a ``what`` (model, adapter) named ``name`` that did not load with ``err``."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    python_hint, cli_hint = _hints(what)
    if _looks_like_path(name):
        return ModelLoadError(f"Could not load the {what} {name!r}: {reason}", python_hint, cli_hint)
    offline = hub_unreachable()
    if "/" not in name:  # a bare name is more often a folder that is not there than a hub id
        where = f"There is no folder {name!r} in {Path.cwd()}"
        hub = f"and the hub cannot be asked ({offline})" if offline else f"and the hub answered: {reason}"
        return ModelLoadError(f"Could not load the {what} {name!r}. {where}, {hub}.", python_hint, cli_hint)
    download = (f"{f'This machine cannot reach the Hugging Face hub ({offline}): d' if offline else 'D'}ownload "
                f"the {what} where it can (`hf download {name} --local-dir {name.rsplit('/', 1)[-1]}`).")
    return ModelLoadError(f"Could not load the {what} {name!r}: {reason} {download}", python_hint, cli_hint)
