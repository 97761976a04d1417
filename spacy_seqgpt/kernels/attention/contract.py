"""The contract of ``partial_attention``, and its reference in plain PyTorch.

The reference below, the Triton kernels and the tests all follow it; the rest of the package
cites it here.

Shapes. ``q (B, H, Lq, D)``; ``k, v (B, Hkv, Lk, D)`` with ``H % Hkv == 0`` (grouped-query
attention: query head ``h`` reads key/value head ``h // (H // Hkv)``, nothing is copied);
``Lq <= Lk``. Query ``i`` sits at key position ``p(i) = Lk - Lq + i``, so a query block that
continues a KV cache sees the cache as its past.

Who sees whom. Key ``j`` is visible to query ``i`` of row ``b`` when all three hold:

1. ``key_padding_mask[b, j]`` is true: the key is a real token (None: every key is real);
2. ``segment_ids[b, j] == segment_ids[b, p(i)]``: same packed record (None: one segment);
3. ``j <= p(i)`` (causal), or ``causal=False`` (bidirectional), or
   ``bidirectional_ids[b, p(i)] >= 0`` and ``bidirectional_ids[b, j] == bidirectional_ids[b, p(i)]``:
   tokens sharing a non-negative id see each other both ways. A prompt with id 0 followed by
   answer tokens with id -1 is a prefix-LM: the prompt is bidirectional, the answer causal.

ALiBi. With ``alibi_slopes`` (shape ``(H,)``), the score of ``(i, j)`` gets
``-slope_h * |pos(i) - pos(j)|``, where ``pos`` counts the real tokens of the same segment
before a position (padding and other records do not count). On causal pairs this differs
from BLOOM's own bias by a constant per query row, which softmax ignores, so stock BLOOM is
reproduced; on bidirectional pairs the bias stays symmetric.

Empty rows. A query with no visible key (a padded query position, say) outputs zeros and
gets zero gradients: never NaN. Padding keys take no part at all: whatever ``k`` and ``v``
hold there (NaN included) changes no output and no gradient, and their gradients are zero.
Empty inputs (no batch, queries or keys) give empty outputs.

Inputs. ``key_padding_mask`` is boolean (or integer, nonzero = real); segment and
bidirectional ids are integers; floating masks are refused, as is a head count below one.
"""
from typing import Optional

import torch

LOG2E = 1.4426950408889634  # the kernels' scores live in log2 units: exp2 is cheaper than exp


def _sorted_runs(ids: torch.Tensor):
    """``ids`` (B, L) sorted per row (stable), the order, and where each run of equal ids starts:
    the grouping under every per-id quantity here, with static shapes and no host sync."""
    sorted_ids, order = torch.sort(ids, dim=1, stable=True)
    starts = torch.ones_like(sorted_ids, dtype=torch.bool)
    starts[:, 1:] = sorted_ids[:, 1:] != sorted_ids[:, :-1]
    return order, starts


def _unsort(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Per-row values given in sorted order, put back at their positions."""
    return torch.empty_like(values).scatter_(1, order, values)


def alibi_positions(key_padding_mask: Optional[torch.Tensor], segment_ids: Optional[torch.Tensor],
                    batch: int, length: int, device) -> torch.Tensor:
    """``pos[b, j]``: how many real tokens of ``j``'s segment come before ``j`` (int32)."""
    real = (torch.ones(batch, length, dtype=torch.long, device=device) if key_padding_mask is None
            else key_padding_mask.long())
    if segment_ids is None:
        return (real.cumsum(1) - real).int()
    # Sorted by segment (stable: each segment's positions in order), the real tokens before a
    # position within its run of the sort are those of its segment before it.
    order, starts = _sorted_runs(segment_ids)
    real_sorted = real.gather(1, order)
    before = real_sorted.cumsum(1) - real_sorted
    index = torch.arange(length, device=device).expand(batch, length)
    run_start = torch.where(starts, index, 0).cummax(1).values
    return _unsort(before - before.gather(1, run_start), order).int()


def visibility(batch: int, lq: int, lk: int, device, key_padding_mask=None, segment_ids=None,
               bidirectional_ids=None, causal: bool = True) -> torch.Tensor:
    """The contract's visibility as a dense ``(B, Lq, Lk)`` boolean tensor (reference only)."""
    query_pos = torch.arange(lk - lq, lk, device=device)
    keys = torch.arange(lk, device=device)
    visible = torch.ones(batch, lq, lk, dtype=torch.bool, device=device)
    if key_padding_mask is not None:
        visible &= key_padding_mask[:, None, :].bool()
    if segment_ids is not None:
        visible &= segment_ids[:, query_pos, None] == segment_ids[:, None, :]
    if causal:
        allowed = (keys[None, :] <= query_pos[:, None]).expand(batch, lq, lk)
        if bidirectional_ids is not None:
            query_ids = bidirectional_ids[:, query_pos, None]
            allowed = allowed | ((query_ids >= 0) & (query_ids == bidirectional_ids[:, None, :]))
        visible &= allowed
    return visible


def reference_attention(q, k, v, *, key_padding_mask=None, segment_ids=None, bidirectional_ids=None,
                        causal=True, alibi_slopes=None, scale=None):
    """The contract in plain PyTorch (fp32 scores, dense mask): the tests' oracle."""
    batch, heads, lq, dim = q.shape
    lk = k.shape[2]
    group = heads // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    if key_padding_mask is not None:  # padding keys take no part, whatever they hold (NaN too)
        real = key_padding_mask.bool()[:, None, :, None]
        k, v = k.masked_fill(~real, 0), v.masked_fill(~real, 0)
    scale = dim ** -0.5 if scale is None else scale
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if alibi_slopes is not None:
        pos = alibi_positions(key_padding_mask, segment_ids, batch, lk, q.device).float()
        distance = (pos[:, lk - lq:, None] - pos[:, None, :]).abs()
        scores = scores - alibi_slopes.float()[None, :, None, None] * distance[:, None]
    visible = visibility(batch, lq, lk, q.device, key_padding_mask, segment_ids, bidirectional_ids, causal)[:, None]
    any_visible = visible.any(-1, keepdim=True)
    # Rows without a visible key: softmax over zeros, then multiplied by the all-false mask,
    # so output and gradient are exactly zero, never NaN.
    scores = scores.masked_fill(~visible, float("-inf")).masked_fill(~any_visible, 0.0)
    probs = torch.softmax(scores, dim=-1) * visible
    return torch.matmul(probs, v.float()).to(q.dtype)


def attention_flops(batch: int, heads: int, lq: int, lk: int, dim: int, visible_fraction: float = 1.0) -> float:
    """Forward FLOPs of the two matmuls over the visible pairs (the benchmark's TFLOP/s)."""
    return 4.0 * batch * heads * lq * lk * dim * visible_fraction
