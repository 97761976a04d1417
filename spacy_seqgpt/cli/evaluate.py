"""``python -m spacy seqgpt evaluate MODEL DATA... --output DIR``"""
from pathlib import Path
from typing import List

import typer
from wasabi import msg

from ..data.catalog import HELD_OUT_SOURCES
from . import command


@command("evaluate")
def evaluate_cli(
    model: str = typer.Argument(..., help="Model folder (a trained SeqGPT model) or hub id"),
    data: List[Path] = typer.Argument(..., help="Record files (JSONL) or folders of them", exists=True),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for metrics.json, metrics.md and scores.png"),
    held_out: str = typer.Option(",".join(HELD_OUT_SOURCES), "--held-out", help="Comma-separated source prefixes never trained on"),
    limit: int = typer.Option(0, "--limit", help="Score at most this many records per source and task (0: all)"),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="decoding.batch_size"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="decoding.max_new_tokens"),
    num_beams: int = typer.Option(1, "--num-beams", help="decoding.num_beams"),
    max_input_tokens: int = typer.Option(512, "--max-input-tokens", help="decoding.max_input_tokens: longer texts are cut into windows, as the components cut them"),
    constrained: bool = typer.Option(True, "--constrained/--free", help="decoding.constrained: answers follow the components' answer grammars (default), or decode freely as the paper does"),
    span_search: bool = typer.Option(False, "--span-search/--greedy-spans", help="decoding.span_search: extraction answers also hold every span at least --threshold likely (the recall knob)"),
    threshold: float = typer.Option(0.0, "--threshold", help="Extraction spans scored below this are left out, as seqgpt_ner's threshold; the span search's floor"),
    multi_label: bool = typer.Option(False, "--multi-label/--single-label", help="Classification answers name any of the labels (seqgpt_textcat's multi_label), or one (default, as seqgpt_textcat)"),
    device: str = typer.Option("auto", "--device"),
):
    """Score a model on atomic-task records: the paper's F1/ROUGE score per dataset and task, and span F1.
    Records are asked as seqgpt_ner and seqgpt_textcat ask with the same [decoding] block."""
    from collections import Counter

    import srsly

    from ..data.records import read_records
    from ..decoding import Decoding
    from ..evaluation.metrics import score_records, summarize
    from ..evaluation.predict import predict_records
    from ..evaluation.reports import bar_chart, markdown_table
    from ..models import HFModel, ModelLoadError, load_shared

    decoding = Decoding(batch_size=batch_size, max_new_tokens=max_new_tokens, num_beams=num_beams,
                        max_input_tokens=max_input_tokens, constrained=constrained, span_search=span_search)
    try:
        decoding.check_floor(threshold, "--span-search")
    except ValueError:
        msg.fail("--span-search needs a --threshold above 0 and at most 1", "it finds every span at least that "
                 "likely; 0.1 is a start, lower finds more", exits=1)

    records, per_group = [], Counter()
    for path in data:
        for record in read_records(path):
            group = (record["source"], record["task"])  # a relation source has two atomic tasks
            if not limit or per_group[group] < limit:
                per_group[group] += 1
                records.append(record)
    if not records:
        msg.fail("No records to evaluate", exits=1)
    try:
        shared = load_shared(HFModel(name=model, device=device).resolved())
    except (ModelLoadError, ValueError) as err:
        msg.fail("Could not load the model", str(err), exits=1)
    msg.info(f"Answering {len(records)} records from {len({source for source, _ in per_group})} sources")
    predictions, generated = predict_records(shared, records, decoding, multi_label=multi_label, threshold=threshold,
                                             progress=True)
    prefixes = [p for p in held_out.split(",") if p]
    results = score_records(records, predictions, generated, prefixes)
    summary = summarize(results)
    output.mkdir(parents=True, exist_ok=True)
    settings = {**decoding.to_dict(), "multi_label": multi_label, "threshold": threshold}
    srsly.write_json(output / "metrics.json", {"model": model, "decoding": settings, "results": results,
                                               "summary": summary})
    table = markdown_table(results, summary, settings)
    (output / "metrics.md").write_text(table, encoding="utf8")
    bar_chart(results, output / "scores.png")
    print(table)
    msg.good(f"Wrote metrics.json, metrics.md and scores.png to {output}")
