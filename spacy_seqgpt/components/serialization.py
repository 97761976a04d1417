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
    files = srsly.msgpack_loads(data)
    if not isinstance(files, dict):
        raise ValueError("these bytes are not a component's files (expected a mapping of file names to contents)")
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            target = inside(Path(tmp), name)
            if not isinstance(content, bytes):
                raise ValueError(f"the contents of {name!r} in these bytes are not bytes")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        read(Path(tmp))


def read_cfg(path: Path, owner: str) -> dict:
    """A saved component's ``cfg``; a folder without one was not saved completely."""
    if not (Path(path) / "cfg").is_file():
        raise ValueError(f"{owner}: {path} holds no saved component (no cfg file): the pipeline was not saved "
                         "completely. Save it again.")
    cfg = srsly.read_json(Path(path) / "cfg")
    if not isinstance(cfg, dict):
        raise ValueError(f"{owner}: {Path(path) / 'cfg'} is not a component's settings")
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
