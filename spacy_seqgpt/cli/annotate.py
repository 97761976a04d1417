"""``python -m spacy seqgpt annotate PIPELINE INPUT OUTPUT [--engine ray] ... [--section.key value ...]``"""
from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from . import command


@command("annotate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def annotate_cli(
    ctx: typer.Context,
    pipeline: str = typer.Argument(..., help="A saved pipeline folder or an installed pipeline package"),
    inputs: str = typer.Argument(..., help="A .jsonl (a text field), .txt (a document per line) or .spacy file, or a folder or glob of them"),
    output: Path = typer.Argument(..., help="Folder for the shards (DocBins) and manifest.json; a rerun resumes", file_okay=False),
    text_field: str = typer.Option("text", "--text-field", help="The text field of .jsonl inputs"),
    shard_size: int = typer.Option(1000, "--shard-size", help="Documents per shard"),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Documents per nlp.pipe batch"),
    limit: int = typer.Option(0, "--limit", help="Annotate only the first N documents (0: all)"),
    n_process: int = typer.Option(1, "--n-process", help="Worker processes of nlp.pipe (CPU machines)"),
    as_json: bool = typer.Option(False, "--jsonl", help="Also write each shard's annotations as JSON lines"),
    engine: str = typer.Option("local", "--engine", help="local (nlp.pipe) or ray (an actor pool on Ray Data)"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray: 'auto' or a cluster address (default: a local Ray)"),
    replicas: int = typer.Option(1, "--replicas", help="Ray: pipeline replicas (actors)"),
    gpus_per_replica: float = typer.Option(0.0, "--gpus-per-replica", help="Ray: GPUs each replica holds (1 on GPU clusters)"),
):
    """Annotate a corpus into DocBin shards with a manifest; killed and rerun, it resumes. Options
    like --components.seqgpt_ner.decoding.batch_size 32 change the pipeline's config (its
    decoding block, say) as spaCy's commands do; the manifest records each component's."""
    from spacy.cli._util import parse_config_overrides

    from ..annotation.job import annotate
    from ..annotation.shards import ShardFailed

    try:
        manifest = annotate(pipeline, inputs, output, text_field=text_field, shard_size=shard_size,
                            batch_size=batch_size, limit=limit, n_process=n_process, as_json=as_json, engine=engine,
                            address=address, replicas=replicas, gpus_per_replica=gpus_per_replica,
                            overrides=parse_config_overrides(ctx.args))
    except (ValueError, ImportError, ShardFailed) as err:
        msg.fail("seqgpt annotate stopped", str(err), exits=1)
    counts = manifest.get("counts", {})
    msg.good(f"{counts.get('docs', 0)} documents annotated, {counts.get('rejected', 0)} rejected "
             f"({output}/shard-*.rejects.jsonl), in {counts.get('shards', 0)} shards in {output}")
