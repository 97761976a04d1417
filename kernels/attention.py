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
softmax in fp32, nothing of size Lq x Lk in memory, GQA by indexing (k/v never copied), and
key tiles that no query of a tile can see are skipped (the loop bounds come from per-row key
ranges computed once per call), so causal costs about half of bidirectional. On CPU the
PyTorch reference of the same contract runs (``backend="torch"``); ``TRITON_INTERPRET=1`` runs
the kernels on CPU tensors, which is how the tests check them against the reference.

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

def _first_and_last(ids: torch.Tensor):
    """For each position, the first and last position in its row holding the same id."""
    batch, length = ids.shape
    _, inverse = torch.unique(ids, return_inverse=True)
    n_ids = int(inverse.max()) + 1 if inverse.numel() else 1
    index = torch.arange(length, device=ids.device).expand(batch, length)
    first = torch.full((batch, n_ids), length, device=ids.device, dtype=torch.long)
    last = torch.full((batch, n_ids), -1, device=ids.device, dtype=torch.long)
    first = first.scatter_reduce(1, inverse, index, "amin")
    last = last.scatter_reduce(1, inverse, index, "amax")
    return first.gather(1, inverse), last.gather(1, inverse)


def alibi_positions(key_padding_mask: Optional[torch.Tensor], segment_ids: Optional[torch.Tensor],
                    batch: int, length: int, device) -> torch.Tensor:
    """``pos[b, j]``: how many real tokens of ``j``'s segment come before ``j`` (int32)."""
    real = (torch.ones(batch, length, dtype=torch.long, device=device) if key_padding_mask is None
            else key_padding_mask.long())
    if segment_ids is None:
        return (real.cumsum(1) - real).int()
    _, inverse = torch.unique(segment_ids, return_inverse=True)
    per_segment = torch.nn.functional.one_hot(inverse, int(inverse.max()) + 1) * real[..., None]
    return (per_segment.cumsum(1).gather(2, inverse[..., None])[..., 0] - real).int()


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
    """The contract in plain PyTorch (fp32 scores, dense mask): the CPU path and the tests' oracle."""
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


# ----------------------------------------------------------------------------- Triton kernels

if triton is not None:

    def _configs(block_ms, block_ns, warps, stages):
        if _interpreting():  # the interpreter runs every config: one small one, several tiles
            return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=1, num_stages=1)]
        return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
                for m in block_ms for n in block_ns for w in warps for s in stages]

    FORWARD_CONFIGS = _configs((64, 128), (32, 64, 128), (4, 8), (2, 3))
    BACKWARD_CONFIGS = _configs((32, 64), (32, 64, 128), (4, 8), (2, 3))
    AUTOTUNE_KEY = ["LQ", "LK", "D", "CAUSAL", "HAS_PAD", "HAS_SEG", "HAS_BID", "HAS_ALIBI", "GROUP"]

    _LOG2E = tl.constexpr(LOG2E)  # scores live in log2 units: exp2 is cheaper than exp

    @triton.jit
    def _tile(b, h, rows, stride_b, stride_h, stride_row, D: tl.constexpr):
        """Element offsets of a (rows x D) tile of a (B, H, L, D) tensor with a contiguous last dim."""
        return b * stride_b + h * stride_h + rows[:, None] * stride_row + tl.arange(0, D)[None, :]

    @triton.jit
    def _load_attributes(PAD, SEG, BID, POS, base, offs, valid, HAS_PAD: tl.constexpr, HAS_SEG: tl.constexpr,
                         HAS_BID: tl.constexpr, HAS_ALIBI: tl.constexpr):
        """Per-position padding flag, segment, bidirectional id and ALiBi position (0 when unused)."""
        pad = tl.load(PAD + base + offs, mask=valid, other=0) if HAS_PAD else tl.full(offs.shape, 1, tl.int8)
        seg = tl.load(SEG + base + offs, mask=valid, other=-1) if HAS_SEG else tl.zeros(offs.shape, tl.int32)
        bid = tl.load(BID + base + offs, mask=valid, other=-1) if HAS_BID else tl.zeros(offs.shape, tl.int32)
        pos = tl.load(POS + base + offs, mask=valid, other=0) if HAS_ALIBI else tl.zeros(offs.shape, tl.int32)
        return pad, seg, bid, pos

    @triton.jit
    def _visible(query_pos, query_valid, query_seg, query_bid, key_pos, key_valid, key_pad, key_seg, key_bid,
                 HAS_PAD: tl.constexpr, HAS_SEG: tl.constexpr, HAS_BID: tl.constexpr, CAUSAL: tl.constexpr):
        """The contract's three rules on one (queries x keys) tile."""
        visible = query_valid[:, None] & key_valid[None, :]
        if HAS_PAD:
            visible = visible & (key_pad[None, :] != 0)
        if HAS_SEG:
            visible = visible & (query_seg[:, None] == key_seg[None, :])
        if CAUSAL:
            allowed = key_pos[None, :] <= query_pos[:, None]
            if HAS_BID:
                allowed = allowed | ((query_bid[:, None] >= 0) & (query_bid[:, None] == key_bid[None, :]))
            visible = visible & allowed
        return visible

    @triton.jit
    def _without_padding(tile, key_pad, HAS_PAD: tl.constexpr):
        """A key tile with padding rows zeroed: a probability of 0 times NaN would still be NaN."""
        if HAS_PAD:
            tile = tl.where(key_pad[:, None] != 0, tile, tl.zeros_like(tile))
        return tile

    @triton.jit
    def _dot(a, b, IEEE_DOT: tl.constexpr):
        """fp32 inputs multiply in full precision (not TF32), so fp32 matches the reference."""
        if IEEE_DOT:
            return tl.dot(a, b, input_precision="ieee")
        else:
            return tl.dot(a, b)

    @triton.jit
    def _scores(q, k_t, qk_scale, slope, query_pos, m_valid, q_seg, q_bid, q_alibi, offs_n, n_valid, k_pad, k_seg,
                k_bid, k_alibi, HAS_PAD: tl.constexpr, HAS_SEG: tl.constexpr, HAS_BID: tl.constexpr,
                CAUSAL: tl.constexpr, HAS_ALIBI: tl.constexpr, IEEE_DOT: tl.constexpr):
        """One tile's scores in log2 units, ALiBi included, and which of them are visible."""
        qk = _dot(q, k_t, IEEE_DOT) * qk_scale
        if HAS_ALIBI:
            qk -= slope * tl.abs(q_alibi[:, None] - k_alibi[None, :]).to(tl.float32)
        visible = _visible(query_pos, m_valid, q_seg, q_bid, offs_n, n_valid, k_pad, k_seg, k_bid,
                           HAS_PAD, HAS_SEG, HAS_BID, CAUSAL)
        return qk, visible

    @triton.jit
    def _loop_bounds(LO, HI, base, offs, valid, length, BLOCK: tl.constexpr):
        """The tile-aligned range covering every row's visible range (rows: ``offs``)."""
        lo = tl.min(tl.load(LO + base + offs, mask=valid, other=length))
        hi = tl.max(tl.load(HI + base + offs, mask=valid, other=-1))
        return (lo // BLOCK) * BLOCK, hi + 1

    @triton.autotune(configs=FORWARD_CONFIGS, key=AUTOTUNE_KEY)
    @triton.jit
    def _forward_kernel(Q, K, V, O, LSE, PAD, SEG, BID, POS, SLOPES, KEY_LO, KEY_HI,
                        stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                        stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                        H, sm_scale, LQ, LK, D: tl.constexpr, GROUP: tl.constexpr, CAUSAL: tl.constexpr,
                        HAS_PAD: tl.constexpr, HAS_SEG: tl.constexpr, HAS_BID: tl.constexpr,
                        HAS_ALIBI: tl.constexpr, IEEE_DOT: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        start_m = tl.program_id(0) * BLOCK_M
        batch_head = tl.program_id(1)
        b = batch_head // H
        h = batch_head % H
        kv_h = h // GROUP
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_valid = offs_m < LQ
        query_pos = offs_m + (LK - LQ)
        q = tl.load(Q + _tile(b, h, offs_m, stride_qb, stride_qh, stride_qm, D), mask=m_valid[:, None], other=0.0)
        _, q_seg, q_bid, q_alibi = _load_attributes(PAD, SEG, BID, POS, b * LK, query_pos, m_valid,
                                                    HAS_PAD, HAS_SEG, HAS_BID, HAS_ALIBI)
        qk_scale = sm_scale * _LOG2E
        slope = tl.load(SLOPES + h) if HAS_ALIBI else 0.0

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        lo, hi = _loop_bounds(KEY_LO, KEY_HI, b * LQ, offs_m, m_valid, LK, BLOCK_N)
        for start_n in range(lo, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            n_valid = offs_n < LK
            k = tl.load(K + _tile(b, kv_h, offs_n, stride_kb, stride_kh, stride_kn, D),
                        mask=n_valid[:, None], other=0.0)
            k_pad, k_seg, k_bid, k_alibi = _load_attributes(PAD, SEG, BID, POS, b * LK, offs_n, n_valid,
                                                            HAS_PAD, HAS_SEG, HAS_BID, HAS_ALIBI)
            qk, visible = _scores(q, tl.trans(k), qk_scale, slope, query_pos, m_valid, q_seg, q_bid, q_alibi,
                                  offs_n, n_valid, k_pad, k_seg, k_bid, k_alibi,
                                  HAS_PAD, HAS_SEG, HAS_BID, CAUSAL, HAS_ALIBI, IEEE_DOT)
            qk = tl.where(visible, qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen nothing yet
            p = tl.exp2(qk - m_safe[:, None])
            alpha = tl.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V + _tile(b, kv_h, offs_n, stride_vb, stride_vh, stride_vn, D),
                        mask=n_valid[:, None], other=0.0)
            v = _without_padding(v, k_pad, HAS_PAD)
            acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE_DOT)
            m_i = m_new
        empty = l_i == 0.0
        out = acc / tl.where(empty, 1.0, l_i)[:, None]
        tl.store(O + _tile(b, h, offs_m, stride_ob, stride_oh, stride_om, D),
                 out.to(O.dtype.element_ty), mask=m_valid[:, None])
        # log2-sum-exp2 of each row; +inf for empty rows makes their backward probabilities 0.
        tl.store(LSE + batch_head * LQ + offs_m, tl.where(empty, float("inf"), m_i + tl.log2(l_i)), mask=m_valid)

    @triton.autotune(configs=BACKWARD_CONFIGS, key=AUTOTUNE_KEY)
    @triton.jit
    def _backward_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, PAD, SEG, BID, POS, SLOPES, QUERY_LO, QUERY_HI,
                              stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                              stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                              H, sm_scale, LQ, LK, D: tl.constexpr, GROUP: tl.constexpr, CAUSAL: tl.constexpr,
                              HAS_PAD: tl.constexpr, HAS_SEG: tl.constexpr, HAS_BID: tl.constexpr,
                              HAS_ALIBI: tl.constexpr, IEEE_DOT: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """dK and dV of one key tile, summed over the query heads of its GQA group (no atomics)."""
        start_n = tl.program_id(0) * BLOCK_N
        batch_kv_head = tl.program_id(1)
        hkv = H // GROUP
        b = batch_kv_head // hkv
        kv_h = batch_kv_head % hkv
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_valid = offs_n < LK
        k = tl.load(K + _tile(b, kv_h, offs_n, stride_kb, stride_kh, stride_kn, D), mask=n_valid[:, None], other=0.0)
        v = tl.load(V + _tile(b, kv_h, offs_n, stride_vb, stride_vh, stride_vn, D), mask=n_valid[:, None], other=0.0)
        k_pad, k_seg, k_bid, k_alibi = _load_attributes(PAD, SEG, BID, POS, b * LK, offs_n, n_valid,
                                                        HAS_PAD, HAS_SEG, HAS_BID, HAS_ALIBI)
        v = _without_padding(v, k_pad, HAS_PAD)
        qk_scale = sm_scale * _LOG2E
        dk = tl.zeros([BLOCK_N, D], tl.float32)
        dv = tl.zeros([BLOCK_N, D], tl.float32)
        lo, hi = _loop_bounds(QUERY_LO, QUERY_HI, b * LK, offs_n, n_valid, LQ, BLOCK_M)
        for g in range(GROUP):
            h = kv_h * GROUP + g
            slope = tl.load(SLOPES + h) if HAS_ALIBI else 0.0
            for start_m in range(lo, hi, BLOCK_M):
                offs_m = start_m + tl.arange(0, BLOCK_M)
                m_valid = offs_m < LQ
                query_pos = offs_m + (LK - LQ)
                _, q_seg, q_bid, q_alibi = _load_attributes(PAD, SEG, BID, POS, b * LK, query_pos, m_valid,
                                                            HAS_PAD, HAS_SEG, HAS_BID, HAS_ALIBI)
                q = tl.load(Q + _tile(b, h, offs_m, stride_qb, stride_qh, stride_qm, D),
                            mask=m_valid[:, None], other=0.0)
                do = tl.load(DO + _tile(b, h, offs_m, stride_ob, stride_oh, stride_om, D),
                             mask=m_valid[:, None], other=0.0)
                lse = tl.load(LSE + (b * H + h) * LQ + offs_m, mask=m_valid, other=float("inf"))
                delta = tl.load(DELTA + (b * H + h) * LQ + offs_m, mask=m_valid, other=0.0)
                qk, visible = _scores(q, tl.trans(k), qk_scale, slope, query_pos, m_valid, q_seg, q_bid, q_alibi,
                                      offs_n, n_valid, k_pad, k_seg, k_bid, k_alibi,
                                      HAS_PAD, HAS_SEG, HAS_BID, CAUSAL, HAS_ALIBI, IEEE_DOT)
                p = tl.where(visible, tl.exp2(qk - lse[:, None]), 0.0)
                dv += _dot(tl.trans(p.to(do.dtype)), do, IEEE_DOT)
                ds = p * (_dot(do, tl.trans(v), IEEE_DOT) - delta[:, None])
                dk += _dot(tl.trans(ds.to(q.dtype)), q, IEEE_DOT)
        tl.store(DK + _tile(b, kv_h, offs_n, stride_kb, stride_kh, stride_kn, D),
                 (dk * sm_scale).to(DK.dtype.element_ty), mask=n_valid[:, None])
        tl.store(DV + _tile(b, kv_h, offs_n, stride_vb, stride_vh, stride_vn, D),
                 dv.to(DV.dtype.element_ty), mask=n_valid[:, None])

    @triton.autotune(configs=BACKWARD_CONFIGS, key=AUTOTUNE_KEY)
    @triton.jit
    def _backward_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, PAD, SEG, BID, POS, SLOPES, KEY_LO, KEY_HI,
                            stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                            stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                            H, sm_scale, LQ, LK, D: tl.constexpr, GROUP: tl.constexpr, CAUSAL: tl.constexpr,
                            HAS_PAD: tl.constexpr, HAS_SEG: tl.constexpr, HAS_BID: tl.constexpr,
                            HAS_ALIBI: tl.constexpr, IEEE_DOT: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
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
        _, q_seg, q_bid, q_alibi = _load_attributes(PAD, SEG, BID, POS, b * LK, query_pos, m_valid,
                                                    HAS_PAD, HAS_SEG, HAS_BID, HAS_ALIBI)
        qk_scale = sm_scale * _LOG2E
        slope = tl.load(SLOPES + h) if HAS_ALIBI else 0.0
        dq = tl.zeros([BLOCK_M, D], tl.float32)
        lo, hi = _loop_bounds(KEY_LO, KEY_HI, b * LQ, offs_m, m_valid, LK, BLOCK_N)
        for start_n in range(lo, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            n_valid = offs_n < LK
            k = tl.load(K + _tile(b, kv_h, offs_n, stride_kb, stride_kh, stride_kn, D),
                        mask=n_valid[:, None], other=0.0)
            v = tl.load(V + _tile(b, kv_h, offs_n, stride_vb, stride_vh, stride_vn, D),
                        mask=n_valid[:, None], other=0.0)
            k_pad, k_seg, k_bid, k_alibi = _load_attributes(PAD, SEG, BID, POS, b * LK, offs_n, n_valid,
                                                            HAS_PAD, HAS_SEG, HAS_BID, HAS_ALIBI)
            k, v = _without_padding(k, k_pad, HAS_PAD), _without_padding(v, k_pad, HAS_PAD)
            qk, visible = _scores(q, tl.trans(k), qk_scale, slope, query_pos, m_valid, q_seg, q_bid, q_alibi,
                                  offs_n, n_valid, k_pad, k_seg, k_bid, k_alibi,
                                  HAS_PAD, HAS_SEG, HAS_BID, CAUSAL, HAS_ALIBI, IEEE_DOT)
            p = tl.where(visible, tl.exp2(qk - lse[:, None]), 0.0)
            ds = p * (_dot(do, tl.trans(v), IEEE_DOT) - delta[:, None])
            dq += _dot(ds.to(k.dtype), k, IEEE_DOT)
        tl.store(DQ + _tile(b, h, offs_m, stride_qb, stride_qh, stride_qm, D),
                 (dq * sm_scale).to(DQ.dtype.element_ty), mask=m_valid[:, None])


# ----------------------------------------------------------------------------- host side

class _Layout:
    """Everything the kernels read besides q, k, v: per-position attributes as int tensors and,
    for the loop bounds, each query's visible key range and each key's visible query range."""

    def __init__(self, batch, lq, lk, device, key_padding_mask, segment_ids, bidirectional_ids, causal,
                 alibi_slopes):
        long = dict(dtype=torch.long, device=device)
        offset = lk - lq
        keys = torch.arange(lk, **long).expand(batch, lk)
        # Key ranges per key position t (as a query at t would see them): [key_lo, key_hi].
        key_lo = torch.zeros(batch, lk, **long)
        key_hi = keys.clone() if causal else torch.full((batch, lk), lk - 1, **long)
        # Query positions that can see key t: [pos_lo, pos_hi].
        pos_lo = keys.clone() if causal else torch.zeros(batch, lk, **long)
        pos_hi = torch.full((batch, lk), lk - 1, **long)
        if causal and bidirectional_ids is not None:
            first, last = _first_and_last(bidirectional_ids)
            shared = bidirectional_ids >= 0
            key_hi = torch.where(shared, torch.maximum(key_hi, last), key_hi)
            pos_lo = torch.where(shared, torch.minimum(pos_lo, first), pos_lo)
        if segment_ids is not None:
            first, last = _first_and_last(segment_ids)
            key_lo, key_hi = torch.maximum(key_lo, first), torch.minimum(key_hi, last)
            pos_lo, pos_hi = torch.maximum(pos_lo, first), torch.minimum(pos_hi, last)
        if key_padding_mask is not None:
            real = key_padding_mask.bool()
            first_real = torch.where(real, keys, lk).min(1, keepdim=True).values
            last_real = torch.where(real, keys, -1).max(1, keepdim=True).values
            key_lo, key_hi = torch.maximum(key_lo, first_real), torch.minimum(key_hi, last_real)
            pos_hi = torch.where(real, pos_hi, -1)  # no query sees a padding key
        self.key_lo = key_lo[:, offset:].int().contiguous()
        self.key_hi = key_hi[:, offset:].int().contiguous()
        self.query_lo = (pos_lo - offset).clamp(min=0).int().contiguous()
        self.query_hi = (pos_hi - offset).clamp(max=lq - 1).int().contiguous()
        dummy = torch.zeros(1, dtype=torch.int32, device=device)
        self.pad = dummy if key_padding_mask is None else key_padding_mask.to(torch.int8).contiguous()
        self.seg = dummy if segment_ids is None else segment_ids.int().contiguous()
        self.bid = dummy if bidirectional_ids is None else bidirectional_ids.int().contiguous()
        self.pos = (dummy if alibi_slopes is None
                    else alibi_positions(key_padding_mask, segment_ids, batch, lk, device).contiguous())
        self.slopes = dummy.float() if alibi_slopes is None else (alibi_slopes.float() * LOG2E).contiguous()
        self.flags = dict(CAUSAL=causal, HAS_PAD=key_padding_mask is not None, HAS_SEG=segment_ids is not None,
                          HAS_BID=bidirectional_ids is not None, HAS_ALIBI=alibi_slopes is not None)


def _strides(*tensors):
    return [stride for t in tensors for stride in t.stride()[:3]]


class _TritonAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, layout: _Layout, scale: float):
        # The kernels take q, k, v (and write their gradients, allocated alike) with any batch,
        # head and position strides: HF's (B, L, H, D) transposes pass as they are; views with
        # gaps (BLOOM's fused qkv) are copied, since empty_like would not keep their strides.
        q, k, v = (t if t.is_contiguous() or t.transpose(1, 2).is_contiguous() else t.contiguous()
                   for t in (q, k, v))
        batch, heads, lq, dim = q.shape
        lk = k.shape[2]
        out = torch.empty_like(q)
        lse = torch.empty(batch, heads, lq, dtype=torch.float32, device=q.device)

        def grid(meta):
            return (triton.cdiv(lq, meta["BLOCK_M"]), batch * heads)

        _forward_kernel[grid](
            q, k, v, out, lse, layout.pad, layout.seg, layout.bid, layout.pos, layout.slopes,
            layout.key_lo, layout.key_hi, *_strides(q, k, v, out), heads, scale, lq, lk,
            D=dim, GROUP=heads // k.shape[1], IEEE_DOT=q.dtype == torch.float32, **layout.flags)
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
        common = dict(D=dim, GROUP=heads // kv_heads, IEEE_DOT=q.dtype == torch.float32, **layout.flags)
        _backward_dkdv_kernel[lambda meta: (triton.cdiv(lk, meta["BLOCK_N"]), batch * kv_heads)](
            q, k, v, grad_out, lse, delta, dk, dv, layout.pad, layout.seg, layout.bid, layout.pos, layout.slopes,
            layout.query_lo, layout.query_hi, *_strides(q, k, v, grad_out), heads, ctx.scale, lq, lk, **common)
        _backward_dq_kernel[lambda meta: (triton.cdiv(lq, meta["BLOCK_M"]), batch * heads)](
            q, k, v, grad_out, lse, delta, dq, layout.pad, layout.seg, layout.bid, layout.pos, layout.slopes,
            layout.key_lo, layout.key_hi, *_strides(q, k, v, grad_out), heads, ctx.scale, lq, lk, **common)
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
                      backend: str = "auto") -> torch.Tensor:
    """Attention with per-call causal, bidirectional or prefix-LM visibility; see the module doc.

    ``backend="auto"``: the Triton kernels for CUDA tensors (head dims 16-128, powers of two),
    the PyTorch reference otherwise. ``"triton"`` forces the kernels (CPU tensors only under
    ``TRITON_INTERPRET=1``); ``"torch"`` forces the reference.
    """
    _check(q, k, v, key_padding_mask, segment_ids, bidirectional_ids, alibi_slopes, backend)
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
    if backend == "torch" or (backend == "auto" and not (kernel_ok and q.is_cuda)):
        return reference_attention(q, k, v, key_padding_mask=key_padding_mask, segment_ids=segment_ids,
                                   bidirectional_ids=bidirectional_ids, causal=causal, alibi_slopes=alibi_slopes,
                                   scale=scale)
    batch, _, lq, _ = q.shape
    layout = _Layout(batch, lq, k.shape[2], q.device, key_padding_mask, segment_ids, bidirectional_ids, causal,
                     alibi_slopes)
    return _TritonAttention.apply(q, k, v, layout, scale)


def attention_flops(batch: int, heads: int, lq: int, lk: int, dim: int, visible_fraction: float = 1.0) -> float:
    """Forward FLOPs of the two matmuls over the visible pairs (the benchmark's TFLOP/s)."""
    return 4.0 * batch * heads * lq * lk * dim * visible_fraction
