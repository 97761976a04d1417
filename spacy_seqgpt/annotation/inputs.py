"""The documents of ``seqgpt annotate``'s inputs, in order, cut into shards.

Inputs: ``.jsonl`` (a text field), ``.txt`` (one document per line) and ``.spacy`` DocBins, or a
folder or glob of them (sorted by name). Every line of a text input is a document, so each
input document has one global index; one that cannot be annotated (blank, no text field, bad
JSON) is still an item, carrying the reason it is rejected.
"""
import glob
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from ..validation import lone_surrogate

KINDS = {".jsonl": "jsonl", ".txt": "txt", ".spacy": "spacy"}


@dataclass(frozen=True)
class Piece:
    """Consecutive documents of one input file: from byte ``offset`` (text inputs) or Doc number
    ``offset`` (DocBins); ``line`` numbers the first (1-based line, or Doc number)."""

    path: str
    kind: str
    offset: int
    line: int
    count: int


@dataclass(frozen=True)
class Shard:
    """Documents ``first`` .. ``first + count - 1`` of the inputs, from ``pieces``."""

    number: int
    first: int
    count: int
    pieces: Tuple[Piece, ...]

    def to_dict(self) -> dict:
        return {"number": self.number, "first": self.first, "count": self.count,
                "pieces": [asdict(piece) for piece in self.pieces]}

    @classmethod
    def from_dict(cls, data: dict) -> "Shard":
        return cls(data["number"], data["first"], data["count"], tuple(Piece(**p) for p in data["pieces"]))


@dataclass
class Item:
    """One input document: its text (or Doc), where it came from, and why it is rejected, if it is."""

    index: int
    source: str  # "file:line"
    content: object = None  # str or Doc
    fields: Optional[dict] = None  # the JSON record's other fields
    reason: Optional[str] = None


def input_files(spec: str) -> List[Path]:
    """The input files ``spec`` names: a file, a folder (its inputs, sorted) or a glob."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in KINDS and p.is_file())
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(spec) if Path(p).suffix in KINDS and Path(p).is_file())
    if not files:
        raise ValueError(f"no inputs at {spec!r}: expected a .jsonl, .txt or .spacy file, or a folder or glob of them")
    unknown = [str(p) for p in files if p.suffix not in KINDS]
    if unknown:
        raise ValueError(f"cannot read {unknown[0]}: inputs are .jsonl (a text field), .txt (a document per line) "
                         "or .spacy (a DocBin)")
    return files


def _line_offsets(path: Path, digest) -> Iterator[int]:
    """The byte offset of each line of ``path`` (a last line without a line break counts); every
    byte read goes into ``digest``."""
    offset = 0
    with path.open("rb") as stream:
        for line in stream:
            digest.update(line)
            yield offset
            offset += len(line)


def _docbin_size(path: Path, digest) -> int:
    from spacy.tokens import DocBin

    data = path.read_bytes()
    digest.update(data)
    return len(DocBin().from_bytes(data))


def plan_shards(files: List[Path], shard_size: int, limit: int = 0) -> Tuple[List[Shard], List[dict]]:
    """The shards of ``shard_size`` documents (the last may be shorter) of the first ``limit``
    documents (0: all), and a description of each input (path, kind, documents, bytes, and a
    hash of the contents the job reads: a text input up to its last document, a DocBin whole)."""
    if shard_size < 1:
        raise ValueError(f"the shard size must be at least 1, got {shard_size}")
    shards: List[Shard] = []
    pieces: List[Piece] = []
    described = []
    index = 0

    def close(count_in_shard: int) -> None:
        shards.append(Shard(len(shards), index - count_in_shard, count_in_shard, tuple(pieces)))
        pieces.clear()

    for path in files:
        kind = KINDS[path.suffix]
        digest = hashlib.blake2b(digest_size=16)  # what the job reads: an input edited in place is another job
        positions = range(_docbin_size(path, digest)) if kind == "spacy" else _line_offsets(path, digest)
        items = 0
        in_shard = sum(p.count for p in pieces)
        for number, position in enumerate(positions, 1):
            if limit and index >= limit:
                break
            if not pieces or pieces[-1].path != str(path):
                pieces.append(Piece(str(path), kind, position, number, 0))
            last = pieces[-1]
            pieces[-1] = Piece(last.path, last.kind, last.offset, last.line, last.count + 1)
            index += 1
            items += 1
            in_shard += 1
            if in_shard == shard_size:
                close(in_shard)
                in_shard = 0
        described.append({"path": str(path), "kind": kind, "documents": items, "bytes": path.stat().st_size,
                          "blake2b": digest.hexdigest()})
    if pieces:
        close(sum(p.count for p in pieces))
    return shards, described


def read_shard(shard: Shard, text_field: str, vocab) -> List[Item]:
    """The items of ``shard``, in input order."""
    items: List[Item] = []
    for piece in shard.pieces:
        first = shard.first + len(items)
        if piece.kind == "spacy":
            from spacy.tokens import DocBin

            docs = list(DocBin(store_user_data=True).from_disk(piece.path).get_docs(vocab))
            for k in range(piece.count):
                items.append(_doc_item(first + k, f"{piece.path}:{piece.line + k}", docs[piece.offset + k]))
            continue
        with open(piece.path, "rb") as stream:
            stream.seek(piece.offset)
            for k in range(piece.count):
                raw = stream.readline()
                items.append(_text_item(first + k, f"{piece.path}:{piece.line + k}", raw, piece.kind, text_field))
    return items


def _doc_item(index: int, source: str, doc) -> Item:
    if not doc.text.strip():
        return Item(index, source, reason="empty text")
    return Item(index, source, doc)


def _text_item(index: int, source: str, raw: bytes, kind: str, text_field: str) -> Item:
    try:
        line = raw.decode("utf8").rstrip("\r\n").lstrip("\ufeff")  # a byte-order mark is no text
    except UnicodeDecodeError as err:
        return Item(index, source, reason=f"not UTF-8 ({err})")
    if kind == "txt":
        return Item(index, source, line) if line.strip() else Item(index, source, reason="empty text")
    if not line.strip():
        return Item(index, source, reason="blank line")
    try:
        record = json.loads(line)
    except ValueError as err:
        return Item(index, source, reason=f"not JSON ({err})")
    except RecursionError:
        return Item(index, source, reason="JSON nested too deeply to read")
    surrogate = lone_surrogate(record)
    if surrogate is not None:
        return Item(index, source, reason=f"holds a lone surrogate ({surrogate}), which is not Unicode text and "
                                          "cannot be written out; fix the producer's encoding")
    if not isinstance(record, dict) or text_field not in record:
        return Item(index, source, reason=f"no {text_field!r} field (set --text-field)")
    text = record.pop(text_field)
    if not isinstance(text, str):
        return Item(index, source, reason=f"the {text_field!r} field is a {type(text).__name__}, not text")
    if not text.strip():
        return Item(index, source, reason="empty text")
    return Item(index, source, text, fields=record)
