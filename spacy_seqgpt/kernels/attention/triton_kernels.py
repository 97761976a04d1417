"""The Triton kernels: forward, then dK/dV and dQ, flash-attention style.

Online softmax in fp32, nothing of size Lq x Lk in memory, GQA by indexing (k/v never
copied); each program walks the tiles its ``AttentionLayout`` ranges allow, the partial ones
with the contract's masks and the full ones with none, one inner helper per kernel holding
the loop over tiles (as the Triton fused-attention tutorial's ``_attn_fwd_inner``). The
autotune lists hold only configs that compile without register spills on sm_80 and sm_90
(``benchmarks/kernel_resources.py`` checks them without a GPU). ``TRITON_INTERPRET=1`` runs
them on CPU tensors, which is how the tests check them.

Written after the Triton fused-attention tutorial.
"""
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # torch on macOS / Windows has no Triton: the reference still works
    triton = None

from .contract import LOG2E


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


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
    def _query_tile(Q, SEG, BID, POS, SLOPES, H, LQ, LK, stride_qb, stride_qh, stride_qm, D: tl.constexpr,
                    GROUP: tl.constexpr, HAS_SEG: tl.constexpr, HAS_BID: tl.constexpr, HAS_ALIBI: tl.constexpr,
                    BLOCK_M: tl.constexpr):
        """A query-major program's tile (the forward and dQ kernels): its batch and heads, its
        queries (loaded), their key positions and attributes expanded to (M, 1), and the head's
        ALiBi slope."""
        batch_head = tl.program_id(1)
        b = batch_head // H
        h = batch_head % H
        offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_valid = offs_m < LQ
        query_pos = offs_m + (LK - LQ)
        q = tl.load(Q + _tile(b, h, offs_m, stride_qb, stride_qh, stride_qm, D), mask=m_valid[:, None], other=0.0)
        q_group, q_bid, q_alibi = _query_attributes(SEG, BID, POS, b * LK, tl.minimum(query_pos, LK - 1),
                                                    HAS_SEG, HAS_BID, HAS_ALIBI)
        slope = tl.load(SLOPES + h) if HAS_ALIBI else 0.0
        return (batch_head, b, h, h // GROUP, offs_m, m_valid, q, query_pos[:, None], q_group[:, None],
                q_bid[:, None], q_alibi[:, None], slope)

    @triton.jit
    def _forward_inner(acc, l_i, m_i, q, K, V, KEY_GROUP, BID, POS, b, kv_h, lo, hi, q_pos, q_group, q_bid,
                       q_alibi, slope, qk_scale, LK, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh,
                       stride_vn, D: tl.constexpr, CAUSAL: tl.constexpr, HAS_GROUP: tl.constexpr,
                       HAS_BID: tl.constexpr, HAS_ALIBI: tl.constexpr, IEEE_DOT: tl.constexpr,
                       BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
        """The online softmax over the key tiles ``[lo, hi)``. Full tiles (``MASKED`` false) are
        visible to every row that sees anything: no mask, no load but K and V (and one ALiBi
        position), and every score finite."""
        for start_n in range(lo, hi, BLOCK_N):
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
            m_i = m_new
        return acc, l_i, m_i

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
        batch_head, b, h, kv_h, offs_m, m_valid, q, q_pos, q_group, q_bid, q_alibi, slope = _query_tile(
            Q, SEG, BID, POS, SLOPES, H, LQ, LK, stride_qb, stride_qh, stride_qm, D, GROUP, HAS_SEG, HAS_BID, HAS_ALIBI,
            BLOCK_M)
        qk_scale = sm_scale * _LOG2E

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        lo, hi, full_start, full_end = _loop_bounds(KEY_LO, KEY_HI, FULL_LO, FULL_HI, b * LQ, offs_m, m_valid, LK,
                                                    BLOCK_N)
        acc, l_i, m_i = _forward_inner(acc, l_i, m_i, q, K, V, KEY_GROUP, BID, POS, b, kv_h, lo, full_start,
                                       q_pos, q_group, q_bid, q_alibi, slope, qk_scale, LK, stride_kb, stride_kh,
                                       stride_kn, stride_vb, stride_vh, stride_vn, D, CAUSAL, HAS_GROUP, HAS_BID,
                                       HAS_ALIBI, IEEE_DOT, BLOCK_N, True)
        acc, l_i, m_i = _forward_inner(acc, l_i, m_i, q, K, V, KEY_GROUP, BID, POS, b, kv_h, full_start, full_end,
                                       q_pos, q_group, q_bid, q_alibi, slope, qk_scale, LK, stride_kb, stride_kh,
                                       stride_kn, stride_vb, stride_vh, stride_vn, D, CAUSAL, HAS_GROUP, HAS_BID,
                                       HAS_ALIBI, IEEE_DOT, BLOCK_N, False)
        acc, l_i, m_i = _forward_inner(acc, l_i, m_i, q, K, V, KEY_GROUP, BID, POS, b, kv_h, full_end, hi,
                                       q_pos, q_group, q_bid, q_alibi, slope, qk_scale, LK, stride_kb, stride_kh,
                                       stride_kn, stride_vb, stride_vh, stride_vn, D, CAUSAL, HAS_GROUP, HAS_BID,
                                       HAS_ALIBI, IEEE_DOT, BLOCK_N, True)
        empty = (l_i == 0.0) | _sees_nothing(KEY_LO, KEY_HI, b * LQ + offs_m, m_valid)
        out = acc * tl.where(empty, 0.0, 1.0 / l_i)[:, None]
        tl.store(O + _tile(b, h, offs_m, stride_ob, stride_oh, stride_om, D),
                 out.to(O.dtype.element_ty), mask=m_valid[:, None])
        # log2-sum-exp2 of each row; +inf for empty rows makes their backward probabilities 0.
        tl.store(LSE + batch_head * LQ + offs_m, tl.where(empty, float("inf"), m_i + tl.log2(l_i)), mask=m_valid)

    @triton.jit
    def _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, SEG, BID, POS, SLOPES, b, kv_h, lo, hi, k_pos, k_group, k_bid,
                    k_alibi, qk_scale, H, LQ, LK, stride_qb, stride_qh, stride_qm, stride_ob, stride_oh, stride_om,
                    D: tl.constexpr, GROUP: tl.constexpr, CAUSAL: tl.constexpr, HAS_GROUP: tl.constexpr,
                    HAS_SEG: tl.constexpr, HAS_BID: tl.constexpr, HAS_ALIBI: tl.constexpr, IEEE_DOT: tl.constexpr,
                    BLOCK_M: tl.constexpr, MASKED: tl.constexpr):
        """The query tiles ``[lo, hi)`` of every query head of the key tile's GQA group into its dK
        and dV (key-major: scores as keys x queries), as one flat loop over (head, query tile): a
        single software-pipelined loop. Full tiles' queries all exist and see every key: no mask,
        no id loads."""
        n_tiles = tl.cdiv(hi - lo, BLOCK_M)
        for step in range(0, GROUP * n_tiles):
            h = kv_h * GROUP + step // n_tiles
            start_m = lo + (step % n_tiles) * BLOCK_M
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
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, SEG, BID, POS, SLOPES, b, kv_h, lo, full_start, k_pos,
                             k_group, k_bid, k_alibi, qk_scale, H, LQ, LK, stride_qb, stride_qh, stride_qm,
                             stride_ob, stride_oh, stride_om, D, GROUP, CAUSAL, HAS_GROUP, HAS_SEG, HAS_BID,
                             HAS_ALIBI, IEEE_DOT, BLOCK_M, True)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, SEG, BID, POS, SLOPES, b, kv_h, full_start, full_end, k_pos,
                             k_group, k_bid, k_alibi, qk_scale, H, LQ, LK, stride_qb, stride_qh, stride_qm,
                             stride_ob, stride_oh, stride_om, D, GROUP, CAUSAL, HAS_GROUP, HAS_SEG, HAS_BID,
                             HAS_ALIBI, IEEE_DOT, BLOCK_M, False)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, SEG, BID, POS, SLOPES, b, kv_h, full_end, hi, k_pos,
                             k_group, k_bid, k_alibi, qk_scale, H, LQ, LK, stride_qb, stride_qh, stride_qm,
                             stride_ob, stride_oh, stride_om, D, GROUP, CAUSAL, HAS_GROUP, HAS_SEG, HAS_BID,
                             HAS_ALIBI, IEEE_DOT, BLOCK_M, True)
        # Padding keys took part in full tiles (read as zeros) only to be zeroed here (recomputed
        # from the live group ids rather than keeping the load's mask alive through the loops).
        kept = tl.where(_real_keys(offs_n[:, None] < LK, k_group, HAS_GROUP), 1.0, 0.0)
        tl.store(DK + _tile(b, kv_h, offs_n, stride_kb, stride_kh, stride_kn, D),
                 (dk * (kept * sm_scale)).to(DK.dtype.element_ty), mask=n_valid[:, None])
        tl.store(DV + _tile(b, kv_h, offs_n, stride_vb, stride_vh, stride_vn, D),
                 (dv * kept).to(DV.dtype.element_ty), mask=n_valid[:, None])

    @triton.jit
    def _dq_inner(dq, q, do, lse, delta, K, V, KEY_GROUP, BID, POS, b, kv_h, lo, hi, q_pos, q_group, q_bid,
                  q_alibi, slope, qk_scale, LK, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
                  D: tl.constexpr, CAUSAL: tl.constexpr, HAS_GROUP: tl.constexpr, HAS_BID: tl.constexpr,
                  HAS_ALIBI: tl.constexpr, IEEE_DOT: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
        """The key tiles ``[lo, hi)`` into a query tile's dQ; full tiles as in ``_forward_inner``."""
        for start_n in range(lo, hi, BLOCK_N):
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
            dq += _dot(ds.to(k.dtype), k, IEEE_DOT)
        return dq

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
        batch_head, b, h, kv_h, offs_m, m_valid, q, q_pos, q_group, q_bid, q_alibi, slope = _query_tile(
            Q, SEG, BID, POS, SLOPES, H, LQ, LK, stride_qb, stride_qh, stride_qm, D, GROUP, HAS_SEG, HAS_BID, HAS_ALIBI,
            BLOCK_M)
        qk_scale = sm_scale * _LOG2E
        do = tl.load(DO + _tile(b, h, offs_m, stride_ob, stride_oh, stride_om, D), mask=m_valid[:, None], other=0.0)
        lse = tl.load(LSE + batch_head * LQ + offs_m, mask=m_valid, other=float("inf"))
        delta = tl.load(DELTA + batch_head * LQ + offs_m, mask=m_valid, other=0.0)
        dq = tl.zeros([BLOCK_M, D], tl.float32)
        lo, hi, full_start, full_end = _loop_bounds(KEY_LO, KEY_HI, FULL_LO, FULL_HI, b * LQ, offs_m, m_valid, LK,
                                                    BLOCK_N)
        dq = _dq_inner(dq, q, do, lse, delta, K, V, KEY_GROUP, BID, POS, b, kv_h, lo, full_start, q_pos,
                       q_group, q_bid, q_alibi, slope, qk_scale, LK, stride_kb, stride_kh, stride_kn,
                       stride_vb, stride_vh, stride_vn, D, CAUSAL, HAS_GROUP, HAS_BID, HAS_ALIBI, IEEE_DOT,
                       BLOCK_N, True)
        dq = _dq_inner(dq, q, do, lse, delta, K, V, KEY_GROUP, BID, POS, b, kv_h, full_start, full_end, q_pos,
                       q_group, q_bid, q_alibi, slope, qk_scale, LK, stride_kb, stride_kh, stride_kn,
                       stride_vb, stride_vh, stride_vn, D, CAUSAL, HAS_GROUP, HAS_BID, HAS_ALIBI, IEEE_DOT,
                       BLOCK_N, False)
        dq = _dq_inner(dq, q, do, lse, delta, K, V, KEY_GROUP, BID, POS, b, kv_h, full_end, hi, q_pos,
                       q_group, q_bid, q_alibi, slope, qk_scale, LK, stride_kb, stride_kh, stride_kn,
                       stride_vb, stride_vh, stride_vn, D, CAUSAL, HAS_GROUP, HAS_BID, HAS_ALIBI, IEEE_DOT,
                       BLOCK_N, True)
        # A query that sees nothing has lse = +inf: its probabilities, full tiles included, are 0.
        tl.store(DQ + _tile(b, h, offs_m, stride_qb, stride_qh, stride_qm, D),
                 (dq * sm_scale).to(DQ.dtype.element_ty), mask=m_valid[:, None])
