"""``python -m spacy seqgpt train CONFIG --stage pt|ft [--init-from DIR] [--section.key value ...]``"""
from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from . import command


@command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_cli(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., help="Training config (see configs/training/seqgpt_tiny.cfg)", exists=True, dir_okay=False),
    stage: str = typer.Option(..., "--stage", help="pt (pre-training) or ft (fine-tuning)"),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="Start from this model instead of [paths] base_model (ft: the pre-trained model)"),
    resume_changed: bool = typer.Option(False, "--resume-changed", help="Resume the stage's checkpoint even though the data or settings changed (the new ones apply from there)"),
):
    """Train one SeqGPT stage; resumes from the stage's last checkpoint. Extra options override the config."""
    from spacy.cli._util import parse_config_overrides

    from ..training.settings import load_settings
    from ..training.trainer import train_stage

    try:
        settings = load_settings(config_path, stage, parse_config_overrides(ctx.args))
        train_stage(settings, init_from, resume_changed=resume_changed)
    except ValueError as err:
        msg.fail(f"Training stage {stage} failed", str(err), exits=1)
