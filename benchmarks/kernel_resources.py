"""Registers, spills and shared memory of the attention kernels, compiled for the GPU on any machine.

Triton compiles a kernel for a chosen target without a GPU (the ``ptxas`` in its wheel), and the
wheel's ``cuobjdump -res-usage`` reads the cubin's registers, stack and local memory (spills)
and shared memory. For each of the three kernels of ``spacy_seqgpt/kernels/attention/``, each autotune
config it may try there, sm_80 and sm_90, bf16 and fp16, head dims 64 and 128, and the feature
combinations the package's callers use, this compiles and reports. It fails (exit 1) on a
compile error, a spilling compile, shared memory over the architecture's limit, or a caller's
combination without a large tile (``LARGE_TILES``).

    python benchmarks/kernel_resources.py [--arch 80 90] [--dtype bf16 fp16] [--head-dim 64 128]
        [--combination decoding ...] [--jobs 2] [--json results.json] [--markdown]

Compiles land in Triton's cache (``~/.triton/cache``), so a second run is quick.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the default today, said so to silence its warning
if __name__ == "__main__":  # compiled kernels and the real autotune lists, not the interpreter's
    os.environ.pop("TRITON_INTERPRET", None)

from spacy_seqgpt.kernels.attention import triton_kernels as attention  # noqa: E402  (after the environment above)

KERNELS = {"forward": "_forward_kernel", "dkdv": "_backward_dkdv_kernel", "dq": "_backward_dq_kernel"}
FLAGS = ("CAUSAL", "HAS_PAD", "HAS_SEG", "HAS_BID", "HAS_ALIBI")
# What the package's callers switch on (GROUP: query heads per key/value head).
COMBINATIONS: Dict[str, Dict] = {
    "decoding": dict(CAUSAL=True, HAS_PAD=True, GROUP=4),  # Llama/Mistral generate() with padding
    "decoding+alibi": dict(CAUSAL=True, HAS_PAD=True, HAS_ALIBI=True, GROUP=1),  # BLOOM
    "packed": dict(CAUSAL=True, HAS_SEG=True, GROUP=4),  # packed training
    "tagger": dict(CAUSAL=False, HAS_PAD=True, GROUP=4),  # llm_unmasked_tagger, mode="full"
    "prefix-lm": dict(CAUSAL=True, HAS_PAD=True, HAS_BID=True, GROUP=4),  # mode="prompt"
    "all": dict(CAUSAL=True, HAS_PAD=True, HAS_SEG=True, HAS_BID=True, HAS_ALIBI=True, GROUP=4),
}
# The largest tile (BLOCK_M x BLOCK_N) each caller's combination must keep spill-free.
LARGE_TILES = {("forward", 90): 8192, ("forward", 80): 4096, ("dkdv", 90): 4096, ("dkdv", 80): 2048,
               ("dq", 90): 4096, ("dq", 80): 2048}
SHARED_LIMIT = {80: 166912, 90: 232448}  # bytes of shared memory one block may use (A100, H100)
INTEGERS = ("H", "LQ", "LK", "LQ_BUCKET", "LK_BUCKET")
TENSORS = ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV")  # of the dtype compiled for
POINTER_DTYPES = {"LSE": "fp32", "DELTA": "fp32", "SEG": "i32", "KEY_GROUP": "i32", "BID": "i32", "POS": "i32",
                  "SLOPES": "fp32", "KEY_LO": "i32", "KEY_HI": "i32", "QUERY_LO": "i32", "QUERY_HI": "i32",
                  "FULL_LO": "i32", "FULL_HI": "i32", "FULL_QUERY_LO": "i32", "FULL_QUERY_HI": "i32"}


@dataclass
class Compile:
    kernel: str
    arch: int
    dtype: str
    head_dim: int
    combination: str
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    registers: int = 0
    spill_bytes: int = 0  # STACK + LOCAL
    shared_bytes: int = 0
    seconds: float = 0.0
    error: Optional[str] = None

    @property
    def tile(self) -> int:
        return self.block_m * self.block_n

    @property
    def ok(self) -> bool:
        return self.error is None and self.spill_bytes == 0 and self.shared_bytes <= SHARED_LIMIT[self.arch]


def combination_flags(combination: str) -> Dict:
    """Every feature flag of a combination (those it does not name: off) and its GQA group."""
    return {**{flag: False for flag in FLAGS}, **COMBINATIONS[combination]}


def signature(fn, dtype: str, constants: Dict):
    """Triton's signature and alignment hints for the kernel as ``partial_attention`` calls it."""
    types, hints = {}, {}
    for index, name in enumerate(fn.arg_names):
        if name in constants:
            types[name] = "constexpr"
        elif name.isupper() and name not in INTEGERS:  # a pointer
            types[name] = "*" + (dtype if name in TENSORS else POINTER_DTYPES[name])  # KeyError: a new argument
            hints[(index,)] = [["tt.divisibility", 16]]
        elif name.startswith("stride"):  # multiples of the head dim
            types[name] = "i32"
            hints[(index,)] = [["tt.divisibility", 16]]
        else:
            types[name] = "fp32" if name == "sm_scale" else "i32"
    return types, hints


def resource_usage(cubin: bytes) -> Dict[str, int]:
    """``cuobjdump -res-usage`` of a cubin: REG, STACK, LOCAL, SHARED."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([str(tool), "-res-usage", str(path)], capture_output=True, text=True,
                              check=True).stdout
    line = next(line for line in text.splitlines() if "REG:" in line)
    return {key: int(value) for key, value in re.findall(r"(\w+):(\d+)", line)}


def compile_one(job: Compile) -> Compile:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constants = dict(
        combination_flags(job.combination), D=job.head_dim, IEEE_DOT=False, BLOCK_M=job.block_m, BLOCK_N=job.block_n
    )
    fn = getattr(attention, KERNELS[job.kernel]).fn
    start = time.perf_counter()
    try:
        types, hints = signature(fn, job.dtype, constants)
        compiled = triton.compile(ASTSource(fn, types, constants, hints), target=GPUTarget("cuda", job.arch, 32),
                                  options=dict(num_warps=job.num_warps, num_stages=job.num_stages))
        usage = resource_usage(compiled.asm["cubin"])
        job.registers, job.spill_bytes = usage["REG"], usage["STACK"] + usage["LOCAL"]
        job.shared_bytes = compiled.metadata.shared
    except Exception as error:  # reported per compile, counted as a failure
        job.error = f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:200] if str(error).strip() else ''}"
    job.seconds = time.perf_counter() - start
    return job


# --explore: every tile shape worth trying, to choose the lists from.
CANDIDATES = [dict(BLOCK_M=m, BLOCK_N=n, num_warps=w, num_stages=s) for m, n, w in (
    (128, 128, 8), (128, 64, 8), (64, 128, 8), (128, 32, 8), (32, 128, 8), (64, 64, 8), (64, 64, 4),
    (128, 32, 4), (64, 32, 4), (32, 64, 4), (32, 64, 8), (16, 128, 8), (32, 32, 4)) for s in (2, 3)]


def jobs(archs, dtypes, head_dims, combinations, kernels=tuple(KERNELS), explore=False) -> List[Compile]:
    """Every config the autotuner may try (``explore``: every candidate), for each case asked for."""
    out = []
    for kernel in kernels:
        for arch in archs:
            for head_dim in head_dims:
                if explore:
                    configs = [(c["BLOCK_M"], c["BLOCK_N"], c["num_warps"], c["num_stages"]) for c in CANDIDATES]
                else:  # what the autotuner's own pruning keeps on this architecture
                    prune = attention._pruner(kernel, lambda: divmod(arch, 10))
                    configs = [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
                               for c in prune(attention._pool(kernel), {}, D=head_dim)]
                out += [Compile(kernel, arch, dtype, head_dim, combination, *config)
                        for dtype in dtypes for combination in combinations for config in configs]
    return out


def run(todo: List[Compile], n_jobs: int, progress: bool = True) -> List[Compile]:
    from tqdm import tqdm

    with ProcessPoolExecutor(max_workers=n_jobs) as pool:
        return list(tqdm(pool.map(compile_one, todo), total=len(todo), desc="compiling", disable=not progress,
                         unit="kernel"))


def problems(results: List[Compile]) -> List[str]:
    """What keeps the kernels from being GPU-ready: failed or spilling compiles, missing large tiles."""
    found = []
    for r in results:
        where = f"{r.kernel} sm_{r.arch} {r.dtype} D={r.head_dim} {r.combination} {r.block_m}x{r.block_n}/" \
                f"{r.num_warps}w/{r.num_stages}s"
        if r.error:
            found.append(f"{where}: {r.error}")
        elif r.spill_bytes:
            found.append(f"{where}: spills {r.spill_bytes} bytes ({r.registers} registers)")
        elif r.shared_bytes > SHARED_LIMIT[r.arch]:
            found.append(f"{where}: {r.shared_bytes} bytes of shared memory > {SHARED_LIMIT[r.arch]}")
    cases = {(r.kernel, r.arch, r.dtype, r.head_dim, r.combination) for r in results}
    for kernel, arch, dtype, head_dim, combination in sorted(cases):
        if combination == "all":  # every feature at once may use smaller tiles
            continue
        best = max((r.tile for r in results if r.ok and (r.kernel, r.arch, r.dtype, r.head_dim, r.combination)
                    == (kernel, arch, dtype, head_dim, combination)), default=0)
        if best < LARGE_TILES[kernel, arch]:
            found.append(f"{kernel} sm_{arch} {dtype} D={head_dim} {combination}: largest clean tile {best} < "
                         f"{LARGE_TILES[kernel, arch]}")
    return found


def markdown(results: List[Compile]) -> str:
    """One row per kernel, architecture and head dim: compiles, spills, the most registers, and for
    each combination the largest clean tile (BLOCK_M x BLOCK_N / warps)."""
    combinations = list(dict.fromkeys(r.combination for r in results))
    rows: Dict[tuple, List[Compile]] = {}
    for r in results:
        rows.setdefault((r.kernel, r.arch, r.head_dim), []).append(r)
    lines = ["| kernel | arch | D | compiles | spilling | max registers | max shared KB | "
             + " | ".join(combinations) + " |", "|---" * (6 + len(combinations)) + "|"]
    for (kernel, arch, head_dim), group in rows.items():
        largest = []
        for combination in combinations:
            clean = [r for r in group if r.ok and r.combination == combination]
            best = max(clean, key=lambda r: (r.tile, -r.registers), default=None)
            largest.append(f"{best.block_m}x{best.block_n}/{best.num_warps}w" if best else "none")
        lines.append(f"| {kernel} | sm_{arch} | {head_dim} | {len(group)} | {sum(1 for r in group if not r.ok)} | "
                     f"{max(r.registers for r in group)} | {max(r.shared_bytes for r in group) / 1024:.0f} | "
                     + " | ".join(largest) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], choices=[80, 90])
    parser.add_argument("--dtype", nargs="+", default=["bf16", "fp16"], choices=["bf16", "fp16"])
    parser.add_argument("--head-dim", type=int, nargs="+", default=[64, 128], choices=[64, 128])
    parser.add_argument("--combination", nargs="+", default=list(COMBINATIONS), choices=list(COMBINATIONS))
    parser.add_argument("--kernel", nargs="+", default=list(KERNELS), choices=list(KERNELS))
    parser.add_argument("--explore", action="store_true", help="every candidate tile, not the autotune lists")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiles at once")
    parser.add_argument("--json", type=Path, help="write every compile's figures here")
    parser.add_argument("--markdown", action="store_true", help="print the summary as a Markdown table")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from wasabi import msg

    args = parse_args(argv)
    import triton

    todo = jobs(args.arch, args.dtype, args.head_dim, args.combination, args.kernel, args.explore)
    msg.info(f"Triton {triton.__version__}: {len(todo)} compiles ({args.jobs} at once)")
    results = run(todo, args.jobs)
    if args.json:
        args.json.write_text(json.dumps([dict(asdict(r), ok=r.ok) for r in results], indent=1))
    if args.markdown:
        print(markdown(results))
    else:
        msg.table([(r.kernel, f"sm_{r.arch}", r.dtype, r.head_dim, r.combination,
                    f"{r.block_m}x{r.block_n}/{r.num_warps}w/{r.num_stages}s", r.registers, r.spill_bytes,
                    f"{r.shared_bytes / 1024:.0f}", "ok" if r.ok else "FAIL") for r in results],
                  header=("kernel", "arch", "dtype", "D", "combination", "config", "regs", "spill", "smem KB", ""))
    found = problems(results)
    for line in found:
        msg.fail(line)
    if found:
        return 1
    msg.good(f"{len(results)} compiles: none fails or spills; every caller keeps its large tile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
