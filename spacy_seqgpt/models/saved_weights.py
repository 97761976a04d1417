"""Weights a pipeline saved, read without trusting them: nothing outside the folder is read,
nothing is unpickled, no code that came with them runs, and every file is the one recorded."""
import hashlib
import json
from pathlib import Path
from typing import List, Optional, Sequence

from ..validation import inside
from .errors import ModelLoadError
from .spec import HFModel


# Weights that would be read with pickle (torch.load) rather than as plain tensors.
PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def saved_files(path: Path, owner: str = "component", skip: Sequence[str] = ()) -> List[Path]:
    """The files of a model folder a component saved, after checking that reading the folder
    reads nothing outside it and runs nothing: no links, no pickled weights, and every shard an
    index names inside the folder. A ValueError names the file and the fix otherwise."""
    path = Path(path)
    fix = "Save the pipeline again from a model you trust."
    if path.is_symlink():
        raise ValueError(f"{owner}: {path} is a link; a saved model folder must hold its files itself. {fix}")
    files = []
    for item in sorted(path.rglob("*")):
        if item.relative_to(path).parts[0] in skip:
            continue
        if item.is_symlink():
            raise ValueError(f"{owner}: {item} is a link, which may lead outside {path}; a saved model folder "
                             f"must hold its files itself. {fix}")
        if item.is_file():
            files.append(item)
    for file in files:
        if file.suffix in PICKLED_WEIGHTS:
            raise ValueError(f"{owner}: {file} holds weights that only pickle reads, which can run code; saved "
                             f"components hold safetensors only. {fix}")
        if file.name.endswith(".index.json"):
            _check_index(path, file, owner, fix)
    if not any(file.suffix == ".safetensors" for file in files):
        raise ValueError(f"{owner}: {path} holds no weights (*.safetensors): the pipeline was not saved "
                         "completely. Save it again.")
    return files


def _check_index(root: Path, index: Path, owner: str, fix: str) -> None:
    """The shards of a sharded checkpoint's index all lie inside ``root``."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf8")).get("weight_map", {})
        if not isinstance(weight_map, dict):
            raise ValueError(f"its weight_map is a {type(weight_map).__name__}, not a mapping")
        for shard in weight_map.values():
            inside(index.parent, shard)
    except (ValueError, AttributeError) as err:
        raise ValueError(f"{owner}: {index} names a weights file outside {root} or cannot be read ({err}). "
                         f"{fix}") from None


def weights_hash(path: Path, owner: str = "component", skip: Sequence[str] = ()) -> str:
    """A hash of every file of the saved model folder ``path`` (names and contents): equal files,
    equal hash (writing is deterministic). The folder is checked first (:func:`saved_files`);
    ``skip``: top-level names left out (a component's own settings file)."""
    return files_hash(path, saved_files(path, owner, skip))


def model_folder_hash(folder: Path) -> str:
    """A hash of a model folder a user names (not a saved pipeline's, which :func:`weights_hash`
    checks): every file it holds or links to, as the Hugging Face cache's snapshots are made
    of links; hidden files and folders (``.cache``) left out."""
    folder = Path(folder)
    files = [f for f in folder.rglob("*") if f.is_file()
             and not any(part.startswith(".") for part in f.relative_to(folder).parts)]
    return files_hash(folder, sorted(files))


def files_hash(root: Path, files: Sequence[Path]) -> str:
    """A hash of ``files`` (their names below ``root`` and their contents)."""
    digest = hashlib.blake2b(digest_size=16)
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 24), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def check_saved_source(source: Path, weights_id: Optional[str], owner: str = "component",
                       skip: Sequence[str] = ()) -> None:
    """Refuse weights a pipeline saved (a folder, or bytes) unless they load without trusting them:
    nothing outside the folder is read, nothing is unpickled, and every file is the one the
    pipeline recorded (``weights_id``). The components refuse ``trust_remote_code`` when they are
    read (:func:`refuse_remote_code`), before any weights are."""
    try:
        found = weights_hash(source, owner, skip)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    if found != weights_id:
        raise ModelLoadError(f"{owner}: the files in {source} are not the ones the pipeline saved (its weights_id "
                             f"{weights_id}): they were changed or damaged since, or saved by an earlier "
                             "development version. Save the pipeline again.")


def refuse_remote_code(spec: HFModel, owner: str, where: Path) -> None:
    """A component read from a saved pipeline (a folder or bytes) runs no code that came with it:
    ``trust_remote_code`` in its config is refused, whatever model it names."""
    if spec.trust_remote_code:
        raise ModelLoadError(
            f"{owner}: the saved pipeline's config sets trust_remote_code = true (read at {where}). Code that "
            f"comes with a saved pipeline is never run: set trust_remote_code = false under "
            f"[components.{owner}.model] in its config.cfg. Only a model you name yourself, in a pipeline you "
            "build, may run its own code.")
