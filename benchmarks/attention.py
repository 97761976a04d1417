"""partial_attention (Triton) against what Hugging Face does today, on the GPU.

For BLOOM-560M shapes (batch 8, 16 heads, head dim 64; length 512, 2048) and Llama-7B shapes
(batch 4, 32 heads, head dim 128; length 128, 1024, 4096), bf16, forward and
forward+backward, with three masks: causal, bidirectional with 20% padding, and prefix-LM
(a prompt of half the row) with padding. Compared with our call given a prebuilt layout (as
a model's layers get it), torch SDPA given the equivalent dense boolean mask, FlexAttention
(compiled) with the equivalent BlockMask, and SDPA ``is_causal=True`` (flash) as the causal
ceiling. Prints milliseconds (median of repeats),
TFLOP/s over the visible query-key pairs, and ratios.

    python benchmarks/attention.py [--repeats 20] [--quick] [--shapes Llama-7B:4096 ...]
"""
import argparse
import statistics

import torch
from wasabi import msg

from spacy_seqgpt.kernels.attention import AttentionLayout, attention_flops, partial_attention, visibility

SHAPES = [("BLOOM-560M", 8, 16, 64, 512), ("BLOOM-560M", 8, 16, 64, 2048),
          ("Llama-7B", 4, 32, 128, 128), ("Llama-7B", 4, 32, 128, 1024), ("Llama-7B", 4, 32, 128, 4096)]
MASKS = ("causal", "bidirectional+pad", "prefix+pad")


def make_mask(kind, batch, length, device):
    """The kernel's arguments for one mask kind, and the same visibility as a dense (B, L, L) tensor."""
    options = {"causal": kind != "bidirectional+pad"}
    if kind != "causal":
        pad = (torch.arange(length, device=device)[None, :] >= length - (length // 5)).expand(batch, length)
        options["key_padding_mask"] = ~pad  # 20% right padding
    if kind == "prefix+pad":
        options["bidirectional_ids"] = torch.where(torch.arange(length, device=device) < length // 2, 0, -1
                                                   ).expand(batch, length).contiguous()
    dense = visibility(batch, length, length, device, options.get("key_padding_mask"), None,
                       options.get("bidirectional_ids"), options["causal"])
    return options, dense


def timed(function, repeats, backward):
    """Median milliseconds of ``function()`` (plus its backward), CUDA events, after warm-up."""
    def step():
        out = function()
        if backward:
            out.backward(torch.ones_like(out))
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main(repeats: int, quick: bool, only=None):
    if not torch.cuda.is_available():
        msg.fail("No CUDA device: this benchmark measures the Triton kernels on a GPU.", exits=1)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    device = "cuda"
    msg.info(f"{torch.cuda.get_device_name()} · torch {torch.__version__} · bf16 · median of {repeats}")
    rows = []
    shapes = SHAPES[:1] + SHAPES[2:3] if quick else SHAPES
    if only:
        shapes = [shape for shape in SHAPES if f"{shape[0]}:{shape[-1]}" in only]
    for name, batch, heads, dim, length in shapes:
        for kind in MASKS:
            options, dense = make_mask(kind, batch, length, device)
            visible_fraction = dense.float().mean().item()
            flops = attention_flops(batch, heads, length, length, dim, visible_fraction)
            q, k, v = (torch.randn(batch, heads, length, dim, device=device, dtype=torch.bfloat16,
                                   requires_grad=True) for _ in range(3))
            block_mask = create_block_mask(lambda b, h, i, j: dense[b, i, j], batch, None, length, length,
                                           device=device)
            # Rows with no visible key give NaN in SDPA and Flex; fine for timing.
            # A model builds the layout (the kernels' index arrays) once per forward pass for all
            # its layers: "ours-layout" times the kernels alone, "ours" a call that builds it too.
            layout = AttentionLayout(batch, length, length, **options)
            candidates = {
                "ours": lambda: partial_attention(q, k, v, **options),
                "ours-layout": lambda: partial_attention(q, k, v, layout=layout),
                "sdpa-dense": lambda: sdpa(q, k, v, attn_mask=dense[:, None]),
                "flex": lambda: flex(q, k, v, block_mask=block_mask),
            }
            if kind == "causal":
                candidates["sdpa-flash"] = lambda: sdpa(q, k, v, is_causal=True)
            for backward in (False, True):
                times = {label: timed(fn, repeats, backward) for label, fn in candidates.items()}
                total = flops * (3.5 if backward else 1.0)  # backward does 2.5x the forward's matmuls
                ours = times["ours"]
                rows.append((f"{name} L={length}", kind, "fwd+bwd" if backward else "fwd",
                             f"{ours:.3f}", f"{total / ours / 1e9:.1f}",
                             *(f"{times[label] / ours:.2f}x" if label in times else "-"
                               for label in ("ours-layout", "sdpa-dense", "flex", "sdpa-flash"))))
                msg.text(" | ".join(rows[-1]))  # as it goes: a cut-off run keeps what it measured
    msg.table(rows, header=("shape", "mask", "pass", "ours ms", "ours TFLOP/s", "vs ours-layout", "vs sdpa-dense",
                            "vs flex", "vs sdpa-flash"), divider=True)
    print("ratios are their time / our time: above 1.00x we are faster")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="one BLOOM and one Llama shape")
    parser.add_argument("--shapes", nargs="+", help="only these, as NAME:LENGTH (e.g. Llama-7B:4096)")
    arguments = parser.parse_args()
    main(arguments.repeats, arguments.quick, arguments.shapes)
