"""``python -m spacy seqgpt convert INPUT OUTPUT [--format auto] [--quota N] ...``"""
from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from . import command


@command("convert")
def convert_cli(
    input_path: Path = typer.Argument(..., help="Corpus file: CoNLL-style IOB, weibo-ner, SemEval-2014 XML, CSV, TNEWS JSON, CrossRE JSON or DocBin (with doc._.rel: relations)", exists=True),
    output: Path = typer.Argument(..., help="JSONL file to write the records to", dir_okay=False),
    fmt: str = typer.Option("auto", "--format", "-f", help="conll, weibo, semeval-aspects, semeval-polarity, csv, tnews, docbin, crossre, or auto (from the file name)"),
    source: Optional[str] = typer.Option(None, "--source", help="Dataset name in the records (default: the input's folder name)"),
    lang: Optional[str] = typer.Option(None, "--lang", help="Language code (default: zh for weibo and tnews, else en)"),
    seed: int = typer.Option(0, "--seed", help="Seed of the shuffling and negative sampling"),
    quota: int = typer.Option(0, "--quota", help="At most this many records per dataset-label pair (0: no quota)"),
    max_negatives: int = typer.Option(5, "--max-negatives", help="At most this many sampled negative labels per record"),
    all_labels: bool = typer.Option(False, "--all-labels", help="Ask for every label of the dataset in each record (evaluation data)"),
    limit: int = typer.Option(0, "--limit", help="Write at most this many records (0: all)"),
    label_map: Optional[Path] = typer.Option(None, "--label-map", help="JSON file mapping tag names to label words", exists=True),
    label_variants: float = typer.Option(0.0, "--label-variants", help="Share of extraction training records asking with other words for their labels (0 to 1)"),
):
    """Turn a corpus into SeqGPT atomic-task records (JSONL). A relation corpus gives records of
    both atomic tasks: extraction of its entities, classification of each entity pair."""
    import srsly

    from ..data.readers import read_corpora
    from ..data.records import write_records
    from ..data.sampling import corpus_records

    mapping = srsly.read_json(label_map) if label_map else None
    records, left_out = [], []
    try:
        for corpus in read_corpora(input_path, fmt, lang=lang, label_map=mapping):
            made = corpus_records(corpus, source or input_path.resolve().parent.name, seed=seed, quota=quota,
                                  max_negatives=max_negatives, all_labels=all_labels, limit=limit, left_out=left_out,
                                  label_variants=label_variants)
            records.extend(made)
            msg.text(f"{len(made)} {corpus.task} records ({len(corpus.examples)} examples, {len(corpus.labels)} labels)")
    except (ValueError, OSError) as err:
        msg.fail(f"Could not convert {input_path}", str(err), exits=1)
    write_records(output, records)
    report_left_out(output, left_out)
    msg.good(f"Wrote {len(records)} records to {output}")


def report_left_out(output: Path, left_out: list) -> None:
    """Write the training examples left out (answers the format cannot hold) beside ``output``,
    and say so; an old list of a previous run is removed when none are left out."""
    from ..data.records import LEFT_OUT_SUFFIXES, write_records

    path = output.with_name(output.stem + LEFT_OUT_SUFFIXES[0])
    if not left_out:
        path.unlink(missing_ok=True)
        return
    write_records(path, left_out)
    msg.warn(f"{len(left_out)} training examples left out: their answers would not read back "
             f"(e.g. {left_out[0]['reason']}); listed in {path}")


@command("convert-all")
def convert_all_cli(
    data: Path = typer.Argument(..., help="Folder laid out as ../shared/datasets (or assets/datasets), or a training config whose [corpus] section names the folders and limits", exists=True),
    output_dir: Path = typer.Argument(..., help="Writes train/*.jsonl (held-in train splits) and eval/*.jsonl (test splits)"),
    seed: int = typer.Option(0, "--seed"),
    quota: Optional[int] = typer.Option(None, "--quota", help="Training records per dataset-label pair (0: no quota; default: the config's, else 0)"),
    max_negatives: Optional[int] = typer.Option(None, "--max-negatives", help="Negative labels per record (default: the config's, else 5)"),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", help="At most this many training records per file (0: all; default: the config's, else 0)"),
    eval_limit: Optional[int] = typer.Option(None, "--eval-limit", help="At most this many evaluation records per file (0: all; default: the config's, else 0)"),
    label_variants: Optional[float] = typer.Option(None, "--label-variants", help="Share of extraction training records asking with other words for their labels (default: the config's, else 0)"),
):
    """Convert every known dataset found in DATA: train splits with sampling and quotas (the catalog
    has no train split of the held-out CrossNER and CrossRE domains), test splits with every label
    asked (evaluation). ``--eval-limit`` and ``--train-limit`` count each atomic task's records
    of a relation corpus apart. Options given override a config's [corpus]."""
    import configparser

    from ..data.catalog import CATALOG, available
    from ..data.readers import read_corpora
    from ..data.records import write_records
    from ..data.sampling import corpus_records
    from .preset import FETCH_HINT, corpus_settings

    settings = {"data_dir": data, "quota": 0, "max_negatives": 5, "train_limit": 0, "eval_limit": 0, "skip_sources": [],
                "label_variants": 0.0}
    if data.is_file():
        try:
            settings.update(corpus_settings(data))
        except (ValueError, configparser.Error) as err:
            msg.fail(f"Could not read the corpus settings of {data}", str(err), exits=1)
    given = {"quota": quota, "max_negatives": max_negatives, "train_limit": train_limit, "eval_limit": eval_limit,
             "label_variants": label_variants}
    settings.update({key: value for key, value in given.items() if value is not None})
    data_dir, quota, max_negatives = settings["data_dir"], settings["quota"], settings["max_negatives"]
    train_limit, eval_limit = settings["train_limit"], settings["eval_limit"]
    msg.info(f"Converting {data_dir} (quota {quota}, train limit {train_limit}, eval limit {eval_limit}, "
             f"label variants {settings['label_variants']:g})")
    unknown = sorted(set(settings["skip_sources"]) - {item.source for item in CATALOG})
    if unknown:
        msg.fail(f"[corpus] skip_sources names no dataset: {', '.join(unknown)}",
                 f"Known: {', '.join(sorted({item.source for item in CATALOG}))}.", exits=1)
    wanted = [item for item in CATALOG if item.source not in settings["skip_sources"]]
    found = [item for item in available(data_dir) if item in wanted]
    if not found:
        msg.fail(f"No known dataset files under {data_dir}", "Expected the layout of ../shared/datasets "
                 f"(e.g. conll2003/train.txt, banking77/train.csv). {FETCH_HINT}", exits=1)
    lacking = sorted({item.source for item in wanted if item not in found})
    if lacking:
        msg.warn(f"{data_dir} lacks files of {len(lacking)} datasets, not converted: {', '.join(lacking)}",
                 FETCH_HINT)
    for item in found:
        evaluation = item.split == "eval"
        left_out: list = []
        try:
            records = [record for corpus in read_corpora(data_dir / item.path, item.fmt, lang=item.lang)
                       for record in corpus_records(corpus, item.source, seed=seed, quota=0 if evaluation else quota,
                                                    max_negatives=max_negatives, all_labels=evaluation,
                                                    limit=eval_limit if evaluation else train_limit,
                                                    left_out=left_out, label_variants=settings["label_variants"])]
        except ValueError as err:
            msg.fail(f"Could not convert {data_dir / item.path}", str(err), exits=1)
        output = output_dir / item.split / item.output_name
        write_records(output, records)
        msg.text(f"{item.split:5} {item.output_name:40} {len(records):6} records")
        report_left_out(output, left_out)
    msg.good(f"Converted {len(found)} files into {output_dir}")
