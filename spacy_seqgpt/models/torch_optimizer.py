"""Stepping a model's torch weights under spaCy's ``[training.optimizer]``.

``spacy train`` hands every trainable component the thinc optimizer of the config. The
tagger's weights are torch tensors (some 4-bit, some on a GPU), so it steps a torch
optimizer that mirrors the thinc one, setting after setting, and reads its learning rate
(schedules included) at every step: the config stays the single place for these settings.
"""
from typing import List

from ..validation import require

TORCH_OPTIMIZERS = ("adamw", "paged_adamw_8bit")


def torch_optimizer(sgd, params: List, kind: str = "adamw"):
    """A torch optimizer with the settings of thinc's ``sgd`` (Adam.v1, RAdam.v1 or SGD.v1).

    ``kind="paged_adamw_8bit"``: bitsandbytes' paged 8-bit AdamW (CUDA only), as QLoRA trains.
    thinc's L2 becomes decoupled weight decay when ``L2_is_weight_decay`` is set (AdamW), L2 in
    the gradient otherwise.
    """
    import torch

    if kind not in TORCH_OPTIMIZERS:
        raise ValueError(f"torch_optimizer must be one of {TORCH_OPTIMIZERS}, got {kind!r}")
    lr, decay = float(sgd.learn_rate), float(sgd.L2)
    betas = (float(sgd.b1), float(sgd.b2))
    if kind == "paged_adamw_8bit":
        if not any(p.is_cuda for p in params):
            raise ValueError("torch_optimizer=\"paged_adamw_8bit\" (bitsandbytes) needs the model on a CUDA GPU; "
                             "use \"adamw\" on this device")
        require("bitsandbytes", 'torch_optimizer="paged_adamw_8bit"')
        import bitsandbytes

        return bitsandbytes.optim.PagedAdamW8bit(params, lr=lr, betas=betas, eps=sgd.eps, weight_decay=decay)
    if betas == (0.0, 0.0):  # thinc's SGD.v1
        return torch.optim.SGD(params, lr=lr, weight_decay=decay)
    if getattr(sgd, "use_radam", False):
        return torch.optim.RAdam(params, lr=lr, betas=betas, eps=sgd.eps, weight_decay=decay,
                                 decoupled_weight_decay=bool(sgd.L2_is_weight_decay))
    adam = torch.optim.AdamW if sgd.L2_is_weight_decay else torch.optim.Adam
    return adam(params, lr=lr, betas=betas, eps=sgd.eps, weight_decay=decay)


def step(optimizer, sgd, params: List) -> None:
    """One update with the thinc optimizer's current learning rate and gradient clipping (global
    norm, as Hugging Face trains; thinc clips each tensor on its own)."""
    import torch

    for group in optimizer.param_groups:
        group["lr"] = float(sgd.learn_rate)
    if sgd.grad_clip:
        torch.nn.utils.clip_grad_norm_(params, float(sgd.grad_clip))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
