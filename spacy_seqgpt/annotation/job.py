"""``seqgpt annotate``'s job: plan the shards, skip those done, annotate the rest on one machine
(``nlp.pipe``, ``n_process`` workers) or on Ray, and keep the manifest and a progress bar."""
from pathlib import Path
from typing import Optional

from wasabi import msg

from .inputs import input_files, plan_shards
from .shards import Manifest, annotate_shard, locked, write_json_lines

ENGINES = ("local", "ray")


def pipeline_config(pipeline: str, overrides: dict):
    """The pipeline's config (interpolated) with ``overrides``. A folder's is read from its
    ``config.cfg``, so the Ray driver, which only writes the manifest, does not load the weights
    each replica loads; an installed package is loaded."""
    import spacy

    path = Path(pipeline) / "config.cfg"
    if path.is_file():
        return spacy.util.load_config(path, overrides=overrides, interpolate=True)
    return spacy.load(pipeline, config=overrides).config


def pipeline_summary(config) -> dict:
    """What the manifest records of the pipeline ``config``: each active component's factory,
    labels, model and decoding block (a resumed job must answer as the first run did)."""
    summary = {}
    disabled = set(config["nlp"].get("disabled") or [])
    for name in (name for name in config["nlp"]["pipeline"] if name not in disabled):
        settings = dict(config["components"][name])
        entry = {"factory": settings.get("factory")}
        for key in ("labels", "questions", "roles"):
            if settings.get(key):
                entry[key] = settings[key]
        model = settings.get("model")
        if isinstance(model, dict) and model.get("name"):
            entry["model"] = model["name"]
        if isinstance(settings.get("decoding"), dict):
            entry["decoding"] = {key: value for key, value in settings["decoding"].items() if not key.startswith("@")}
        summary[name] = entry
    return summary


def annotate(pipeline: str, inputs: str, output: Path, *, text_field: str = "text", shard_size: int = 1000,
             batch_size: int = 32, limit: int = 0, n_process: int = 1, as_json: bool = False, engine: str = "local",
             address: Optional[str] = None, replicas: int = 1, gpus_per_replica: float = 0.0,
             overrides: Optional[dict] = None, progress: bool = True) -> dict:
    """Annotate every input document not yet in ``output``'s done shards; returns the manifest.
    ``overrides``: config settings the pipeline loads with (``{"components.seqgpt_ner.decoding.
    batch_size": 32}``), as spaCy's ``--section.key value`` options give them."""
    import spacy
    from tqdm import tqdm

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    for name, value in (("batch_size", batch_size), ("n_process", n_process), ("replicas", replicas)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    shards, described = plan_shards(input_files(inputs), shard_size, limit)
    overrides = dict(overrides or {})
    nlp = spacy.load(pipeline, config=overrides) if engine == "local" else None  # on Ray each replica loads its own
    output.mkdir(parents=True, exist_ok=True)
    config = nlp.config if nlp is not None else pipeline_config(pipeline, overrides)
    with locked(output):
        manifest = Manifest(output, {"pipeline": str(pipeline), "components": pipeline_summary(config),
                                     "inputs": described, "text_field": text_field, "shard_size": shard_size,
                                     "limit": limit, "documents": sum(shard.count for shard in shards)})
        for reason in manifest.redone:
            msg.warn(f"Redoing {reason}")
        manifest.start_run({"engine": engine, "batch_size": batch_size, "n_process": n_process, "as_json": as_json,
                            **({"address": address, "replicas": replicas, "gpus_per_replica": gpus_per_replica}
                               if engine == "ray" else {})})
        if as_json:  # --jsonl asked for on a resume: the done shards get theirs from their DocBins
            for entry in manifest.entries():
                if ".jsonl" not in entry["files"]:
                    manifest.add(write_json_lines(output, entry))
        todo = [shard for shard in shards if not manifest.done(shard)]
        bar = tqdm(total=manifest.data["documents"], initial=manifest.data["documents"] - sum(s.count for s in todo),
                   unit="doc", desc="annotate", disable=not progress, smoothing=0.1)
        options = {"text_field": text_field, "batch_size": batch_size, "as_json": as_json}
        try:
            if engine == "local":
                for shard in todo:
                    entry = annotate_shard(nlp, shard, output, n_process=n_process, progress=bar.update, **options)
                    manifest.add(entry)
                    n_process = _after_retry(entry, n_process, bar)
            else:
                from .ray_engine import annotate_on_ray

                for entry in annotate_on_ray(pipeline, todo, output, options, address=address, replicas=replicas,
                                             gpus_per_replica=gpus_per_replica, overrides=overrides):
                    manifest.add(entry)
                    _after_retry(entry, 1, bar)
                    bar.update(entry["count"])
        finally:
            bar.close()
    return manifest.data


def _after_retry(entry: dict, n_process: int, bar) -> int:
    """Say that a shard was annotated one document at a time, and why; the worker processes to
    use from now on. Where every document then went through alone, the fault was in the worker
    path (``n_process``), not in the documents: the rest of the run stays in this process."""
    retried = entry.get("retried_alone")
    if retried is None:
        return n_process
    broken_workers = n_process > 1 and retried["failed_alone"] == 0
    bar.clear()
    msg.warn(f"Shard {entry['number']} was annotated one document at a time in this process: {retried['error']}",
             "Every document then went through alone, so the fault is in the worker processes, not in the "
             "documents: the rest of this run uses --n-process 1. Please report it with the error above."
             if broken_workers else f"{retried['failed_alone']} document(s) failed alone and are rejected, with "
             "the reason, in the shard's rejects file.")
    return 1 if broken_workers else n_process
