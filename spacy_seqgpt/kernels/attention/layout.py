"""Who sees whom in one call shape: :class:`AttentionLayout`, the per-row ranges the kernels walk.

Each program of a kernel classifies the tiles of the other side from per-row ranges built once
per forward pass: tiles no row of it can see are skipped (causal costs about half of
bidirectional), tiles every row sees whole are *full* and read with no mask code at all (as
the Triton tutorial's off-diagonal loop), and the rest (the diagonal, prefix-LM span, segment
and padding boundaries) take the masked path. Padding and segments reach the kernels as one
group id per key.
"""
import torch

from .contract import LOG2E, _sorted_runs, _unsort, alibi_positions, visibility


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
