"""Component folders: written whole or not at all, and read back from bytes without writing
anywhere else.

``to_bytes``/``from_bytes`` of components whose weights transformers and PEFT can only read
from and write to files pack a folder's files with msgpack. Bytes may come from anywhere, so
every name in them must be a relative path that stays inside the folder they unpack into.
"""
import tempfile
from pathlib import Path
from typing import Callable

import srsly

from ..validation import inside


def folder_to_bytes(write: Callable[[Path], None]) -> bytes:
    """The files ``write(folder)`` puts in a fresh folder, packed with msgpack."""
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        files = {f.relative_to(tmp).as_posix(): f.read_bytes() for f in Path(tmp).rglob("*") if f.is_file()}
    return srsly.msgpack_dumps(files)


def folder_from_bytes(data: bytes, read: Callable[[Path], None]) -> None:
    """Unpack ``folder_to_bytes``' output into a temporary folder and ``read`` it."""
    not_files = "these bytes are not a component's files (expected a msgpack mapping of file names to contents"
    try:
        files = srsly.msgpack_loads(data)
    except Exception as err:  # msgpack's errors share no base class beyond Exception
        raise ValueError(f"{not_files}; msgpack: {type(err).__name__} {err})") from None
    if not isinstance(files, dict):
        raise ValueError(f"{not_files})")
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            target = inside(Path(tmp), name)
            if not isinstance(content, bytes):
                raise ValueError(f"the contents of {name!r} in these bytes are not bytes")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                raise ValueError(f"{name!r} in these bytes is both a file and a folder: {not_files})") from None
        read(Path(tmp))


def read_cfg(path: Path, owner: str) -> dict:
    """A saved component's ``cfg``, after checking that its folder holds its files itself (no
    links, which may lead anywhere); a folder without one was not saved completely."""
    path = Path(path)
    fix = "Save the pipeline again, or copy it with its files (cp -L) instead of links."
    links = [path] if path.is_symlink() else [item for item in path.rglob("*") if item.is_symlink()]
    if links:
        raise ValueError(f"{owner}: {links[0]} is a link, which may lead outside the saved pipeline; a saved "
                         f"component must hold its files itself. {fix}")
    if not (path / "cfg").is_file():
        raise ValueError(f"{owner}: {path} holds no saved component (no cfg file): the pipeline was not saved "
                         "completely. Save it again.")
    try:
        cfg = srsly.json_loads((path / "cfg").read_bytes().decode("utf8"))
    except ValueError as err:  # not UTF-8, or not JSON
        raise ValueError(f"{owner}: {path / 'cfg'} cannot be read ({err}). Save the pipeline again.") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{owner}: {path / 'cfg'} is not a component's settings")
    weights_id = cfg.get("weights_id")
    if weights_id is not None and not isinstance(weights_id, str):
        raise ValueError(f"{owner}: {path / 'cfg'} records a weights_id that is not a hash ({weights_id!r}). "
                         "Save the pipeline again.")
    return cfg


# Attributes spaCy's compiled Pipe classes keep outside the instance's __dict__.
_COMPILED_ATTRIBUTES = ("name", "vocab", "cfg")


def restore(cls, state: dict):
    """Unpickle a pipe: spaCy's ``Pipe`` is a compiled class that pickle cannot make by itself."""
    pipe = cls.__new__(cls)
    pipe.__setstate__(state)
    return pipe


class FolderBytes:
    """``to_bytes``/``from_bytes`` of a pipe made from its ``to_disk``/``from_disk``, and pickling
    through the pipe's ``__getstate__``/``__setstate__``."""

    def __reduce__(self):
        return restore, (type(self), self.__getstate__())

    def attributes(self, exclude=()) -> dict:
        """The pipe's attributes for a pickled copy, but ``exclude``."""
        state = {name: getattr(self, name) for name in _COMPILED_ATTRIBUTES if hasattr(self, name)}
        state.update(self.__dict__)
        return {name: value for name, value in state.items() if name not in exclude}

    def set_attributes(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def to_bytes(self, *, exclude=tuple()) -> bytes:
        return folder_to_bytes(lambda folder: self.to_disk(folder, exclude=exclude))

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()):
        folder_from_bytes(bytes_data, lambda folder: self.from_disk(folder, exclude=exclude))
        return self
