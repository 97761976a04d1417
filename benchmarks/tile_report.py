"""Which tiles the attention kernels walk, and what a full tile costs: a report without a GPU.

1. For the layouts the package's callers build (decoding batches with left padding, packed
   training rows, the tagger's bidirectional batches, prefix-LM prompts), the share of tiles
   each kernel skips, reads whole with no mask code (full) and reads masked (partial), as
   ``kernels.attention.tile_classes`` computes them from the layout (the kernels' own loop
   bounds), with the tiles the sm_90 autotune lists lead with.
2. From the cubin's SASS for sm_90 (the Triton wheel's ``cuobjdump -sass``), the instructions in
   each loop of the forward kernel (partial, full, partial in program order) against the one
   loop of a minimal unmasked flash-attention forward written below as a yardstick (the
   Triton tutorial's off-diagonal stage: load K, dot, online softmax, load V, dot; the ALiBi
   term added when on).

    python benchmarks/tile_report.py [--markdown] [--no-sass] [--seed 0]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

if __name__ == "__main__":  # compiled kernels, not the interpreter's
    os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402

from spacy_seqgpt.kernels.attention import (TILE_FULL, TILE_PARTIAL, TILE_SKIPPED, AttentionLayout,  # noqa: E402
                                            tile_classes)

# (kernel, BLOCK_M queries, BLOCK_N keys): the first sm_90 config of each list at head dim 64
TILES = (("forward", 128, 64), ("dkdv", 64, 128), ("dq", 128, 64))


def lengths(generator, n: int, low: int, high: int) -> list:
    return torch.randint(low, high + 1, (n,), generator=generator).tolist()


def decoding(generator, batch=16, length=512):
    """Prompts of 128-512 tokens, left-padded to one length (the prefill of a decoding batch)."""
    real = torch.arange(length)[None, :] >= length - torch.tensor(lengths(generator, batch, 128, length))[:, None]
    return dict(batch=batch, length=length, key_padding_mask=real)


def packed(generator, batch=8, length=2048):
    """Training rows packed with records of 32-512 tokens, each its own segment, padding after the last."""
    segments, real = torch.zeros(batch, length, dtype=torch.long), torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        start, segment = 0, 0
        for size in lengths(generator, 64, 32, 512):
            if start + size > length:
                break
            segments[b, start:start + size] = segment
            real[b, start:start + size] = True
            start, segment = start + size, segment + 1
        segments[b, start:] = segment
    return dict(batch=batch, length=length, segment_ids=segments, key_padding_mask=real)


def tagger(generator, batch=16, length=128):
    """Sentences of 16-128 subwords, right-padded, every layer bidirectional."""
    real = torch.arange(length)[None, :] < torch.tensor(lengths(generator, batch, 16, length))[:, None]
    return dict(batch=batch, length=length, key_padding_mask=real, causal=False)


def prefix_lm(generator, batch=8, length=2048):
    """Prompts of 60-90% of the row seen both ways, then the answer causal; up to 256 pads on the left."""
    pads = torch.tensor(lengths(generator, batch, 0, 256))
    prompts = torch.tensor([int(f * length) for f in torch.empty(batch).uniform_(0.6, 0.9, generator=generator)])
    positions = torch.arange(length)[None, :]
    real = positions >= pads[:, None]
    bid = torch.where(real & (positions < (pads + prompts).clamp(max=length)[:, None]), 0, -1)
    return dict(batch=batch, length=length, key_padding_mask=real, bidirectional_ids=bid)


LAYOUTS = {"decoding, left padding (16 x 512)": decoding, "packed training rows (8 x 2048)": packed,
           "tagger, bidirectional (16 x 128)": tagger, "prefix-LM prompts (8 x 2048)": prefix_lm}


def tile_shares(seed: int) -> list:
    """(layout, kernel, tile, tiles, skipped, full, partial, partial share of visited) rows."""
    rows = []
    for name, make in LAYOUTS.items():
        case = make(torch.Generator().manual_seed(seed))
        batch, length = case.pop("batch"), case.pop("length")
        layout = AttentionLayout(batch, length, length, **case)
        for kernel, block_m, block_n in TILES:
            classes = tile_classes(layout, block_m, block_n, kernel)
            count = {cls: int((classes == cls).sum()) for cls in (TILE_SKIPPED, TILE_FULL, TILE_PARTIAL)}
            visited = count[TILE_FULL] + count[TILE_PARTIAL]
            rows.append((name, kernel, f"{block_m}x{block_n}", classes.numel(), count[TILE_SKIPPED], count[TILE_FULL],
                         count[TILE_PARTIAL], count[TILE_PARTIAL] / max(visited, 1)))
    return rows


# ----------------------------------------------------------------------------- SASS

def yardstick_kernel():
    """A minimal flash-attention forward whose loop has no mask code: the yardstick. A (batch,
    head) per program column as in the Triton tutorial; no GQA, no masks."""
    import triton
    import triton.language as tl

    @triton.jit
    def unmasked_forward(Q, K, V, O, POS, SLOPES, stride_b, stride_h, stride_m, stride_n, H, LK, sm_scale,
                         D: tl.constexpr, ALIBI: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        # one (batch, head) per program column, as the tutorial's grid: its offset moves every pointer
        offset = (tl.program_id(1) // H) * stride_b + (tl.program_id(1) % H) * stride_h
        Q, K, V, O = Q + offset, K + offset, V + offset, O + offset
        offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, D)
        q = tl.load(Q + offs_m[:, None] * stride_m + dims[None, :])
        q_alibi = tl.load(POS + offs_m) if ALIBI else offs_m
        slope = tl.load(SLOPES) if ALIBI else 0.0
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        for start_n in range(0, LK, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k_t = tl.load(K + offs_n[None, :] * stride_n + dims[:, None])
            qk = tl.dot(q, k_t) * (sm_scale * 1.4426950408889634)
            if ALIBI:
                k_alibi = tl.load(POS + start_n) + tl.arange(0, BLOCK_N)
                qk -= slope * tl.abs(q_alibi[:, None] - k_alibi[None, :]).to(tl.float32)
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            p = tl.exp2(qk - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V + offs_n[:, None] * stride_n + dims[None, :])
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        tl.store(O + offs_m[:, None] * stride_m + dims[None, :], (acc / l_i[:, None]).to(O.dtype.element_ty))

    return unmasked_forward


def sass(fn, types: dict, constants: dict, hints: dict, num_warps: int, num_stages: int) -> str:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    compiled = triton.compile(ASTSource(fn, types, constants, hints), target=GPUTarget("cuda", 90, 32),
                              options=dict(num_warps=num_warps, num_stages=num_stages))
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(compiled.asm["cubin"])
        return subprocess.run([str(tool), "-sass", str(path)], capture_output=True, text=True, check=True).stdout


_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")


def loops(text: str) -> list:
    """The instructions of each loop of the SASS ``text`` (from the address a branch jumps back
    to, through the branch), in program order."""
    instructions, found = [], []
    for match in _INSTRUCTION.finditer(text):
        address, instruction = int(match.group(1), 16), match.group(2)
        instructions.append((address, instruction))
        target = re.search(r"\bBRA\s+0x([0-9a-f]+)", instruction)
        if target and int(target.group(1), 16) < address:
            start = int(target.group(1), 16)
            found.append([text for at, text in instructions if start <= at <= address])
    return found


def loop_sizes(text: str) -> list:
    return [len(body) for body in loops(text)]


def opcodes(body: list) -> Counter:
    """How often each opcode (predicate and modifiers dropped) occurs in a loop body."""
    return Counter(re.sub(r"^@!?U?P\w+\s+", "", line).split()[0].split(".")[0] for line in body)


def sass_rows(head_dim: int = 64) -> list:
    """(combination, the forward kernel's loops, the yardstick's loops) as instruction lists, for the
    callers' combinations."""
    sys.path.insert(0, str(Path(__file__).parent))
    import kernel_resources as resources

    from spacy_seqgpt.kernels.attention import triton_kernels as attention

    fn, stick = attention._forward_kernel.fn, yardstick_kernel()
    rows = []
    for combination in ("decoding", "packed", "tagger", "prefix-lm", "decoding+alibi"):
        constants = dict(resources.combination_flags(combination), D=head_dim, IEEE_DOT=False, BLOCK_M=128,
                         BLOCK_N=64)
        types, hints = resources.signature(fn, "bf16", constants)
        stick_constants = dict(D=head_dim, ALIBI=constants["HAS_ALIBI"], BLOCK_M=128, BLOCK_N=64)
        stick_types = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16", "POS": "*i32", "SLOPES": "*fp32",
                       "stride_b": "i32", "stride_h": "i32", "stride_m": "i32", "stride_n": "i32", "H": "i32",
                       "LK": "i32", "sm_scale": "fp32", **{name: "constexpr" for name in stick_constants}}
        stick_hints = {(i,): [["tt.divisibility", 16]] for i in range(10)}  # pointers and strides
        rows.append((combination, loops(sass(fn, types, constants, hints, 8, 2)),
                     loops(sass(stick, stick_types, stick_constants, stick_hints, 8, 2))))
    return rows


def show(table: list, header: tuple, markdown: bool) -> None:
    from wasabi import msg

    if markdown:
        print("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
        print("\n".join("| " + " | ".join(map(str, row)) + " |" for row in table))
    else:
        msg.table(table, header=header, divider=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--no-sass", action="store_true", help="only the tile shares (no compiles)")
    args = parser.parse_args(argv)
    show([(*row[:-1], f"{row[-1]:.1%}") for row in tile_shares(args.seed)],
         ("layout", "kernel", "tile", "tiles", "skipped", "full", "partial", "partial / visited"), args.markdown)
    if args.no_sass:
        return 0
    rows = sass_rows()
    table = []
    for combination, ours, yard in rows:
        sizes, stick = [len(body) for body in ours], [len(body) for body in yard]
        ratio = f"{sizes[1] / stick[0]:.2f}" if len(sizes) == 3 and len(stick) == 1 else "loops not identified"
        table.append((combination, ", ".join(map(str, sizes)), ", ".join(map(str, stick)), ratio))
    print()
    show(table, ("combination", "forward loops (partial, full, partial)", "yardstick loop", "full / yardstick"),
         args.markdown)
    combination, ours, yard = rows[0]
    if len(ours) == 3 and len(yard) == 1:  # where the full loop and the yardstick's differ
        full, stick = opcodes(ours[1]), opcodes(yard[0])
        print()
        show([(op, full[op], stick[op]) for op in sorted(set(full) | set(stick)) if full[op] != stick[op]],
             (f"opcode ({combination})", "full-tile loop", "yardstick loop"), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
