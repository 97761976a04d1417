"""Records per second of ``seqgpt evaluate``'s decoding against the ``generate()`` path it replaced.

``seqgpt evaluate`` used to answer records with transformers' ``generate``: prompts sorted by
length, cut into batches, left padded, greedy. It now decodes with the components' Decoder:
the same windows, shared prompt prefixes across a record's label chunks, finished rows
leaving the batch, the LM head on the last position only, and (by default) the answer
grammars. All rows answer the same records (the evaluation splits of ``--data-dir``, every
label asked, ``--limit`` records per file) with the same model, batch size and
``max_new_tokens``; free decoding writes the same answers as ``generate()`` (the tests check
it), so its ratio is the decoder's alone.

    python benchmarks/evaluate.py                                  # shipped samples, tiny random BLOOM, CPU
    python benchmarks/evaluate.py --data-dir ../shared/datasets --model path/to/SeqGPT-560M
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

from wasabi import msg

from spacy_seqgpt.data.catalog import available
from spacy_seqgpt.data.readers import read_corpora
from spacy_seqgpt.data.sampling import corpus_records
from spacy_seqgpt.decoding import Decoding
from spacy_seqgpt.evaluation.predict import predict_records
from spacy_seqgpt.models import HFModel, load_shared
from spacy_seqgpt.models.tiny import write_tiny_model
from spacy_seqgpt.prompts import EXTRACT, build_prompt, chunk_labels

ROOT = Path(__file__).resolve().parents[1]


def evaluation_records(data_dir: Path, limit: int):
    records = []
    for item in available(data_dir):
        if item.split == "eval":
            for corpus in read_corpora(data_dir / item.path, item.fmt, lang=item.lang):
                records += corpus_records(corpus, item.source, seed=0, quota=0, max_negatives=0, all_labels=True,
                                          limit=limit)
    return records


def generate_path(shared, records, batch_size, max_new_tokens):
    """What ``seqgpt evaluate`` ran before: ``generate()`` over length-sorted, left-padded batches."""
    import torch
    from tqdm import tqdm

    prompts = [build_prompt(r["task"], r["text"], chunk) for r in records
               for chunk in (chunk_labels(r["labels"]) if r["task"] == EXTRACT else [r["labels"]])]
    encoded = shared.tokenizer(prompts)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    answers = [""] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), desc="generate()", unit="batch", leave=False):
        batch = order[start:start + batch_size]
        inputs = shared.tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, padding_side="left",
                                      return_tensors="pt").to(shared.device)
        with torch.inference_mode():
            output = shared.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                           pad_token_id=shared.tokenizer.pad_token_id,
                                           eos_token_id=shared.tokenizer.eos_token_id)
        texts = shared.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        for i, text in zip(batch, texts):
            answers[i] = text
    return answers


def timed(name, function, repeats):
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
        msg.text(f"{name}: run {repeat + 1}/{repeats} took {times[-1]:.1f} s")
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "assets" / "datasets")
    parser.add_argument("--limit", type=int, default=40, help="records per evaluation file")
    parser.add_argument("--model", help="a local model folder (default: the tiny random BLOOM)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    records = evaluation_records(args.data_dir, args.limit)
    if not records:
        msg.fail(f"No evaluation files under {args.data_dir}", exits=1)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(write_tiny_model(Path(tmp) / "model", "bloom"))
        shared = load_shared(HFModel(name=model, device=args.device).resolved())
        decoding = Decoding(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
        rows = {
            "generate() (the old evaluate path)": lambda: generate_path(shared, records, decoding.batch_size,
                                                                        decoding.max_new_tokens),
            "Decoder, free (same answers as generate())": lambda: predict_records(shared, records,
                                                                                   decoding.but(constrained=False)),
            "Decoder, constrained (evaluate's default)": lambda: predict_records(shared, records, decoding),
        }
        rows[next(iter(rows))]()  # warm-up: first-call costs out of the timing
        rates = {name: len(records) / timed(name, run, args.repeats) for name, run in rows.items()}
    baseline = rates["generate() (the old evaluate path)"]
    msg.info(f"{len(records)} records ({sum(r['task'] == EXTRACT for r in records)} extraction) from {args.data_dir}, "
             f"model {args.model or 'tiny random BLOOM'} on {shared.device}, batch_size {args.batch_size}, "
             f"max_new_tokens {args.max_new_tokens}, medians of {args.repeats}")
    msg.table([(name, f"{rate:.2f}", f"{rate / baseline:.1f}x") for name, rate in rates.items()],
              header=("", "records/s", "vs generate()"), divider=True, widths=(46, 10, 14))


if __name__ == "__main__":
    main()
