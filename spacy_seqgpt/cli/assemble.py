"""``python -m spacy seqgpt assemble CONFIG MODEL RECORDS OUTPUT [--labels NAME=a,b ...] [--section.key value ...]``"""
from pathlib import Path
from typing import Dict, List

import typer
from wasabi import msg

from . import command

# Where a component's labels come from in the training records: (task, relation records only).
LABEL_SOURCES = {
    "seqgpt_ner": ("extract", False),
    "seqgpt_typing": ("extract", False),
    "seqgpt_rel": ("classify", True),
    "seqgpt_textcat": ("classify", False),
}
LABELLED = (*LABEL_SOURCES, "seqgpt_events")  # the factories with a `labels` setting
SEQGPT_FACTORIES = (*LABELLED, "seqgpt_questions")


def given_labels(options: List[str]) -> Dict[str, List[str]]:
    """``--labels NAME=a,b`` options as ``{component name: labels}``; an option that names no
    label, an empty label (``a,,b``) or a component twice is refused."""
    given: Dict[str, List[str]] = {}
    for option in options:
        name, sep, text = option.partition("=")
        name = name.strip()
        labels = [label.strip() for label in text.split(",")]
        if not sep or not name:
            raise ValueError(f"--labels {option!r}: write it as COMPONENT=label,label (e.g. seqgpt_ner=person,city)")
        if not any(labels) or not all(labels):
            raise ValueError(f"--labels {option!r}: {'an empty label' if any(labels) else 'no label'} for {name}; "
                             "write the labels between the commas (seqgpt_ner=person,city)")
        if name in given:
            raise ValueError(f"--labels names {name} twice; give all its labels in one option ({name}=a,b)")
        given[name] = labels
    return given


@command("assemble", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def assemble_cli(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., help="Pipeline config of SeqGPT components (configs/pipelines/)", exists=True, dir_okay=False),
    model: str = typer.Argument(..., help="The trained model folder (or hub id): the config's vars.model"),
    records: Path = typer.Argument(..., help="The training records (JSONL file or folder) the labels come from", exists=True),
    output: Path = typer.Argument(..., help="Folder to write the pipeline to"),
    labels: List[str] = typer.Option([], "--labels", help="COMPONENT=label,label: these labels instead of the records' (repeat per component)"),
    max_labels: int = typer.Option(0, "--max-labels", help="At most this many labels per component, most frequent first (0: all)"),
    max_new_tokens: int = typer.Option(0, "--max-new-tokens", help="decoding.max_new_tokens of every SeqGPT component (0: the config's)"),
):
    """Assemble a pipeline on a trained model whose components ask for the labels it was trained
    on: the labels its training records answer with, in the pipeline's language. Entities and
    their types come from the extraction records, relations from the relation records, document
    categories from the other classification records; a component the records say nothing
    about (events, questions, relations without relation records) keeps its config's labels."""
    from spacy.cli._util import parse_config_overrides
    from spacy.util import load_config, load_model_from_config

    from ..data.records import gold_labels, read_records

    config = load_config(config_path, overrides={**parse_config_overrides(ctx.args), "vars.model": model},
                         interpolate=False)
    if max_labels < 0 or max_new_tokens < 0:
        raise ValueError(f"--max-labels and --max-new-tokens are 0 (all; the config's) or more, got {max_labels} and "
                         f"{max_new_tokens}")
    known = list(read_records(records))
    lang = config["nlp"]["lang"]
    given = given_labels(labels)
    unknown = sorted(set(given) - set(config["nlp"]["pipeline"]))
    if unknown:
        raise ValueError(f"--labels names {unknown}, which are not in the pipeline {config['nlp']['pipeline']}")
    without = sorted(name for name in given if config["components"][name].get("factory") not in LABELLED)
    if without:
        raise ValueError(f"--labels names {without}, which take no labels (seqgpt_questions asks free-text "
                         "questions: set them with --components.<name>.questions)")
    for name in config["nlp"]["pipeline"]:
        settings = config["components"][name]
        factory = settings.get("factory")
        if factory not in SEQGPT_FACTORIES:
            continue
        if max_new_tokens:
            settings.setdefault("decoding", {})["max_new_tokens"] = max_new_tokens
        if name not in given and factory not in LABEL_SOURCES:
            continue
        task, pairs = LABEL_SOURCES.get(factory, (None, False))
        chosen = given.get(name) or gold_labels(known, task, lang, pairs=pairs)
        chosen = chosen[: max_labels or None]
        if not chosen and not settings.get("labels"):
            msg.fail(f"No labels for {name}", f"The records in {records} answer no {task} task in '{lang}' that "
                     f"{factory} asks; give them with --labels {name}=label,label.", exits=1)
        if not chosen:
            msg.warn(f"{name}: the records answer none of its labels; it keeps the config's (zero-shot)")
            continue
        settings["labels"] = chosen
        msg.info(f"{name}: {len(chosen)} labels ({', '.join(chosen[:8])}{', ...' if len(chosen) > 8 else ''})")
    nlp = load_model_from_config(config, auto_fill=True)
    nlp.to_disk(output)
    msg.good(f"Saved the pipeline to {output}")
