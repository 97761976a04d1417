"""A component's folder as bytes: ``to_bytes``/``from_bytes`` for components whose weights
transformers and PEFT can only read from and write to files."""
import tempfile
from pathlib import Path
from typing import Callable

import srsly


def folder_to_bytes(write: Callable[[Path], None]) -> bytes:
    """The files ``write(folder)`` puts in a fresh folder, packed with msgpack."""
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        files = {str(f.relative_to(tmp)): f.read_bytes() for f in Path(tmp).rglob("*") if f.is_file()}
    return srsly.msgpack_dumps(files)


def folder_from_bytes(data: bytes, read: Callable[[Path], None]) -> None:
    """Unpack ``folder_to_bytes``' output into a temporary folder and ``read`` it."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in srsly.msgpack_loads(data).items():
            (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / name).write_bytes(content)
        read(Path(tmp))


class FolderBytes:
    """``to_bytes``/``from_bytes`` of a pipe made from its ``to_disk``/``from_disk``."""

    def to_bytes(self, *, exclude=tuple()) -> bytes:
        return folder_to_bytes(lambda folder: self.to_disk(folder, exclude=exclude))

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()):
        folder_from_bytes(bytes_data, lambda folder: self.from_disk(folder, exclude=exclude))
        return self
