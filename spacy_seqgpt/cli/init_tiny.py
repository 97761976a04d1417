"""``python -m spacy seqgpt init-tiny OUT --arch {bloom,llama} [--seed N]``"""
from enum import Enum
from pathlib import Path

import typer
from wasabi import msg

from . import command


class Arch(str, Enum):
    bloom = "bloom"
    llama = "llama"


@command("init-tiny")
def init_tiny_cli(
    out: Path = typer.Argument(..., help="Folder to write the model and tokenizer to", file_okay=False),
    arch: Arch = typer.Option(Arch.bloom, "--arch", "-a", help="Model architecture"),
    seed: int = typer.Option(0, "--seed", "-s", help="Random seed of the weights"),
):
    """Write a tiny random-weight causal LM with a byte-level BPE tokenizer (Hugging Face format)."""
    from ..models.tiny import write_tiny_model

    write_tiny_model(out, arch=arch.value, seed=seed)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    msg.good(f"Wrote a tiny {arch.value} model ({size:.1f} MB) to {out}",
             "Load it with AutoModelForCausalLM.from_pretrained or pass it as a component's \"model\".")
