"""``python -m spacy seqgpt unmask-sweep CONFIG --groups 4 --output DIR [--paths.x ...]``"""
from pathlib import Path
from typing import Optional

import typer
from spacy.cli._util import parse_config_overrides

from . import command


@command("unmask-sweep", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def unmask_sweep_cli(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., help="Training config with an llm_unmasked_tagger", exists=True,
                                       dir_okay=False),
    output: Path = typer.Option(Path("unmask_sweep"), "--output", "-o", help="Folder for the runs and the report"),
    groups: int = typer.Option(4, "--groups", "-g", help="Number of layer groups (2**groups configurations)"),
    component: str = typer.Option("llm_unmasked_tagger", "--component", "-c", help="Name of the tagger in the pipeline"),
    metric: str = typer.Option("ents_f", "--metric", "-m", help="Dev score to compare"),
    codes: Optional[str] = typer.Option(None, "--codes", help="Only these codes, comma separated (e.g. 0000,0110)"),
):
    """Train and score the tagger with every unmasking configuration; writes a table and a plot
    of the dev scores and names the best. Extra options override the config (as `spacy train`)."""
    from ..training.sweep import run_sweep

    run_sweep(config_path, output, groups=groups, component=component, metric=metric,
              overrides=parse_config_overrides(ctx.args),
              codes=[code.strip() for code in codes.split(",")] if codes else None)
