"""Writes that matter are atomic: a file or a folder appears whole or not at all (a temporary
sibling, then a rename), so a write cut short by a full disk or an error leaves what was there."""
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask
