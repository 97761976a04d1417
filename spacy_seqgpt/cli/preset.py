"""A training preset's own settings beyond training: the model it starts from (``[paths]
base_source``, written by ``seqgpt init-base``) and the data it converts (``[corpus]``, read
by ``seqgpt convert-all CONFIG``). ``project.yml`` passes ``configs/training/seqgpt_<preset>.cfg``
to both, so one file holds a preset's whole scale."""
from pathlib import Path

import typer
from wasabi import msg

from ..validation import check_count
from . import command

CORPUS_COUNTS = ("quota", "train_limit", "eval_limit", "max_negatives")  # whole numbers, 0 or more
FETCH_HINT = ("`python -m spacy project assets` (in the project's folder) fetches the full datasets into assets/full, "
              "from the sources project.yml pins, checksummed; the presets read that folder first.")
# init-base's sources besides init-model's known models: the tiny random-weight models of init-tiny
TINY_SOURCES = {"tiny-bloom": "bloom", "tiny-llama": "llama"}


def config_section(path: Path, name: str) -> dict:
    """Section ``name`` of a training config, interpolated ({} when it has none)."""
    from thinc.api import Config

    config = Config().from_disk(path, interpolate=True)
    return dict(config.get(name, {}))


def corpus_settings(path: Path) -> dict:
    """``[corpus]`` of a training config, its data folder resolved: the first of ``data_dirs``
    (relative to the working directory, as every path of a config) that exists."""
    corpus = config_section(path, "corpus")
    if "data_dirs" not in corpus:
        raise ValueError(f"{path} has no [corpus] data_dirs: name the dataset folders to convert")
    unknown = set(corpus) - {"data_dirs", *CORPUS_COUNTS, "skip_sources", "label_variants"}
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) in [corpus]: {', '.join(sorted(unknown))}")
    for key in ("data_dirs", "skip_sources"):  # a string would be read letter by letter
        value = corpus.get(key, [])
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) and item for item in value):
            raise ValueError(f"{path}: [corpus] {key} must be a list of names, e.g. {key} = [\"{value}\"], got "
                             f"{value!r}")
    for key in CORPUS_COUNTS:
        if key in corpus:
            check_count(corpus[key], f"[corpus] {key}", str(path))
    share = corpus.get("label_variants", 0.0)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise ValueError(f"{path}: [corpus] label_variants is the share of extraction training records that ask with "
                         f"other words for their labels, from 0 to 1; got {share!r}")
    folders = [Path(folder) for folder in corpus.pop("data_dirs")]
    found = next((folder for folder in folders if folder.is_dir()), None)
    if found is None:
        raise ValueError(f"{path}: none of the [corpus] data_dirs exists: {', '.join(map(str, folders))}. {FETCH_HINT}")
    return {"data_dir": found, **corpus}


@command("init-base")
def init_base_cli(
    config_path: Path = typer.Argument(..., help="Training config whose [paths] base_source names what to write to base_model",
                                       exists=True, dir_okay=False),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed of a tiny model's random weights"),
):
    """Write the model a training preset starts from: [paths] base_source (smollm2-135m,
    tiny-bloom or tiny-llama) into [paths] base_model. Without base_source there is nothing to
    write: base_model is a hub id or folder, loaded as it is."""
    paths = config_section(config_path, "paths")
    if not paths.get("base_model"):
        msg.fail(f"{config_path} names no [paths] base_model: the folder to write the starting model to", exits=1)
    source, out = paths.get("base_source"), Path(str(paths["base_model"]))
    if not source:
        msg.info(f"{config_path} starts from {out} as it is: nothing to write")
        return
    if source in TINY_SOURCES:
        from ..models.tiny import write_tiny_model

        write_tiny_model(out, arch=TINY_SOURCES[source], seed=seed)
    else:
        from ..models.pretrained import KNOWN_MODELS, init_model

        if source not in KNOWN_MODELS:
            msg.fail(f"{config_path}: unknown [paths] base_source {source!r}",
                     f"Known: {', '.join([*TINY_SOURCES, *KNOWN_MODELS])}.", exits=1)
        msg.info(f"Converting {source} (about half a minute on a small CPU)")
        init_model(source, out)
    msg.good(f"Wrote {source} to {out}")
