"""Documents per second of ``seqgpt annotate`` with 1 and 2 workers: ``nlp.pipe`` processes
(``--n-process``) and Ray actors (``--engine ray --replicas``), on the same input.

Each setting annotates the same documents into a fresh folder; the time is the whole job
(loading the pipeline, starting workers or Ray, writing shards), the median of ``--repeats``.

    python benchmarks/annotate.py                       # a tiny random BLOOM, 2 CPU cores
    python benchmarks/annotate.py --model path/to/SeqGPT-560M --docs 400
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

from wasabi import msg

from spacy_seqgpt.annotation.job import annotate
from spacy_seqgpt.models.tiny import write_tiny_model

SENTENCES = ["Tim Cook met Olaf Scholz in Berlin.", "Apple opened a new office in Paris.",
             "Serena Williams won the final in New York.", "The bank raised rates again."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or hub id (default: a tiny random BLOOM)")
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--shard-size", type=int, default=25)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray rows")
    args = parser.parse_args()
    import spacy

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or str(write_tiny_model(tmp / "model"))
        nlp = spacy.blank("en")
        nlp.add_pipe("seqgpt_ner", config={"labels": ["person", "organization", "location"], "model": model,
                                           "decoding": {"max_new_tokens": args.max_new_tokens}})
        nlp.to_disk(tmp / "pipeline")
        inputs = tmp / "in.txt"
        inputs.write_text("\n".join(SENTENCES[i % len(SENTENCES)] for i in range(args.docs)) + "\n", encoding="utf8")
        settings = [("processes", 1, {}), ("processes", 2, {"n_process": 2})]
        if not args.no_ray:
            settings += [("Ray actors", 1, {"engine": "ray", "replicas": 1}),
                         ("Ray actors", 2, {"engine": "ray", "replicas": 2})]
        rows = []
        for kind, workers, options in settings:
            times = []
            for repeat in range(args.repeats):
                output = tmp / f"out-{kind}-{workers}-{repeat}"
                started = time.perf_counter()
                annotate(str(tmp / "pipeline"), str(inputs), output, shard_size=args.shard_size, progress=False,
                         **options)
                times.append(time.perf_counter() - started)
            rows.append((kind, workers, args.docs / statistics.median(times)))
            msg.text(f"{kind} x{workers}: {rows[-1][2]:.1f} docs/s (median of {args.repeats})")
        table = [(kind, workers, f"{rate:.1f}", f"{rate / next(r for k, w, r in rows if k == kind and w == 1):.2f}x")
                 for kind, workers, rate in rows]
        msg.table(table, header=("workers", "n", "docs/s", "vs 1 worker"), divider=True)


if __name__ == "__main__":
    main()
