"""``python -m spacy seqgpt assemble CONFIG MODEL RECORDS OUTPUT [--ner-labels ...] [--section.key value ...]``"""
from pathlib import Path

import typer
from wasabi import msg

from . import command


@command("assemble", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def assemble_cli(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., help="Pipeline config with seqgpt_ner and seqgpt_textcat (configs/pipelines/)", exists=True, dir_okay=False),
    model: str = typer.Argument(..., help="The trained model folder (or hub id): the config's vars.model"),
    records: Path = typer.Argument(..., help="The training records (JSONL file or folder) the labels come from", exists=True),
    output: Path = typer.Argument(..., help="Folder to write the pipeline to"),
    ner_labels: str = typer.Option("", "--ner-labels", help="Comma-separated labels instead of the records' extraction labels"),
    textcat_labels: str = typer.Option("", "--textcat-labels", help="Comma-separated labels instead of the records' classification labels"),
    max_labels: int = typer.Option(0, "--max-labels", help="At most this many labels per component, most frequent first (0: all)"),
):
    """Assemble a pipeline on a trained model whose components ask for the labels it was trained
    on: the labels its training records answer with, in the pipeline's language."""
    from spacy.cli._util import parse_config_overrides
    from spacy.util import load_config, load_model_from_config

    from ..data.records import gold_labels, read_records
    from ..prompts import CLASSIFY, EXTRACT

    config = load_config(config_path, overrides={**parse_config_overrides(ctx.args), "vars.model": model},
                         interpolate=False)
    known = list(read_records(records))
    lang = config["nlp"]["lang"]
    for component, task, given in (("seqgpt_ner", EXTRACT, ner_labels), ("seqgpt_textcat", CLASSIFY, textcat_labels)):
        labels = [label.strip() for label in given.split(",") if label.strip()] or gold_labels(known, task, lang)
        labels = labels[: max_labels or None]
        if not labels:
            msg.fail(f"No {task} labels for {component}", f"The records in {records} answer no {task} task in "
                     f"'{lang}'; give them with --{component[7:]}-labels.", exits=1)
        config["components"][component]["labels"] = labels
        msg.info(f"{component}: {len(labels)} labels ({', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''})")
    nlp = load_model_from_config(config, auto_fill=True)
    nlp.to_disk(output)
    msg.good(f"Saved the pipeline to {output}")
