"""llm_unmasked_tagger, a tiny decoder trained from scratch, against spaCy's own ``ner``.

Both learn CoNLL-2003 from the same sentences with the same budget (epochs, batch size,
Adam with the same learning rate), from random weights: the decoder is the 4-layer ``init-tiny``
Llama fully trained (no LoRA: there is nothing pre-trained to keep) under the unmasking codes
``0000`` (the stock causal decoder), ``1111`` and a mixed one; spaCy's ``ner`` is its default
model (hash-embedding CNN and transition-based parser). Prints dev entity F1 of each, each
decoder's ratio to spaCy's, and with ``--plot`` saves the dev F1 per epoch.

This is a small-scale figure on a CPU, not the paper's 7B result: a from-scratch decoder with a
byte-level tokenizer trained on a few lines is no pre-trained LLM.

    python benchmarks/tagger.py [--train-limit 2000] [--dev-limit 500] [--epochs 10] [--plot tagger.png]
"""
import argparse
import random
import tempfile
import time
from pathlib import Path

import spacy
from thinc.api import Adam, fix_random_seed
from tqdm import tqdm
from wasabi import msg

from spacy_seqgpt.data.conll import create_conll_corpus
from spacy_seqgpt.models.tiny import write_tiny_model

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "conll2003"


def train_and_score(nlp, train, dev, *, epochs: int, batch_size: int, learn_rate: float, seed: int, name: str):
    """Dev F1 after each epoch of plain nlp.update training."""
    fix_random_seed(seed)
    random.seed(seed)
    nlp.initialize(lambda: train)
    optimizer = Adam(learn_rate)
    curve = []
    for epoch in tqdm(range(epochs), desc=name, leave=False):
        random.shuffle(train)
        for start in range(0, len(train), batch_size):
            nlp.update(train[start : start + batch_size], sgd=optimizer)
        curve.append(nlp.evaluate(dev)["ents_f"])
    return curve


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.txt and valid.txt")
    parser.add_argument("--train-limit", type=int, default=2000)
    parser.add_argument("--dev-limit", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learn-rate", type=float, default=1e-3)
    parser.add_argument("--codes", default="0000,1111,0110")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None, help="save dev F1 per epoch as a PNG here")
    args = parser.parse_args()

    def examples(nlp, split, limit):
        return list(create_conll_corpus(args.data / split, limit)(nlp))

    budget = dict(epochs=args.epochs, batch_size=args.batch_size, learn_rate=args.learn_rate, seed=args.seed)
    curves, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        model = str(write_tiny_model(Path(tmp) / "tiny-llama", arch="llama", seed=args.seed))
        for code in args.codes.split(","):
            nlp = spacy.blank("en")
            nlp.add_pipe("llm_unmasked_tagger", config={"model": model, "unmask": code, "lora": None, "device": "cpu"})
            start = time.perf_counter()
            curves[code] = train_and_score(nlp, examples(nlp, "train.txt", args.train_limit),
                                           examples(nlp, "valid.txt", args.dev_limit), name=code, **budget)
            seconds[code] = time.perf_counter() - start
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    start = time.perf_counter()
    curves["spacy ner"] = train_and_score(nlp, examples(nlp, "train.txt", args.train_limit),
                                          examples(nlp, "valid.txt", args.dev_limit), name="spacy ner", **budget)
    seconds["spacy ner"] = time.perf_counter() - start

    baseline = curves["spacy ner"][-1]
    msg.table([(name, f"{curve[-1]:.3f}", f"{max(curve):.3f}", f"{curve[-1] / baseline:.2f}x" if baseline else "-",
                f"{seconds[name]:.0f}") for name, curve in curves.items()],
              header=("system", "dev F1 (last)", "dev F1 (best)", "ratio to spaCy ner", "train s"),
              divider=True)
    msg.info(f"{args.train_limit} train / {args.dev_limit} dev sentences, {args.epochs} epochs, batch "
             f"{args.batch_size}, Adam {args.learn_rate}, seed {args.seed}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 3.6))
        for name, curve in curves.items():
            axis.plot(range(1, len(curve) + 1), curve, marker="o", label=name if name == "spacy ner" else f"unmask {name}")
        axis.set_xlabel("epoch")
        axis.set_ylabel("dev entity F1")
        axis.set_title("CoNLL-2003, same data and budget")
        axis.legend()
        figure.tight_layout()
        figure.savefig(args.plot, dpi=120)
        msg.good(f"Saved {args.plot}")


if __name__ == "__main__":
    main()
