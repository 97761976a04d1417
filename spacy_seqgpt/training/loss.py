"""The causal-LM loss on answer tokens only, with the LM head applied only where it counts.

A vocabulary of 250,880 (BLOOM) makes full logits the largest tensor of a step; SeqGPT's
answers are a small part of each sequence, so the hidden states are gathered at the
positions that predict an answer token first and only those go through the head.
"""
import torch

from ..models.adapters import base_model
from ..models.unmasking import unmask_state
from .encoding import IGNORE


class AnswerLoss(torch.nn.Module):
    """Wraps a causal LM; ``forward(batch)`` is the summed cross-entropy of the batch's answer
    tokens. A module, so that DDP (``accelerate launch``) sees the forward pass it syncs."""

    def __init__(self, model, packed: bool):
        super().__init__()
        self.model = model
        self.packed = packed

    def forward(self, input_ids, labels, attention_mask, position_ids, segment_ids) -> torch.Tensor:
        model = self.model
        base = base_model(model)
        state = unmask_state(base)
        if state is not None:  # the decoder is called directly: hand the kernel its segment ids here
            state.start_call(segment_ids=segment_ids if self.packed else None)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        if self.packed and base.config.model_type != "bloom":  # BLOOM has no positions (ALiBi in the kernel)
            inputs["position_ids"] = position_ids
        hidden = base.get_decoder()(**inputs).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE
        logits = base.get_output_embeddings()(hidden[:, :-1][keep])
        return torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum")
