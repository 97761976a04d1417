"""Scoring given answers instead of generating them: each continuation's log-probability after
each prompt (``seqgpt_textcat``'s ``probabilities``)."""
from typing import List, Sequence

import numpy as np

from .model_calls import ModelCalls


def continuation_logprobs(calls: ModelCalls, prompts: Sequence[str], continuations: Sequence[List[int]], *,
                          batch_size: int, overhead: float) -> np.ndarray:
    """``(len(prompts), len(continuations))``: the log-probability of each continuation's
    tokens after each prompt. A prompt is encoded once; its continuations are then scored
    together in one forward pass on copies of its KV cache."""
    import torch

    if any(not tokens for tokens in continuations):
        raise ValueError("every continuation to score needs at least one token")
    out = np.zeros((len(prompts), len(continuations)), dtype=np.float64)
    if not len(prompts):  # Docs with no text to window
        return out
    ids = calls.shared.tokenizer(list(prompts))["input_ids"]
    device, n = calls.shared.device, len(continuations)
    # After its first token (predicted from the prompt's last position), continuation c is
    # read as inputs c[:-1] predicting targets c[1:], right-padded to one width.
    width = max(len(tokens) for tokens in continuations) - 1
    pad = [[0] * (width + 1 - len(tokens)) for tokens in continuations]
    inputs = torch.tensor([tokens[:-1] + extra for tokens, extra in zip(continuations, pad)], device=device)
    targets = torch.tensor([tokens[1:] + extra for tokens, extra in zip(continuations, pad)], device=device)
    real = torch.tensor([[1] * (len(tokens) - 1) + extra for tokens, extra in zip(continuations, pad)],
                        device=device)
    per_batch = max(1, batch_size // n)
    for first in range(0, len(ids), per_batch):
        batch = ids[first:first + per_batch]
        lengths = torch.tensor([len(tokens) for tokens in batch], device=device)
        with torch.inference_mode():
            last, cache, mask, cache_row = calls.encode(batch, width, overhead)
            totals = torch.log_softmax(last[cache_row].float(), -1)[:, [tokens[0] for tokens in continuations]]
            if width:
                rows = torch.arange(len(batch), device=device).repeat_interleave(n)
                cached = cache_row[rows]  # each continuation's prompt, in the cache
                cache.reorder_cache(cached)
                logits, _ = calls.forward(inputs.repeat(len(batch), 1),
                                          torch.cat([mask[cached], real.repeat(len(batch), 1)], 1), cache,
                                          lengths[rows] if calls.prompt_mode else None, keep=0)
                picked = torch.log_softmax(logits.float(), -1).gather(-1, targets.repeat(len(batch), 1)[..., None])
                totals = totals + (picked[..., 0] * real.repeat(len(batch), 1)).sum(-1).view(len(batch), n)
        out[first:first + len(batch)] = totals.cpu().numpy()
    return out
