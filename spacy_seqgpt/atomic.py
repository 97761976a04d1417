"""Writes that matter are atomic: a file or a folder appears whole or not at all (a temporary
sibling, then a rename), so a write cut short by a full disk or an error leaves what was there."""
import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Set


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename, synced to disk; a
    write that fails (a full disk) leaves no temporary file behind."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(draft, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(draft, path)
    except BaseException:
        draft.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A fresh folder beside ``path`` to write into; it becomes ``path`` (replacing what was
    there) only when the block ends without an error, so a write cut short by a full disk or an
    error leaves the old folder, never half of a new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    draft.chmod(0o777 & ~_umask())  # mkdtemp's folder is private; the result gets a new folder's permissions
    try:
        yield draft
        if path.exists():
            old = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
            os.replace(path, old)
            os.replace(draft, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(draft, path)
    finally:
        shutil.rmtree(draft, ignore_errors=True)


# Beside what own_folder writes: what the folder was made from, and the files written.
MADE_FROM = "seqgpt_source.json"


@contextmanager
def own_folder(path: Path, command: str, made_from: dict) -> Iterator[Path]:
    """:func:`atomic_folder` for a command that writes a whole folder (``init-model``,
    ``init-tiny``): ``path`` may be new, empty, or one such a command wrote before, and nothing
    else. :data:`MADE_FROM` records ``made_from`` and the files written; a folder holding a
    file the command did not write (the user's own, a source file) is refused, before and
    after the draft is written, so replacing it loses nothing of the user's."""
    path = Path(path)
    _check_own(path, command, written=None)
    with atomic_folder(path) as draft:
        yield draft
        files = sorted({f.relative_to(draft).as_posix() for f in draft.rglob("*") if f.is_file()} | {MADE_FROM})
        record = json.dumps({**made_from, "files": files}, indent=2, sort_keys=True) + "\n"
        (draft / MADE_FROM).write_text(record, encoding="utf8")
        _check_own(path, command, written=set(files))


def _check_own(path: Path, command: str, written: Optional[Set[str]]) -> None:
    """Refuse ``path`` unless it is new, empty, or holds only files ``command`` wrote there
    (those its :data:`MADE_FROM` lists, and ``written``: those it writes now)."""
    refuse = f"{command}: nothing was written. Choose a new or empty folder."
    here = Path.cwd().resolve()
    if path.resolve() == here or path.resolve() in here.parents:
        raise ValueError(f"{path} is the working folder or holds it; {command} replaces its output folder whole. "
                         f"Name a folder inside it instead, e.g. {path / 'model'}.")
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise ValueError(f"{path} exists and is not a folder (or is a link to one). {refuse}")
    found = {f.relative_to(path).as_posix() for f in path.rglob("*") if not f.is_dir() or f.is_symlink()}
    if not found:
        return
    if MADE_FROM not in found:
        raise ValueError(f"{path} exists and is not an earlier {command} folder (it has no {MADE_FROM}). {refuse}")
    try:
        recorded = set(json.loads((path / MADE_FROM).read_text(encoding="utf8")).get("files", []))
    except (ValueError, AttributeError, TypeError):
        recorded = set()
    if written is None and not recorded:  # an earlier version's folder: checked against the draft
        return
    strays = sorted(found - recorded - (written or set()))
    if strays:
        raise ValueError(f"{path} holds files {command} did not write ({', '.join(strays[:5])}"
                         f"{', ...' if len(strays) > 5 else ''}), which replacing the folder would delete. {refuse}")


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask
