"""Making a loaded model trainable: k-bit preparation, gradient checkpointing and LoRA.

Shared by the tagger (a token classifier) and SeqGPT training (a causal LM), so both take
the same LoRA settings with the same defaults (the QLoRA paper's r 64, alpha 16, dropout 0.1).
"""
import warnings
from contextlib import contextmanager
from typing import Any, Dict, Iterator

from ..validation import check_positive_int

LORA_DEFAULTS = {"r": 64, "alpha": 16, "dropout": 0.1, "target_modules": None}
# LoRA goes on the query and value projections (the paper's choice); BLOOM fuses q, k and v.
DEFAULT_TARGET_MODULES = {"bloom": ["query_key_value"]}
DEFAULT_TARGETS = ["q_proj", "v_proj"]


def base_model(model):
    """The model inside a PEFT wrapper, or ``model`` itself when it is not wrapped."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def quiet_peft() -> Iterator[None]:
    """PEFT (0.21) reads transformers' deprecated ``is_gradient_checkpointing`` whenever it wraps
    a model; that warning is PEFT's to fix and says nothing to our users, so only it is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def lora_settings(lora: Dict[str, Any]) -> Dict[str, Any]:
    """The LoRA settings with defaults filled in; unknown keys are refused."""
    if not isinstance(lora, dict):
        raise ValueError(f"'lora' must be null (full fine-tuning) or a dict of LoRA settings, got {lora!r}.")
    unknown = set(lora) - set(LORA_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown LoRA settings {sorted(unknown)}: use {sorted(LORA_DEFAULTS)}.")
    merged = {**LORA_DEFAULTS, **lora}
    check_positive_int(merged["r"], "r", "LoRA")
    return merged


def prepare_for_training(model, *, quantized: bool, gradient_checkpointing: bool):
    """``model`` k-bit prepared (when quantized) and with gradient checkpointing as asked."""
    checkpointing = {"use_reentrant": False}
    if quantized:
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                               gradient_checkpointing_kwargs=checkpointing)
    if gradient_checkpointing:
        # transformers 5.24 renamed it (the old name goes in v6); older 5.x have the old name only
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is None:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
        else:
            enable(activation_checkpointing_kwargs=checkpointing)
    return model


def add_lora(model, lora: Dict[str, Any], task_type: str):
    """``model`` wrapped with a fresh LoRA adapter (``task_type``: PEFT's, e.g. "CAUSAL_LM")."""
    from peft import LoraConfig, get_peft_model

    settings = lora_settings(dict(lora))
    targets = settings["target_modules"] or DEFAULT_TARGET_MODULES.get(model.config.model_type, DEFAULT_TARGETS)
    config = LoraConfig(task_type=task_type, r=settings["r"], lora_alpha=settings["alpha"],
                        lora_dropout=settings["dropout"], target_modules=list(targets))
    try:
        with quiet_peft():
            return get_peft_model(model, config)
    except ValueError as err:
        raise ValueError(f"LoRA target modules {list(targets)} do not fit this {model.config.model_type} model: "
                         f"{err}") from err
