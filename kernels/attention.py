"""Partially bidirectional attention: causal, bidirectional and prefix-LM in one fused kernel.

The contract of ``partial_attention`` (the reference below, the Triton kernels and the tests
all follow it; the rest of the package cites it here):

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

On CUDA the Triton kernels below run, forward and backward, flash-attention style: online
softmax in fp32, nothing of size Lq x Lk in memory, GQA by indexing (k/v never copied). Each
program classifies the tiles of the other side from per-row ranges built once per forward
pass in an ``AttentionLayout``: tiles no row of it can see are skipped (causal costs about half
of bidirectional), tiles every row sees whole are *full* and read with no mask code at all (as
the Triton tutorial's off-diagonal loop), and the rest (the diagonal, prefix-LM span, segment
and padding boundaries) take the masked path. Padding and segments reach the kernels as one
group id per key. The autotune lists hold only configs that compile without register spills
on sm_80 and sm_90 (``benchmarks/kernel_resources.py`` checks them without a GPU). On CPU the
contract runs on PyTorch's fused attention with a dense mask built once per layout
(``dense_attention``); the plain PyTorch reference (``backend="torch"``) is the tests' oracle,
and ``TRITON_INTERPRET=1`` runs the kernels on CPU tensors, which is how the tests check them.

Written after the Triton fused-attention tutorial (forward, then dK/dV and dQ kernels).
"""
import os
from typing import Optional

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # torch on macOS / Windows has no Triton: the reference still works
    triton = None

BACKENDS = ("auto", "torch", "triton")
KERNEL_HEAD_DIMS = (16, 32, 64, 128)
LOG2E = 1.4426950408889634


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# ----------------------------------------------------------------------------- the contract

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


# ----------------------------------------------------------------------------- autotune lists

# What the autotuner may try, per kernel, architecture family and head dim: only tiles that
# compile without register spills for every feature combination the package uses, checked on
# any machine by ``benchmarks/kernel_resources.py`` (and a CI test). (BLOCK_M queries, BLOCK_N
# keys, warps, pipeline stages.) The full-tile loops and the zeroing of rows that took part in
# them only to be dropped hold a little more state: the configs that then spilled a few bytes
# left the lists (forward: 128x64/8w/2s and 128x32/4w/2s on sm_90 D=128 and sm_80 D=64; dK/dV:
# 64x64 on sm_90 D=64, 32x128/8w/3s on sm_90 D=128, 32x128 and 128x32 on sm_80 D=64, 64x32 on
# sm_80 D=128; dQ: 128x64 on sm_90 D=128, 128x32 on sm_80 D=128).
_TILES = {
    ("forward", 90, 64): ((128, 64, 8, 2), (128, 64, 8, 3), (64, 64, 4, 3), (64, 64, 8, 2)),
    ("forward", 90, 128): ((128, 64, 8, 3), (64, 64, 8, 2), (128, 32, 8, 2)),
    ("forward", 80, 64): ((128, 64, 8, 2), (64, 64, 4, 2), (64, 64, 4, 3)),
    ("forward", 80, 128): ((64, 64, 8, 2), (64, 64, 8, 3), (128, 32, 8, 2), (64, 32, 4, 2)),
    ("dkdv", 90, 64): ((64, 128, 8, 2), (32, 128, 8, 2), (128, 32, 8, 2)),
    ("dkdv", 90, 128): ((32, 128, 8, 2), (32, 64, 8, 2), (16, 128, 8, 2)),
    ("dkdv", 80, 64): ((32, 64, 8, 2), (32, 32, 4, 3)),
    ("dkdv", 80, 128): ((32, 64, 8, 2), (32, 64, 8, 3), (32, 32, 4, 2)),
    ("dq", 90, 64): ((128, 64, 8, 2), (64, 64, 8, 2), (128, 32, 8, 2), (64, 64, 4, 2)),
    ("dq", 90, 128): ((64, 64, 8, 2), (128, 32, 8, 2), (32, 128, 8, 2)),
    ("dq", 80, 64): ((128, 64, 8, 2), (64, 64, 8, 2), (128, 32, 8, 2), (32, 64, 8, 2)),
    ("dq", 80, 128): ((64, 64, 8, 2), (32, 64, 8, 2), (64, 32, 4, 2)),
}


def kernel_configs(kernel: str, arch: int, head_dim: int) -> list:
    """The configs the autotuner of ``kernel`` ("forward", "dkdv", "dq") may try on a GPU of compute
    capability ``arch`` (80 for 8.x, 90 for 9.0 and newer) at ``head_dim``, whatever the features;
    head dims below 64 use the 64 list (fewer registers per tile)."""
    family = 90 if arch >= 90 else 80
    tiles = _TILES[kernel, family, 128 if head_dim > 64 else 64]
    return [dict(BLOCK_M=m, BLOCK_N=n, num_warps=w, num_stages=s) for m, n, w, s in tiles]


# ----------------------------------------------------------------------------- Triton kernels

if triton is not None:

    # Autotuning is keyed by the lengths rounded up to powers of two (not each length: decoding
    # would re-tune at every step) and by the features.
    AUTOTUNE_KEY = ["LQ_BUCKET", "LK_BUCKET", "D", "CAUSAL", "HAS_PAD", "HAS_SEG", "HAS_BID", "HAS_ALIBI", "GROUP"]
    _LOG2E = tl.constexpr(LOG2E)  # scores live in log2 units: exp2 is cheaper than exp

    def _pool(kernel):
        """Every config of ``kernel``'s lists, for the autotuner to prune from."""
        if _interpreting():
            return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=1, num_stages=1)]
        tiles = sorted({tile for (name, _, _), tiles in _TILES.items() if name == kernel for tile in tiles})
        return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in tiles]

    def _pruner(kernel, capability=None):
        """The autotuner's pruning: the pool cut to ``kernel_configs`` for this GPU (``capability``:
        a stand-in for ``torch.cuda.get_device_capability``, for the static check)."""
        def prune(configs, named_args, **kwargs):
            if _interpreting():
                return configs
            major, minor = (capability or torch.cuda.get_device_capability)()
            allowed = {tuple(c.values()) for c in kernel_configs(kernel, major * 10 + minor, kwargs["D"])}
            return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
                    in allowed]
        return prune

    @triton.jit
    def _tile(b, h, rows, stride_b, stride_h, stride_row, D: tl.constexpr):
        """Element offsets of a (rows x D) tile of a (B, H, L, D) tensor with a contiguous last dim."""
        return b * stride_b + h * stride_h + rows[:, None] * stride_row + tl.arange(0, D)[None, :]

    @triton.jit
    def _tile_t(b, h, rows, stride_b, stride_h, stride_row, D: tl.constexpr):
        """The same tile's offsets transposed (D x rows): loaded that way, no register transpose."""
        return b * stride_b + h * stride_h + rows[None, :] * stride_row + tl.arange(0, D)[:, None]

    @triton.jit
    def _query_attributes(GROUP_IDS, BID, POS, base, offs, HAS_SEG: tl.constexpr, HAS_BID: tl.constexpr,
                          HAS_ALIBI: tl.constexpr):
        """A query's segment, bidirectional id (-2 when it shares with nobody) and ALiBi position."""
        unused = tl.zeros(offs.shape, tl.int32)  # folded away: the flags keep it out of every mask
        group = tl.load(GROUP_IDS + base + offs) if HAS_SEG else unused
        bid = unused
        if HAS_BID:
            bid = tl.load(BID + base + offs)
            bid = tl.where(bid >= 0, bid, -2)  # keys hold -1 there: never equal
        pos = tl.load(POS + base + offs) if HAS_ALIBI else unused
        return group, bid, pos

    @triton.jit
    def _key_attributes(KEY_GROUP, BID, POS, base, offs, valid, HAS_GROUP: tl.constexpr, HAS_BID: tl.constexpr,
                        HAS_ALIBI: tl.constexpr):
        """A key's group (segment, or -1 for padding and past the end), bidirectional id and position."""
        unused = tl.zeros(offs.shape, tl.int32)
        group = tl.load(KEY_GROUP + base + offs, mask=valid, other=-1) if HAS_GROUP else unused
        bid = tl.load(BID + base + offs, mask=valid, other=-1) if HAS_BID else unused
        pos = tl.load(POS + base + offs, mask=valid, other=0) if HAS_ALIBI else unused
        return group, bid, pos

    @triton.jit
    def _masked_scores(qk, q_pos, k_pos, q_group, k_group, q_bid, k_bid, q_alibi, k_alibi, slope, LK,
                       CAUSAL: tl.constexpr, HAS_GROUP: tl.constexpr, HAS_BID: tl.constexpr,
                       HAS_ALIBI: tl.constexpr):
        """The contract's rules on one tile of scores (log2 units): ALiBi added, hidden pairs -inf.

        Query and key attributes come expanded to broadcast against each other, (M, 1) with
        (1, N), or (1, M) with (N, 1) for the key-major backward. Padding and segments are one
        comparison of groups (keys past the end and padding keys hold -1, queries >= 0)."""
        if HAS_ALIBI:
            qk -= slope * tl.abs(q_alibi - k_alibi).to(tl.float32)
        if HAS_GROUP:
            visible = q_group == k_group
        else:
            visible = k_pos < LK
        if CAUSAL:
            allowed = k_pos <= q_pos
            if HAS_BID:
                allowed = allowed | (q_bid == k_bid)
            visible = visible & allowed
        return tl.where(visible, qk, float("-inf"))

    @triton.jit
    def _real_keys(n_valid, k_group, HAS_GROUP: tl.constexpr):
        """Keys that exist and are not padding: loaded as they are; others are read as zeros, since a
        probability of 0 times a NaN in a padding row would still be NaN."""
        if HAS_GROUP:
            return k_group >= 0  # -1: padding, or past the end
        else:
            return n_valid

    @triton.jit
    def _dot(a, b, IEEE_DOT: tl.constexpr):
        """fp32 inputs multiply in full precision (not TF32), so fp32 matches the reference."""
        if IEEE_DOT:
            return tl.dot(a, b, input_precision="ieee")
        else:
            return tl.dot(a, b)

    @triton.jit
    def _loop_bounds(LO, HI, FULL_LO, FULL_HI, base, offs, valid, length, BLOCK: tl.constexpr):
        """The tiles one program walks for its rows (``offs``): ``[lo, hi)`` covers every row's
        visible range, tile-aligned from ``lo``; ``[full_start, full_end)`` holds the tiles every
        row sees whole or not at all (both ``lo`` when there are none). The walk is partial tiles
        up to ``full_start``, full tiles, then partial tiles from ``full_end``."""
        lo = (tl.min(tl.load(LO + base + offs, mask=valid, other=length)) // BLOCK) * BLOCK
        hi = tl.max(tl.load(HI + base + offs, mask=valid, other=-1)) + 1
        full_lo = tl.max(tl.load(FULL_LO + base + offs, mask=valid, other=0))
        full_hi = tl.min(tl.load(FULL_HI + base + offs, mask=valid, other=length))
        full_start = tl.maximum(tl.cdiv(full_lo, BLOCK) * BLOCK, lo)
        full_end = (tl.maximum(full_hi + 1, 0) // BLOCK) * BLOCK
        none = full_end <= full_start
        return lo, hi, tl.where(none, lo, full_start), tl.where(none, lo, full_end)

    @triton.jit
    def _sees_nothing(LO, HI, offsets, valid):
        """Queries whose key range is empty: they took part in full tiles only to be zeroed."""
        return tl.load(LO + offsets, mask=valid, other=0) > tl.load(HI + offsets, mask=valid, other=0)

    @triton.jit
    def _alibi_on_full_tile(qk, POS, base, start_n, q_alibi, slope, BLOCK_N: tl.constexpr):
        """A full key tile's ALiBi term: its keys are consecutive real tokens of one segment, so
        their positions count up from the first one's (one load instead of a tile's)."""
        k_alibi = tl.load(POS + base + start_n) + tl.arange(0, BLOCK_N)
        return qk - slope * tl.abs(q_alibi - k_alibi[None, :]).to(tl.float32)

    @triton.jit
    def _forward_step(acc, l_i, m_i, q, K, V, KEY_GROUP, BID, POS, b, kv_h, start_n, q_pos, q_group, q_bid,
                      q_alibi, slope, qk_scale, LK, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh,
                      stride_vn, D: tl.constexpr, CAUSAL: tl.constexpr, HAS_GROUP: tl.constexpr,
                      HAS_BID: tl.constexpr, HAS_ALIBI: tl.constexpr, IEEE_DOT: tl.constexpr,
                      BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
        """One key tile of the online softmax. A full tile (``MASKED`` false) is visible to every
        row that sees anything: no mask, no load but K and V (and one ALiBi position), and every
        score finite."""
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = K + _tile_t(b, kv_h, offs_n, stride_kb, stride_kh, stride_kn, D)
        v_ptrs = V + _tile(b, kv_h, offs_n, stride_vb, stride_vh, stride_vn, D)
        if MASKED:
            n_valid = offs_n < LK
            k_group, k_bid, k_alibi = _key_attributes(KEY_GROUP, BID, POS, b * LK, offs_n, n_valid,
                                                      HAS_GROUP, HAS_BID, HAS_ALIBI)
            qk = _masked_scores(_dot(q, tl.load(k_ptrs, mask=n_valid[None, :], other=0.0), IEEE_DOT) * qk_scale,
                                q_pos, offs_n[None, :], q_group, k_group[None, :], q_bid, k_bid[None, :], q_alibi,
                                k_alibi[None, :], slope, LK, CAUSAL, HAS_GROUP, HAS_BID, HAS_ALIBI)
            v = tl.load(v_ptrs, mask=_real_keys(n_valid, k_group, HAS_GROUP)[:, None], other=0.0)
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen nothing yet
        else:
            qk = _dot(q, tl.load(k_ptrs), IEEE_DOT) * qk_scale
            if HAS_ALIBI:
                qk = _alibi_on_full_tile(qk, POS, b * LK, start_n, q_alibi, slope, BLOCK_N)
            v = tl.load(v_ptrs)
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_safe = m_new
        p = tl.exp2(qk - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE_DOT)
        return acc, l_i, m_new

    @triton.autotune(configs=_pool("forward"), key=AUTOTUNE_KEY, prune_configs_by=dict(early_config_prune=_pruner("forward")))
    @triton.jit
    def _forward_kernel(Q, K, V, O, LSE, SEG, KEY_GROUP, BID, POS, SLOPES, KEY_LO, KEY_HI, FULL_LO, FULL_HI,
                        stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                        stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                        H, sm_scale, LQ, LK, LQ_BUCKET, LK_BUCKET, D: tl.constexpr, GROUP: tl.constexpr, CAUSAL: tl.constexpr,
                        HAS_PAD: tl.constexpr, HAS_SEG: tl.constexpr, HAS_BID: tl.constexpr,
                        HAS_ALIBI: tl.constexpr, IEEE_DOT: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        HAS_GROUP: tl.constexpr = HAS_PAD or HAS_SEG
        start_m = tl.program_id(0) * BLOCK_M
        batch_head = tl.program_id(1)
        b = batch_head // H
        h = batch_head % H
        kv_h = h // GROUP
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_valid = offs_m < LQ
        query_pos = offs_m + (LK - LQ)
        q = tl.load(Q + _tile(b, h, offs_m, stride_qb, stride_qh, stride_qm, D), mask=m_valid[:, None], other=0.0)
        q_group, q_bid, q_alibi = _query_attributes(SEG, BID, POS, b * LK, tl.minimum(query_pos, LK - 1),
                                                    HAS_SEG, HAS_BID, HAS_ALIBI)
        q_pos, q_group, q_bid, q_alibi = query_pos[:, None], q_group[:, None], q_bid[:, None], q_alibi[:, None]
        qk_scale = sm_scale * _LOG2E
        slope = tl.load(SLOPES + h) if HAS_ALIBI else 0.0

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        lo, hi, full_start, full_end = _loop_bounds(KEY_LO, KEY_HI, FULL_LO, FULL_HI, b * LQ, offs_m, m_valid, LK,
                                                    BLOCK_N)
        for start_n in range(lo, full_start, BLOCK_N):
            acc, l_i, m_i = _forward_step(acc, l_i, m_i, q, K, V, KEY_GROUP, BID, POS, b, kv_h, start_n, q_pos,
                                          q_group, q_bid, q_alibi, slope, qk_scale, LK, stride_kb, stride_kh,
                                          stride_kn, stride_vb, stride_vh, stride_vn, D, CAUSAL, HAS_GROUP, HAS_BID,
                                          HAS_ALIBI, IEEE_DOT, BLOCK_N, True)
        for start_n in range(full_start, full_end, BLOCK_N):
            acc, l_i, m_i = _forward_step(acc, l_i, m_i, q, K, V, KEY_GROUP, BID, POS, b, kv_h, start_n, q_pos,
                                          q_group, q_bid, q_alibi, slope, qk_scale, LK, stride_kb, stride_kh,
                                          stride_kn, stride_vb, stride_vh, stride_vn, D, CAUSAL, HAS_GROUP, HAS_BID,
                                          HAS_ALIBI, IEEE_DOT, BLOCK_N, False)
        for start_n in range(full_end, hi, BLOCK_N):
            acc, l_i, m_i = _forward_step(acc, l_i, m_i, q, K, V, KEY_GROUP, BID, POS, b, kv_h, start_n, q_pos,
                                          q_group, q_bid, q_alibi, slope, qk_scale, LK, stride_kb, stride_kh,
                                          stride_kn, stride_vb, stride_vh, stride_vn, D, CAUSAL, HAS_GROUP, HAS_BID,
                                          HAS_ALIBI, IEEE_DOT, BLOCK_N, True)
        empty = (l_i == 0.0) | _sees_nothing(KEY_LO, KEY_HI, b * LQ + offs_m, m_valid)
        out = acc * tl.where(empty, 0.0, 1.0 / l_i)[:, None]
        tl.store(O + _tile(b, h, offs_m, stride_ob, stride_oh, stride_om, D),
                 out.to(O.dtype.element_ty), mask=m_valid[:, None])
        # log2-sum-exp2 of each row; +inf for empty rows makes their backward probabilities 0.
        tl.store(LSE + batch_head * LQ + offs_m, tl.where(empty, float("inf"), m_i + tl.log2(l_i)), mask=m_valid)

    @triton.jit
    def _dkdv_step(dk, dv, k, v, Q, DO, LSE, DELTA, SEG, BID, POS, SLOPES, b, h, start_m, k_pos, k_group, k_bid,
                   k_alibi, qk_scale, H, LQ, LK, stride_qb, stride_qh, stride_qm, stride_ob, stride_oh, stride_om,
                   D: tl.constexpr, CAUSAL: tl.constexpr, HAS_GROUP: tl.constexpr, HAS_SEG: tl.constexpr,
                   HAS_BID: tl.constexpr, HAS_ALIBI: tl.constexpr, IEEE_DOT: tl.constexpr, BLOCK_M: tl.constexpr,
                   MASKED: tl.constexpr):
        """One query tile of head ``h`` into a key tile's dK and dV (key-major: scores as keys x
        queries). A full tile's queries all exist and see every key: no mask, no id loads."""
        offs_m = start_m + tl.arange(0, BLOCK_M)
        query_pos = offs_m + (LK - LQ)
        q_ptrs = Q + _tile_t(b, h, offs_m, stride_qb, stride_qh, stride_qm, D)
        do_ptrs = DO + _tile(b, h, offs_m, stride_ob, stride_oh, stride_om, D)
        rows = (b * H + h) * LQ + offs_m
        if MASKED:
            m_valid = offs_m < LQ
            q_group, q_bid, q_alibi = _query_attributes(SEG, BID, POS, b * LK, tl.minimum(query_pos, LK - 1),
                                                        HAS_SEG, HAS_BID, HAS_ALIBI)
            q_t = tl.load(q_ptrs, mask=m_valid[None, :], other=0.0)
            do = tl.load(do_ptrs, mask=m_valid[:, None], other=0.0)
            # Queries past the end: lse = +inf gives them probability 0.
            lse = tl.load(LSE + rows, mask=m_valid, other=float("inf"))
            delta = tl.load(DELTA + rows, mask=m_valid, other=0.0)
            slope = tl.load(SLOPES + h) if HAS_ALIBI else 0.0
            qk_t = _masked_scores(_dot(k, q_t, IEEE_DOT) * qk_scale, query_pos[None, :], k_pos, q_group[None, :],
                                  k_group, q_bid[None, :], k_bid, q_alibi[None, :], k_alibi, slope, LK, CAUSAL,
                                  HAS_GROUP, HAS_BID, HAS_ALIBI)
        else:
            q_t = tl.load(q_ptrs)
            do = tl.load(do_ptrs)
            lse = tl.load(LSE + rows)
            delta = tl.load(DELTA + rows)
            qk_t = _dot(k, q_t, IEEE_DOT) * qk_scale
            if HAS_ALIBI:  # queries may be padding positions: their positions are loaded
                q_alibi = tl.load(POS + b * LK + query_pos)
                qk_t -= tl.load(SLOPES + h) * tl.abs(q_alibi[None, :] - k_alibi).to(tl.float32)
        p_t = tl.exp2(qk_t - lse[None, :])
        dv += _dot(p_t.to(do.dtype), do, IEEE_DOT)
        ds_t = p_t * (_dot(v, tl.trans(do), IEEE_DOT) - delta[None, :])
        dk += _dot(ds_t.to(q_t.dtype), tl.trans(q_t), IEEE_DOT)
        return dk, dv

    @triton.autotune(configs=_pool("dkdv"), key=AUTOTUNE_KEY, prune_configs_by=dict(early_config_prune=_pruner("dkdv")))
    @triton.jit
    def _backward_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, SEG, KEY_GROUP, BID, POS, SLOPES, QUERY_LO,
                              QUERY_HI, FULL_QUERY_LO, FULL_QUERY_HI,
                              stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                              stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                              H, sm_scale, LQ, LK, LQ_BUCKET, LK_BUCKET, D: tl.constexpr, GROUP: tl.constexpr, CAUSAL: tl.constexpr,
                              HAS_PAD: tl.constexpr, HAS_SEG: tl.constexpr, HAS_BID: tl.constexpr,
                              HAS_ALIBI: tl.constexpr, IEEE_DOT: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """dK and dV of one key tile, summed over the query heads of its GQA group (no atomics).

        Key-major throughout (scores as keys x queries, q and dO loaded transposed), as in the
        Triton tutorial: no register transposes of p or dS. Each of the three ranges of query
        tiles (partial, full, partial) is one flat loop over (head of the group, query tile): a
        single software-pipelined loop each."""
        HAS_GROUP: tl.constexpr = HAS_PAD or HAS_SEG
        start_n = tl.program_id(0) * BLOCK_N
        batch_kv_head = tl.program_id(1)
        hkv = H // GROUP
        b = batch_kv_head // hkv
        kv_h = batch_kv_head % hkv
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_valid = offs_n < LK
        k_group, k_bid, k_alibi = _key_attributes(KEY_GROUP, BID, POS, b * LK, offs_n, n_valid,
                                                  HAS_GROUP, HAS_BID, HAS_ALIBI)
        real = _real_keys(n_valid, k_group, HAS_GROUP)[:, None]
        k = tl.load(K + _tile(b, kv_h, offs_n, stride_kb, stride_kh, stride_kn, D), mask=real, other=0.0)
        v = tl.load(V + _tile(b, kv_h, offs_n, stride_vb, stride_vh, stride_vn, D), mask=real, other=0.0)
        k_pos, k_group, k_bid, k_alibi = offs_n[:, None], k_group[:, None], k_bid[:, None], k_alibi[:, None]
        qk_scale = sm_scale * _LOG2E
        dk = tl.zeros([BLOCK_N, D], tl.float32)
        dv = tl.zeros([BLOCK_N, D], tl.float32)
        lo, hi, full_start, full_end = _loop_bounds(QUERY_LO, QUERY_HI, FULL_QUERY_LO, FULL_QUERY_HI, b * LK, offs_n,
                                                    n_valid, LQ, BLOCK_M)
        n_tiles = tl.cdiv(full_start - lo, BLOCK_M)
        for step in range(0, GROUP * n_tiles):
            dk, dv = _dkdv_step(dk, dv, k, v, Q, DO, LSE, DELTA, SEG, BID, POS, SLOPES, b,
                                kv_h * GROUP + step // n_tiles, lo + (step % n_tiles) * BLOCK_M, k_pos, k_group, k_bid,
                                k_alibi, qk_scale, H, LQ, LK, stride_qb, stride_qh, stride_qm, stride_ob, stride_oh,
                                stride_om, D, CAUSAL, HAS_GROUP, HAS_SEG, HAS_BID, HAS_ALIBI, IEEE_DOT, BLOCK_M, True)
        n_tiles = tl.cdiv(full_end - full_start, BLOCK_M)
        for step in range(0, GROUP * n_tiles):
            dk, dv = _dkdv_step(dk, dv, k, v, Q, DO, LSE, DELTA, SEG, BID, POS, SLOPES, b,
                                kv_h * GROUP + step // n_tiles, full_start + (step % n_tiles) * BLOCK_M, k_pos, k_group,
                                k_bid, k_alibi, qk_scale, H, LQ, LK, stride_qb, stride_qh, stride_qm, stride_ob,
                                stride_oh, stride_om, D, CAUSAL, HAS_GROUP, HAS_SEG, HAS_BID, HAS_ALIBI, IEEE_DOT,
                                BLOCK_M, False)
        n_tiles = tl.cdiv(hi - full_end, BLOCK_M)
        for step in range(0, GROUP * n_tiles):
            dk, dv = _dkdv_step(dk, dv, k, v, Q, DO, LSE, DELTA, SEG, BID, POS, SLOPES, b,
                                kv_h * GROUP + step // n_tiles, full_end + (step % n_tiles) * BLOCK_M, k_pos, k_group,
                                k_bid, k_alibi, qk_scale, H, LQ, LK, stride_qb, stride_qh, stride_qm, stride_ob,
                                stride_oh, stride_om, D, CAUSAL, HAS_GROUP, HAS_SEG, HAS_BID, HAS_ALIBI, IEEE_DOT,
                                BLOCK_M, True)
        # Padding keys took part in full tiles (read as zeros) only to be zeroed here (recomputed
        # from the live group ids rather than keeping the load's mask alive through the loops).
        kept = tl.where(_real_keys(offs_n[:, None] < LK, k_group, HAS_GROUP), 1.0, 0.0)
        tl.store(DK + _tile(b, kv_h, offs_n, stride_kb, stride_kh, stride_kn, D),
                 (dk * (kept * sm_scale)).to(DK.dtype.element_ty), mask=n_valid[:, None])
        tl.store(DV + _tile(b, kv_h, offs_n, stride_vb, stride_vh, stride_vn, D),
                 (dv * kept).to(DV.dtype.element_ty), mask=n_valid[:, None])

    @triton.jit
    def _dq_step(dq, q, do, lse, delta, K, V, KEY_GROUP, BID, POS, b, kv_h, start_n, q_pos, q_group, q_bid,
                 q_alibi, slope, qk_scale, LK, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
                 D: tl.constexpr, CAUSAL: tl.constexpr, HAS_GROUP: tl.constexpr, HAS_BID: tl.constexpr,
                 HAS_ALIBI: tl.constexpr, IEEE_DOT: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
        """One key tile into a query tile's dQ; a full tile as in ``_forward_step``."""
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = K + _tile(b, kv_h, offs_n, stride_kb, stride_kh, stride_kn, D)
        v_ptrs = V + _tile_t(b, kv_h, offs_n, stride_vb, stride_vh, stride_vn, D)
        if MASKED:
            n_valid = offs_n < LK
            k_group, k_bid, k_alibi = _key_attributes(KEY_GROUP, BID, POS, b * LK, offs_n, n_valid,
                                                      HAS_GROUP, HAS_BID, HAS_ALIBI)
            real = _real_keys(n_valid, k_group, HAS_GROUP)
            k = tl.load(k_ptrs, mask=real[:, None], other=0.0)
            v_t = tl.load(v_ptrs, mask=real[None, :], other=0.0)
            qk = _masked_scores(_dot(q, tl.trans(k), IEEE_DOT) * qk_scale, q_pos, offs_n[None, :], q_group,
                                k_group[None, :], q_bid, k_bid[None, :], q_alibi, k_alibi[None, :], slope, LK,
                                CAUSAL, HAS_GROUP, HAS_BID, HAS_ALIBI)
        else:
            k = tl.load(k_ptrs)
            v_t = tl.load(v_ptrs)
            qk = _dot(q, tl.trans(k), IEEE_DOT) * qk_scale
            if HAS_ALIBI:
                qk = _alibi_on_full_tile(qk, POS, b * LK, start_n, q_alibi, slope, BLOCK_N)
        p = tl.exp2(qk - lse[:, None])
        ds = p * (_dot(do, v_t, IEEE_DOT) - delta[:, None])
        return dq + _dot(ds.to(k.dtype), k, IEEE_DOT)

    @triton.autotune(configs=_pool("dq"), key=AUTOTUNE_KEY, prune_configs_by=dict(early_config_prune=_pruner("dq")))
    @triton.jit
    def _backward_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, SEG, KEY_GROUP, BID, POS, SLOPES, KEY_LO, KEY_HI, FULL_LO,
                            FULL_HI, stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                            stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                            H, sm_scale, LQ, LK, LQ_BUCKET, LK_BUCKET, D: tl.constexpr, GROUP: tl.constexpr, CAUSAL: tl.constexpr,
                            HAS_PAD: tl.constexpr, HAS_SEG: tl.constexpr, HAS_BID: tl.constexpr,
                            HAS_ALIBI: tl.constexpr, IEEE_DOT: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        HAS_GROUP: tl.constexpr = HAS_PAD or HAS_SEG
        start_m = tl.program_id(0) * BLOCK_M
        batch_head = tl.program_id(1)
        b = batch_head // H
        h = batch_head % H
        kv_h = h // GROUP
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_valid = offs_m < LQ
        query_pos = offs_m + (LK - LQ)
        q = tl.load(Q + _tile(b, h, offs_m, stride_qb, stride_qh, stride_qm, D), mask=m_valid[:, None], other=0.0)
        do = tl.load(DO + _tile(b, h, offs_m, stride_ob, stride_oh, stride_om, D), mask=m_valid[:, None], other=0.0)
        lse = tl.load(LSE + batch_head * LQ + offs_m, mask=m_valid, other=float("inf"))
        delta = tl.load(DELTA + batch_head * LQ + offs_m, mask=m_valid, other=0.0)
        q_group, q_bid, q_alibi = _query_attributes(SEG, BID, POS, b * LK, tl.minimum(query_pos, LK - 1),
                                                    HAS_SEG, HAS_BID, HAS_ALIBI)
        q_pos, q_group, q_bid, q_alibi = query_pos[:, None], q_group[:, None], q_bid[:, None], q_alibi[:, None]
        qk_scale = sm_scale * _LOG2E
        slope = tl.load(SLOPES + h) if HAS_ALIBI else 0.0
        dq = tl.zeros([BLOCK_M, D], tl.float32)
        lo, hi, full_start, full_end = _loop_bounds(KEY_LO, KEY_HI, FULL_LO, FULL_HI, b * LQ, offs_m, m_valid, LK,
                                                    BLOCK_N)
        for start_n in range(lo, full_start, BLOCK_N):
            dq = _dq_step(dq, q, do, lse, delta, K, V, KEY_GROUP, BID, POS, b, kv_h, start_n, q_pos, q_group, q_bid,
                          q_alibi, slope, qk_scale, LK, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh,
                          stride_vn, D, CAUSAL, HAS_GROUP, HAS_BID, HAS_ALIBI, IEEE_DOT, BLOCK_N, True)
        for start_n in range(full_start, full_end, BLOCK_N):
            dq = _dq_step(dq, q, do, lse, delta, K, V, KEY_GROUP, BID, POS, b, kv_h, start_n, q_pos, q_group, q_bid,
                          q_alibi, slope, qk_scale, LK, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh,
                          stride_vn, D, CAUSAL, HAS_GROUP, HAS_BID, HAS_ALIBI, IEEE_DOT, BLOCK_N, False)
        for start_n in range(full_end, hi, BLOCK_N):
            dq = _dq_step(dq, q, do, lse, delta, K, V, KEY_GROUP, BID, POS, b, kv_h, start_n, q_pos, q_group, q_bid,
                          q_alibi, slope, qk_scale, LK, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh,
                          stride_vn, D, CAUSAL, HAS_GROUP, HAS_BID, HAS_ALIBI, IEEE_DOT, BLOCK_N, True)
        # A query that sees nothing has lse = +inf: its probabilities, full tiles included, are 0.
        tl.store(DQ + _tile(b, h, offs_m, stride_qb, stride_qh, stride_qm, D),
                 (dq * sm_scale).to(DQ.dtype.element_ty), mask=m_valid[:, None])


# ----------------------------------------------------------------------------- host side

def _id_runs(ids: torch.Tensor):
    """Per position of ``ids`` (B, L): a dense id (0..n-1 within its row), the first and last
    position holding the same id, and whether those positions are one contiguous run."""
    batch, length = ids.shape
    order, starts = _sorted_runs(ids)
    run = starts.long().cumsum(1) - 1

    def per_run(value, reduce, source):
        start = torch.full((batch, length), value, dtype=torch.long, device=ids.device)
        return start.scatter_reduce(1, run, source, reduce)

    dense = _unsort(run, order)
    first, last, count = (per_run(*how).gather(1, dense) for how in
                          ((length, "amin", order), (-1, "amax", order), (0, "sum", torch.ones_like(run))))
    return dense.int(), first, last, count == last - first + 1


def _hole_free_run(real: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Within each range ``[lo, hi]`` of key positions (one per row of ``lo``/``hi``, (B, N)): the
    longest range of real keys that ends at the last real key at or before ``hi``."""
    length = real.shape[1]
    keys = torch.arange(length, device=real.device).expand_as(real)
    last_real = torch.where(real, keys, -1).cummax(1).values
    last_pad = torch.where(real, -1, keys).cummax(1).values
    end = torch.where(hi >= 0, last_real.gather(1, hi.clamp(0, length - 1)), -1)
    start = torch.maximum(lo, last_pad.gather(1, end.clamp(min=0)) + 1)
    return start, end


class AttentionLayout:
    """Who sees whom in one call shape: the contract's masks, and the arrays the kernels read.

    For each query, the range of keys it may see (the loop bounds: tiles outside are skipped)
    and the range it sees whole (keys all real, of its segment and visible under its rule); for
    each key, the same two ranges of queries, for the dK/dV kernel. A tile inside the second
    range for every row of a kernel's tile is *full*: the kernels read it with no mask code and
    no padding, segment or id loads; the rest of the first range is *partial* (the diagonal,
    span and padding boundaries). Built with tensor ops on the masks' device, with no host
    synchronisation and no shape that depends on the data (a stable sort per row stands in for
    ``torch.unique``).

    ``partial_attention`` builds one per call. A model builds one per forward pass and hands it
    to every layer (``partial_attention(q, k, v, layout=layout)``): the forward arrays are built
    on first use by the forward kernel, the backward's only when a backward runs. Where the
    kernels do not run, the dense mask is built once instead (``dense_mask``). The reference
    backend reads the masks and builds nothing.
    """

    def __init__(self, batch: int, lq: int, lk: int, *, key_padding_mask=None, segment_ids=None,
                 bidirectional_ids=None, causal: bool = True, alibi_slopes=None):
        self.batch, self.lq, self.lk, self.causal = batch, lq, lk, causal
        self.key_padding_mask, self.segment_ids = key_padding_mask, segment_ids
        self.bidirectional_ids, self.alibi_slopes = bidirectional_ids, alibi_slopes
        self.flags = dict(CAUSAL=causal, HAS_PAD=key_padding_mask is not None, HAS_SEG=segment_ids is not None,
                          HAS_BID=bidirectional_ids is not None, HAS_ALIBI=alibi_slopes is not None)
        self._forward_arrays = self._backward_arrays = None
        self._runs = {}  # per-id runs of the segment and bidirectional ids, from the forward build
        self._dense = {}  # (dtype, device) -> dense_mask's mask for the CPU path

    @property
    def masks(self) -> dict:
        return dict(key_padding_mask=self.key_padding_mask, segment_ids=self.segment_ids,
                    bidirectional_ids=self.bidirectional_ids, causal=self.causal, alibi_slopes=self.alibi_slopes)

    def dense_mask(self, dtype, device):
        """``(mask, seen)`` for ``scaled_dot_product_attention``, built on first use: the
        visibility as a boolean ``(B, 1, Lq, Lk)`` mask, or with ALiBi an additive ``(B, H, Lq,
        Lk)`` bias of ``dtype``; ``seen`` (B, 1, Lq, 1) is 0 on rows that see no key (their
        mask lets every key through, so the softmax stays finite, and the output is zeroed), or
        None when every row sees one."""
        key = (dtype, device)
        if key not in self._dense:
            visible = visibility(self.batch, self.lq, self.lk, device, self.key_padding_mask, self.segment_ids,
                                 self.bidirectional_ids, self.causal)[:, None]
            any_visible = visible.any(-1, keepdim=True)
            visible = visible | ~any_visible
            mask = visible
            if self.alibi_slopes is not None:
                pos = alibi_positions(self.key_padding_mask, self.segment_ids, self.batch, self.lk, device).float()
                distance = (pos[:, self.lk - self.lq:, None] - pos[:, None, :]).abs()
                bias = -self.alibi_slopes.float().to(device)[None, :, None, None] * distance[:, None]
                mask = bias.masked_fill(~visible, float("-inf")).to(dtype)
            seen = None if bool(any_visible.all()) else any_visible.to(dtype)
            self._dense[key] = (mask, seen)
        return self._dense[key]

    def forward_arrays(self, device) -> dict:
        if self._forward_arrays is None:
            self._forward_arrays = self._build_forward(device)
        return self._forward_arrays

    def backward_arrays(self, device) -> dict:
        if self._backward_arrays is None:
            self._backward_arrays = self._build_backward(device)
        return self._backward_arrays

    def _build_forward(self, device) -> dict:
        """Per-position attributes (int32, (B, Lk)) and each query's key ranges: [key_lo, key_hi]
        it may see, [full_lo, full_hi] it sees whole (empty when full_lo > full_hi)."""
        batch, lq, lk = self.batch, self.lq, self.lk
        long = dict(dtype=torch.long, device=device)
        at_queries = slice(lk - lq, lk)
        query_pos = torch.arange(lk - lq, lk, **long).expand(batch, lq)
        key_lo = torch.zeros(batch, lq, **long)
        key_hi = query_pos.clone() if self.causal else torch.full((batch, lq), lk - 1, **long)
        full_lo, full_hi = key_lo.clone(), key_hi.clone()
        dummy = torch.zeros(1, dtype=torch.int32, device=device)
        seg = key_group = bid = pos = dummy
        if self.bidirectional_ids is not None:
            bid = torch.where(self.bidirectional_ids >= 0, self.bidirectional_ids, -1).int().contiguous()
            if self.causal:  # a query of a shared span also sees the span ahead of it
                _, first, last, contiguous = self._runs["bid"] = _id_runs(self.bidirectional_ids)
                shared = (self.bidirectional_ids >= 0)[:, at_queries]
                key_hi = torch.where(shared, torch.maximum(key_hi, last[:, at_queries]), key_hi)
                whole = shared & contiguous[:, at_queries]  # a span in pieces: its gaps are hidden
                full_hi = torch.where(whole, torch.maximum(full_hi, last[:, at_queries]), full_hi)
        if self.segment_ids is not None:
            seg, first, last, contiguous = self._runs["seg"] = _id_runs(self.segment_ids)
            first, last, contiguous = first[:, at_queries], last[:, at_queries], contiguous[:, at_queries]
            key_lo, key_hi = torch.maximum(key_lo, first), torch.minimum(key_hi, last)
            full_lo = torch.maximum(full_lo, first)
            full_hi = torch.where(contiguous, torch.minimum(full_hi, last), -1)
            seg = key_group = seg.contiguous()
        if self.key_padding_mask is not None:
            real = self.key_padding_mask.bool()
            keys = torch.arange(lk, **long).expand(batch, lk)
            first_real = torch.where(real, keys, lk).min(1, keepdim=True).values
            last_real = torch.where(real, keys, -1).max(1, keepdim=True).values
            key_lo, key_hi = torch.maximum(key_lo, first_real), torch.minimum(key_hi, last_real)
            full_lo, full_hi = _hole_free_run(real, full_lo, full_hi)
            # Padding and segments compare as one group id per key: -1 (padding) matches no query.
            key_group = torch.where(real, seg if self.segment_ids is not None else 0, -1).int().contiguous()
        # A query that can see no key at all (a left pad, say) writes zeros whatever its tiles: it
        # does not narrow its tile's full range (the kernels zero its output instead).
        empty = key_lo > key_hi
        full_lo, full_hi = torch.where(empty, 0, full_lo), torch.where(empty, lk - 1, full_hi)
        if self.alibi_slopes is not None:
            pos = alibi_positions(self.key_padding_mask, self.segment_ids, batch, lk, device).contiguous()
        slopes = dummy.float() if self.alibi_slopes is None else (self.alibi_slopes.float() * LOG2E).contiguous()
        int32 = lambda t: t.int().contiguous()  # noqa: E731
        return dict(seg=seg, key_group=key_group, bid=bid, pos=pos, slopes=slopes, key_lo=int32(key_lo),
                    key_hi=int32(key_hi), full_lo=int32(full_lo), full_hi=int32(full_hi))

    def _build_backward(self, device) -> dict:
        """Each key's query ranges (query indices), for the dK/dV kernel: [query_lo, query_hi] that
        may see it, [full_query_lo, full_query_hi] that all see it."""
        self.forward_arrays(device)
        batch, lq, lk = self.batch, self.lq, self.lk
        long = dict(dtype=torch.long, device=device)
        offset = lk - lq
        keys = torch.arange(lk, **long).expand(batch, lk)
        pos_lo = keys.clone() if self.causal else torch.zeros(batch, lk, **long)
        pos_hi = torch.full((batch, lk), lk - 1, **long)
        full_lo, full_hi = pos_lo.clone(), pos_hi.clone()
        if "bid" in self._runs:  # a key of a shared span is seen by the whole span
            _, first, _, contiguous = self._runs["bid"]
            shared = self.bidirectional_ids >= 0
            pos_lo = torch.where(shared, torch.minimum(pos_lo, first), pos_lo)
            full_lo = torch.where(shared & contiguous, torch.minimum(full_lo, first), full_lo)
        if "seg" in self._runs:
            _, first, last, contiguous = self._runs["seg"]
            pos_lo, pos_hi = torch.maximum(pos_lo, first), torch.minimum(pos_hi, last)
            full_lo = torch.maximum(full_lo, first)
            full_hi = torch.where(contiguous, torch.minimum(full_hi, last), -1)
        if self.key_padding_mask is not None:  # no query sees a padding key
            real = self.key_padding_mask.bool()
            pos_hi, full_hi = torch.where(real, pos_hi, -1), torch.where(real, full_hi, -1)
        to_queries = lambda lo, hi: ((lo - offset).clamp(min=0).int().contiguous(),  # noqa: E731
                                     (hi - offset).clamp(max=lq - 1).int().contiguous())
        query_lo, query_hi = to_queries(pos_lo, pos_hi)
        full_query_lo, full_query_hi = to_queries(full_lo, full_hi)
        if self.key_padding_mask is not None:  # a padding key's gradients are zeroed instead
            padding = ~self.key_padding_mask.bool()
            full_query_lo = torch.where(padding, 0, full_query_lo).int().contiguous()
            full_query_hi = torch.where(padding, lq - 1, full_query_hi).int().contiguous()
        return dict(query_lo=query_lo, query_hi=query_hi, full_query_lo=full_query_lo, full_query_hi=full_query_hi)


TILE_SKIPPED, TILE_FULL, TILE_PARTIAL = 0, 1, 2


def tile_classes(layout: AttentionLayout, block_m: int, block_n: int, kernel: str = "forward",
                 device="cpu") -> torch.Tensor:
    """What each program of ``kernel`` ("forward", "dq": one per query tile; "dkdv": one per key
    tile) does with each tile of the other side: ``(B, programs, tiles)`` of ``TILE_SKIPPED``,
    ``TILE_FULL`` (no mask code) and ``TILE_PARTIAL``, from the layout's arrays as the kernels'
    ``_loop_bounds`` computes them (the tests check it against the dense mask; the tile report
    counts it)."""
    if kernel == "dkdv":
        arrays = layout.backward_arrays(device)
        lo, hi, full_lo, full_hi = (arrays[name] for name in ("query_lo", "query_hi", "full_query_lo", "full_query_hi"))
        rows, columns, row_block, column_block = layout.lk, layout.lq, block_n, block_m
    else:
        arrays = layout.forward_arrays(device)
        lo, hi, full_lo, full_hi = (arrays[name] for name in ("key_lo", "key_hi", "full_lo", "full_hi"))
        rows, columns, row_block, column_block = layout.lq, layout.lk, block_m, block_n
    n_rows = -(-rows // row_block)
    extra = n_rows * row_block - rows  # rows past the end do not bound the walk

    def per_program(values, fill, reduce):
        values = torch.nn.functional.pad(values.long(), (0, extra), value=fill)
        return getattr(values.view(layout.batch, n_rows, row_block), reduce)(-1, keepdim=True)

    start = per_program(lo, columns, "amin") // column_block * column_block
    stop = per_program(hi, -1, "amax") + 1
    full_start = torch.maximum(-(-per_program(full_lo, 0, "amax") // column_block) * column_block, start)
    full_stop = (per_program(full_hi, columns, "amin") + 1).clamp(min=0) // column_block * column_block
    none = full_stop <= full_start
    full_start, full_stop = torch.where(none, start, full_start), torch.where(none, start, full_stop)
    tiles = torch.arange(0, columns, column_block, device=lo.device)
    visited = (tiles >= start) & (tiles < stop)
    full = (tiles >= full_start) & (tiles < full_stop)
    return torch.where(full, TILE_FULL, torch.where(visited, TILE_PARTIAL, TILE_SKIPPED))


def _strides(*tensors):
    return [stride for t in tensors for stride in t.stride()[:3]]


def _bucket(length: int) -> int:
    return 1 << max(length - 1, 0).bit_length()


class _TritonAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, layout: AttentionLayout, scale: float):
        # The kernels take q, k, v (and write their gradients, allocated alike) with any batch,
        # head and position strides: HF's (B, L, H, D) transposes pass as they are; views with
        # gaps (BLOOM's fused qkv) are copied, since empty_like would not keep their strides.
        q, k, v = (t if t.is_contiguous() or t.transpose(1, 2).is_contiguous() else t.contiguous()
                   for t in (q, k, v))
        batch, heads, lq, dim = q.shape
        lk = k.shape[2]
        out = torch.empty_like(q)
        lse = torch.empty(batch, heads, lq, dtype=torch.float32, device=q.device)
        arrays = layout.forward_arrays(q.device)

        def grid(meta):
            return (triton.cdiv(lq, meta["BLOCK_M"]), batch * heads)

        _forward_kernel[grid](
            q, k, v, out, lse, arrays["seg"], arrays["key_group"], arrays["bid"], arrays["pos"], arrays["slopes"],
            arrays["key_lo"], arrays["key_hi"], arrays["full_lo"], arrays["full_hi"], *_strides(q, k, v, out), heads,
            scale, lq, lk, _bucket(lq),
            _bucket(lk), D=dim, GROUP=heads // k.shape[1], IEEE_DOT=q.dtype == torch.float32, **layout.flags)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.layout, ctx.scale = layout, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        layout = ctx.layout
        grad_out = grad_out.contiguous()
        batch, heads, lq, dim = q.shape
        kv_heads, lk = k.shape[1], k.shape[2]
        delta = (out.float() * grad_out.float()).sum(-1).contiguous()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        arrays = dict(layout.forward_arrays(q.device), **layout.backward_arrays(q.device))
        attributes = [arrays[name] for name in ("seg", "key_group", "bid", "pos", "slopes")]
        lengths = (heads, ctx.scale, lq, lk, _bucket(lq), _bucket(lk))
        common = dict(D=dim, GROUP=heads // kv_heads, IEEE_DOT=q.dtype == torch.float32, **layout.flags)
        _backward_dkdv_kernel[lambda meta: (triton.cdiv(lk, meta["BLOCK_N"]), batch * kv_heads)](
            q, k, v, grad_out, lse, delta, dk, dv, *attributes, arrays["query_lo"], arrays["query_hi"],
            arrays["full_query_lo"], arrays["full_query_hi"], *_strides(q, k, v, grad_out), *lengths, **common)
        _backward_dq_kernel[lambda meta: (triton.cdiv(lq, meta["BLOCK_M"]), batch * heads)](
            q, k, v, grad_out, lse, delta, dq, *attributes, arrays["key_lo"], arrays["key_hi"], arrays["full_lo"],
            arrays["full_hi"], *_strides(q, k, v, grad_out), *lengths, **common)
        return dq, dk, dv, None, None


def _check(q, k, v, key_padding_mask, segment_ids, bidirectional_ids, alibi_slopes, backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (batch, heads, length, head_dim), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    batch, heads, lq, dim = q.shape
    if k.shape != v.shape or k.shape[0] != batch or k.shape[3] != dim:
        raise ValueError(f"k and v must be (batch, kv_heads, Lk, head_dim) matching q {tuple(q.shape)}, "
                         f"got {tuple(k.shape)} and {tuple(v.shape)}")
    if heads < 1 or k.shape[1] < 1:
        raise ValueError(f"query and key/value heads must be at least 1, got {heads} and {k.shape[1]}")
    if heads % k.shape[1]:
        raise ValueError(f"query heads ({heads}) must be a multiple of key/value heads ({k.shape[1]})")
    if lq > k.shape[2]:
        raise ValueError(f"more queries than keys: Lq={lq} > Lk={k.shape[2]}")
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise ValueError(f"q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    for name, ids in (("key_padding_mask", key_padding_mask), ("segment_ids", segment_ids),
                      ("bidirectional_ids", bidirectional_ids)):
        if ids is not None and tuple(ids.shape) != (batch, k.shape[2]):
            raise ValueError(f"{name} must have shape (batch, Lk) = {(batch, k.shape[2])}, got {tuple(ids.shape)}")
        if ids is not None and (ids.is_floating_point() or ids.is_complex()):
            kind = "boolean (or integer, nonzero = real)" if name == "key_padding_mask" else "integer"
            raise ValueError(f"{name} must be {kind}, got {ids.dtype}: a fraction would mean different things "
                             "to different backends")
    if alibi_slopes is not None and tuple(alibi_slopes.shape) != (heads,):
        raise ValueError(f"alibi_slopes must have shape (heads,) = ({heads},), got {tuple(alibi_slopes.shape)}")


def partial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                      key_padding_mask: Optional[torch.Tensor] = None, segment_ids: Optional[torch.Tensor] = None,
                      bidirectional_ids: Optional[torch.Tensor] = None, causal: bool = True,
                      alibi_slopes: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                      backend: str = "auto", layout: Optional[AttentionLayout] = None) -> torch.Tensor:
    """Attention with per-call causal, bidirectional or prefix-LM visibility; see the module doc.

    ``backend="auto"``: the Triton kernels for CUDA tensors (head dims 16-128, powers of two),
    PyTorch's fused attention with a dense mask otherwise (``dense_attention``). ``"triton"``
    forces the kernels (CPU tensors only under ``TRITON_INTERPRET=1``); ``"torch"`` forces the
    reference. ``layout``: an
    ``AttentionLayout`` holding the masks instead of the keyword arguments, shared by the
    layers of one forward pass.
    """
    if layout is not None:
        given = [name for name, value in (("key_padding_mask", key_padding_mask), ("segment_ids", segment_ids),
                                          ("bidirectional_ids", bidirectional_ids), ("alibi_slopes", alibi_slopes))
                 if value is not None] + ([] if causal else ["causal=False"])
        if given:
            raise ValueError(f"pass the masks in the layout or as arguments, not both: got a layout and {given}")
        if (layout.batch, layout.lq, layout.lk) != (q.shape[0], q.shape[2], k.shape[2]):
            raise ValueError(f"the layout was built for (batch, Lq, Lk) = {(layout.batch, layout.lq, layout.lk)}, "
                             f"not {(q.shape[0], q.shape[2], k.shape[2])}")
        masks = layout.masks
    else:
        masks = dict(key_padding_mask=key_padding_mask, segment_ids=segment_ids,
                     bidirectional_ids=bidirectional_ids, causal=causal, alibi_slopes=alibi_slopes)
    _check(q, k, v, masks["key_padding_mask"], masks["segment_ids"], masks["bidirectional_ids"],
           masks["alibi_slopes"], backend)
    if q.numel() == 0:  # no batch or no queries (Lq <= Lk): nothing to attend
        return q * 0
    dim = q.shape[-1]
    scale = dim ** -0.5 if scale is None else float(scale)
    kernel_ok = triton is not None and dim in KERNEL_HEAD_DIMS and (q.is_cuda or _interpreting())
    if backend == "triton" and not kernel_ok:
        raise RuntimeError(
            "backend='triton' needs Triton, a head dim in "
            f"{KERNEL_HEAD_DIMS} (got {dim}) and CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors); "
            f"got {'no Triton' if triton is None else q.device.type + ' tensors'}. Use backend='auto' or 'torch'.")
    if backend == "torch":
        return reference_attention(q, k, v, scale=scale, **masks)
    if layout is None:
        layout = AttentionLayout(q.shape[0], q.shape[2], k.shape[2], **masks)
    if backend == "auto" and not (kernel_ok and q.is_cuda):
        return dense_attention(q, k, v, layout, scale)
    return _TritonAttention.apply(q, k, v, layout, scale)


def dense_attention(q, k, v, layout: AttentionLayout, scale: float) -> torch.Tensor:
    """The contract on PyTorch's fused ``scaled_dot_product_attention`` with the layout's dense
    mask: the path where the kernels do not run (CPU). Unlike the reference (the tests' oracle)
    it builds the mask once per layout, so the layers of a forward pass share it, and it keeps
    the input dtype instead of computing the scores in fp32 beside the model's own tensors."""
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    if layout.key_padding_mask is not None:  # padding keys take no part, whatever they hold (NaN too)
        real = layout.key_padding_mask.bool()[:, None, :, None]
        k, v = k.masked_fill(~real, 0), v.masked_fill(~real, 0)
    mask, seen = layout.dense_mask(q.dtype, q.device)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out if seen is None else out * seen


def attention_flops(batch: int, heads: int, lq: int, lk: int, dim: int, visible_fraction: float = 1.0) -> float:
    """Forward FLOPs of the two matmuls over the visible pairs (the benchmark's TFLOP/s)."""
    return 4.0 * batch * heads * lq * lk * dim * visible_fraction
