"""The annotation job on Ray Data: an actor pool of pipeline replicas, one shard per call.

Shards are streamed to the actors as small descriptors (input file, offset, count); each
replica reads its shard's documents itself, so the inputs and the output folder must be
visible to every worker (one machine, or a shared file system). The driver records each
shard in the manifest as its result streams back, so the job resumes as a local one does.
Ray is an optional dependency (``pip install spacy-seqgpt[ray]``), imported only here.
"""
from pathlib import Path
from typing import Iterator, List, Optional

from ..validation import require
from .inputs import Shard
from .shards import ShardFailed, annotate_shard


class _Replica:
    """One pipeline, loaded once per actor. What goes wrong comes back as a result, not as a Ray
    traceback: a pipeline that cannot be loaded, or a shard that failed as a whole."""

    def __init__(self, pipeline: str, output: str, options: dict, overrides: dict):
        import spacy

        self.output = Path(output)
        self.options = options
        self.nlp, self.error = None, None
        try:
            self.nlp = spacy.load(pipeline, config=overrides)
        except Exception as err:  # the driver says it in one message and stops the run
            self.error = f"a Ray replica could not load the pipeline {pipeline!r}: {type(err).__name__}: {err}"

    def __call__(self, batch: dict) -> dict:
        import json

        entries = []
        for shard in batch["shard"]:
            shard = Shard.from_dict(json.loads(shard))
            if self.error is not None:
                entries.append({"error": self.error})
                continue
            try:
                entries.append(annotate_shard(self.nlp, shard, self.output, **self.options))
            except ShardFailed as err:
                entries.append({"error": str(err), "shard_failed": True})
        return {"entry": [json.dumps(entry) for entry in entries]}


def annotate_on_ray(pipeline: str, shards: List[Shard], output: Path, options: dict, *, address: Optional[str],
                    replicas: int, gpus_per_replica: float, overrides: Optional[dict] = None) -> Iterator[dict]:
    """Each shard's manifest entry, as the replicas finish them. A replica that cannot load the
    pipeline, or a shard that fails as a whole, ends the run with one message (the shards done
    so far stay done)."""
    import json

    require("ray", "--engine ray", "ray")
    import ray
    if not shards:
        return
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    items = [{"shard": json.dumps(shard.to_dict())} for shard in shards]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _Replica, fn_constructor_args=(str(pipeline), str(output), options, dict(overrides or {})), batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=replicas), num_cpus=1, num_gpus=gpus_per_replica)
    for row in dataset.iter_rows():
        entry = json.loads(row["entry"])
        if entry.get("shard_failed"):
            raise ShardFailed(entry["error"])
        if "error" in entry:
            raise ValueError(entry["error"])
        yield entry
