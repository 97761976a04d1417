"""The annotation job on Ray Data: an actor pool of pipeline replicas, one shard per call.

Shards are streamed to the actors as small descriptors (input file, offset, count); each
replica reads its shard's documents itself, so the inputs and the output folder must be
visible to every worker (one machine, or a shared file system). The driver records each
shard in the manifest as its result streams back, so the job resumes as a local one does.
Ray is an optional dependency (``pip install spacy-seqgpt[ray]``), imported only here.
"""
from pathlib import Path
from typing import Iterator, List, Optional

from .inputs import Shard
from .shards import annotate_shard


class _Replica:
    """One pipeline, loaded once per actor."""

    def __init__(self, pipeline: str, output: str, options: dict):
        import spacy

        self.nlp = spacy.load(pipeline)
        self.output = Path(output)
        self.options = options

    def __call__(self, batch: dict) -> dict:
        import json

        entries = [annotate_shard(self.nlp, Shard.from_dict(json.loads(shard)), self.output, **self.options)
                   for shard in batch["shard"]]
        return {"entry": [json.dumps(entry) for entry in entries]}


def annotate_on_ray(pipeline: str, shards: List[Shard], output: Path, options: dict, *, address: Optional[str],
                    replicas: int, gpus_per_replica: float) -> Iterator[dict]:
    """Each shard's manifest entry, as the replicas finish them."""
    import json

    try:
        import ray
    except ImportError:
        raise ImportError("--engine ray needs Ray: pip install 'spacy-seqgpt[ray]'") from None
    if not shards:
        return
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    items = [{"shard": json.dumps(shard.to_dict())} for shard in shards]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _Replica, fn_constructor_args=(str(pipeline), str(output), options), batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=replicas), num_cpus=1, num_gpus=gpus_per_replica)
    for row in dataset.iter_rows():
        yield json.loads(row["entry"])
