"""``partial_attention``: the contract (``contract``) on the Triton kernels where they run, on
PyTorch's fused attention with a dense mask elsewhere.

On CUDA the Triton kernels run, forward and backward (``triton_kernels``), reading the ranges
of an ``AttentionLayout`` (``layout``). On CPU the contract runs on PyTorch's fused attention
with a dense mask built once per layout (``dense_attention``); the plain PyTorch reference
(``backend="torch"``) is the tests' oracle.
"""
from typing import Optional

import torch

from .contract import reference_attention
from .layout import AttentionLayout
from . import triton_kernels as kernels
from .triton_kernels import _interpreting, triton

BACKENDS = ("auto", "torch", "triton")
KERNEL_HEAD_DIMS = (16, 32, 64, 128)


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

        kernels._forward_kernel[grid](
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
        kernels._backward_dkdv_kernel[lambda meta: (triton.cdiv(lk, meta["BLOCK_N"]), batch * kv_heads)](
            q, k, v, grad_out, lse, delta, dk, dv, *attributes, arrays["query_lo"], arrays["query_hi"],
            arrays["full_query_lo"], arrays["full_query_hi"], *_strides(q, k, v, grad_out), *lengths, **common)
        kernels._backward_dq_kernel[lambda meta: (triton.cdiv(lq, meta["BLOCK_M"]), batch * heads)](
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
