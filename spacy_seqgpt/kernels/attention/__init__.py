"""Partially bidirectional attention: causal, bidirectional and prefix-LM in one fused kernel.

``contract``: what ``partial_attention`` computes (who sees whom, ALiBi, empty rows), and its
reference in plain PyTorch; ``layout``: the per-row ranges the kernels walk; ``triton_kernels``:
the forward, dK/dV and dQ kernels; ``function``: ``partial_attention`` itself.
"""
from .contract import LOG2E, alibi_positions, attention_flops, reference_attention, visibility
from .function import BACKENDS, KERNEL_HEAD_DIMS, dense_attention, partial_attention
from .layout import TILE_FULL, TILE_PARTIAL, TILE_SKIPPED, AttentionLayout, tile_classes

__all__ = ["BACKENDS", "KERNEL_HEAD_DIMS", "LOG2E", "TILE_FULL", "TILE_PARTIAL", "TILE_SKIPPED", "AttentionLayout",
           "alibi_positions", "attention_flops", "dense_attention", "partial_attention", "reference_attention",
           "tile_classes", "visibility"]
