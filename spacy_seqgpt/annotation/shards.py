"""Annotating one shard and keeping the job's manifest: what makes a run resumable.

A shard is done when the manifest lists it. Its files are written first, each atomically
(a temporary sibling, then a rename): ``shard-NNNNNN.spacy`` (the annotated Docs, input order,
with user data), ``shard-NNNNNN.rejects.jsonl`` (the documents that could not be annotated,
with the reason) and, when asked, ``shard-NNNNNN.jsonl`` (the annotations as JSON). A run
killed at any moment leaves shards that are listed and whole, or not listed and redone from
scratch by the next run: every input document ends up exactly once in a listed shard's Docs
or rejects.
"""
import hashlib
import json
import os
import re
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ..atomic import write_atomic
from .inputs import Item, Shard, read_shard

MANIFEST = "manifest.json"
INPUT_ATTR = "seqgpt_input"  # doc.user_data key: where the document came from


def shard_name(number: int, suffix: str) -> str:
    return f"shard-{number:06d}{suffix}"


class ShardFailed(RuntimeError):
    """A shard could not be annotated as a whole (every document failed alike, or the machine ran
    out of memory or disk): it is not marked done, so a rerun retries it."""


def digest(data: bytes) -> str:
    """What a shard's manifest entry records of each of its files."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _jsonl(rows: Iterable[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf8")


def annotate_shard(nlp, shard: Shard, output: Path, *, text_field: str, batch_size: int, n_process: int = 1,
                   as_json: bool = False, progress: Optional[Callable[[int], None]] = None) -> dict:
    """Annotate ``shard`` with ``nlp`` and write its files; returns its manifest entry (with a hash
    of each file). A document whose annotation raises is rejected with the error; the others are
    kept. An error of the whole shard raises :class:`ShardFailed` and writes nothing."""
    started = time.time()
    items = read_shard(shard, text_field, nlp.vocab)
    reported = []

    def tick() -> None:
        reported.append(1)
        if progress is not None:
            progress(1)

    try:
        docs, retried = _annotated(nlp, [item for item in items if item.reason is None], batch_size, n_process,
                                   tick)
    except ShardFailed as err:
        raise ShardFailed(f"shard {shard.number} failed as a whole: {err}. It is not marked done: the done shards "
                          "are kept, and a rerun of the same command retries from there.") from None
    if progress is not None:
        progress(len(items) - len(reported))  # the rejected, and those retried one by one
    kept, rejects = [], []
    for item in items:
        doc = docs.get(item.index)
        if doc is None:
            rejects.append({"index": item.index, "source": item.source, "reason": item.reason})
            continue
        doc.user_data[INPUT_ATTR] = {"index": item.index, "source": item.source, **({"fields": item.fields}
                                                                                       if item.fields else {})}
        kept.append(doc)
    from spacy.tokens import DocBin

    files = {".rejects.jsonl": _jsonl(rejects), ".spacy": DocBin(docs=kept, store_user_data=True).to_bytes()}
    if as_json:
        files[".jsonl"] = _jsonl(doc_json(doc) for doc in kept)
    for suffix, data in files.items():
        write_atomic(output / shard_name(shard.number, suffix), data)
    return {**shard.to_dict(), "docs": len(kept), "rejected": len(rejects), "seconds": round(time.time() - started, 3),
            "files": {suffix: digest(data) for suffix, data in files.items()},
            **({"retried_alone": retried} if retried else {})}


def write_json_lines(output: Path, entry: dict) -> dict:
    """A done shard's ``.jsonl`` written from its DocBin (``--jsonl`` asked for on a resume); its
    manifest entry with the file recorded."""
    import spacy
    from spacy.tokens import DocBin

    docs = DocBin(store_user_data=True).from_disk(output / shard_name(entry["number"], ".spacy"))
    data = _jsonl(doc_json(doc) for doc in docs.get_docs(spacy.blank("xx").vocab))
    write_atomic(output / shard_name(entry["number"], ".jsonl"), data)
    return {**entry, "files": {**entry["files"], ".jsonl": digest(data)}}


def _annotated(nlp, items: List[Item], batch_size: int, n_process: int, tick: Callable[[], None]
               ) -> Tuple[Dict[int, object], Optional[dict]]:
    """``{index: annotated Doc}``, and why the shard was annotated one document at a time and how
    many documents failed alone (None when ``nlp.pipe`` took it whole): on an error, each
    document alone, in this process, the failing ones marked. The caller says so
    (``retried_alone`` in the shard's entry): a broken worker path must not pass for documents
    that failed.

    An error of the machine rather than of a document (memory, disk, a file that cannot be
    read: ``MemoryError``, ``OSError``, CUDA out of memory), or one that every document of
    several meets alike, fails the shard (:class:`ShardFailed`) instead of rejecting them all."""
    try:
        docs = {}
        for item, doc in zip(items, nlp.pipe((item.content for item in items), batch_size=batch_size,
                                             n_process=n_process)):
            docs[item.index] = doc
            tick()
        return docs, None
    except Exception as err:  # one bad document must not stop the run: find it
        _fail_if_machine_error(err)
        error = f"nlp.pipe(n_process={n_process}) failed: {type(err).__name__}: {err}"
    docs, errors = {}, []
    for item in items:
        try:
            docs[item.index] = nlp(item.content)
        except Exception as err:
            _fail_if_machine_error(err)
            item.reason = f"error: {type(err).__name__}: {err}"
            errors.append(item.reason)
    if len(items) > 1 and len(errors) == len(items) and len(set(errors)) == 1:
        raise ShardFailed(f"every one of its {len(items)} documents failed alike ({errors[0]})")
    return docs, {"error": error, "failed_alone": len(errors)}


def _fail_if_machine_error(err: Exception) -> None:
    if isinstance(err, (MemoryError, OSError)) or "out of memory" in str(err).lower():
        raise ShardFailed(f"{type(err).__name__}: {err}") from err


def doc_json(doc) -> dict:
    """A Doc's annotations for consumers without spaCy: entities, span groups, categories and
    relations with character offsets, and the input's own fields."""
    from ..text.relations import REL_ATTR, span_keyed

    spans = lambda group: [{"start": s.start_char, "end": s.end_char, "label": s.label_, "text": s.text}  # noqa: E731
                           for s in group]
    row = {**doc.user_data.get(INPUT_ATTR, {}), "text": doc.text, "ents": spans(doc.ents)}
    if doc.spans:
        row["spans"] = {key: spans(group) for key, group in doc.spans.items()}
    if doc.cats:
        row["cats"] = doc.cats
    relations = doc._.get(REL_ATTR) if doc.has_extension(REL_ATTR) else None
    if relations:
        chars = lambda start, end: [doc[start:end].start_char, doc[start:end].end_char]  # noqa: E731
        row["rel"] = [{"head": chars(*key[:2]), "tail": chars(*key[2:]), "scores": scores}
                      for key, scores in span_keyed(doc, relations).items()]
    return row


ENTRY_KEYS = {"number": int, "first": int, "count": int, "pieces": list, "docs": int, "rejected": int, "files": dict}


class Manifest:
    """``manifest.json`` of an output folder: the job (inputs, pipeline, settings) and its done shards.

    A shard listed as done is kept only if its entry is whole and its files are the ones it
    recorded (a truncated or edited ``shard-*.spacy`` is redone, with a warning)."""

    def __init__(self, output: Path, job: dict):
        self.path = output / MANIFEST
        self.data = {**job, "shards": {}}
        self.redone: List[str] = []  # why shards listed as done are redone
        if self.path.exists():
            try:
                saved = json.loads(self.path.read_text(encoding="utf8"))
            except (ValueError, UnicodeDecodeError) as err:
                raise ValueError(f"{self.path} cannot be read ({err}); move it away to start this folder "
                                 "over") from None
            if not isinstance(saved, dict) or not isinstance(saved.get("shards", {}), dict):
                raise ValueError(f"{self.path} is not an annotation manifest; move it away to start this folder over")
            differ = [key for key in job if saved.get(key) != job[key]]
            if differ:
                raise ValueError(f"{output} holds another job's shards ({', '.join(differ)} differ): resume with the "
                                 "same pipeline, inputs and settings, or write to another folder")
            for key, entry in saved.get("shards", {}).items():
                problem = self._problem(output, key, entry)
                if problem is None:
                    self.data["shards"][key] = entry
                else:
                    self.redone.append(f"shard {key}: {problem}")
            self.data["runs"] = saved.get("runs", []) if isinstance(saved.get("runs"), list) else []

    @staticmethod
    def _problem(output: Path, key: str, entry: object) -> Optional[str]:
        """Why a listed shard cannot count as done (None when it can)."""
        if not isinstance(entry, dict) or any(not isinstance(entry.get(k), t) for k, t in ENTRY_KEYS.items()) \
                or str(entry["number"]) != key:
            return "its manifest entry is incomplete"
        for suffix, recorded in entry["files"].items():
            path = output / shard_name(entry["number"], suffix)
            if not path.is_file() or digest(path.read_bytes()) != recorded:
                return f"{path.name} is missing or not the file written"
        return None

    def start_run(self, settings: dict) -> None:
        """Record a run's settings that do not change the output (engine, batch size, workers)."""
        self.data.setdefault("runs", []).append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **settings})
        self.save()

    def done(self, shard: Shard) -> bool:
        return str(shard.number) in self.data["shards"]

    def entries(self) -> List[dict]:
        return list(self.data["shards"].values())

    def add(self, entry: dict) -> None:
        self.data["shards"][str(entry["number"])] = entry
        self.save()

    def save(self) -> None:
        shards = self.data["shards"].values()
        self.data["counts"] = {"shards": len(self.data["shards"]), "docs": sum(e["docs"] for e in shards),
                               "rejected": sum(e["rejected"] for e in shards)}
        write_atomic(self.path, json.dumps(self.data, indent=2, ensure_ascii=False).encode("utf8"))


@contextmanager
def locked(output: Path) -> Iterator[None]:
    """Hold ``output``'s lock for a run: a second run into the same folder is refused at once
    instead of mixing its shards into this one's manifest.

    An output folder may be shared (a Ray cluster's file system): the lock file is opened
    without following links (one planted there is refused, its target untouched), and only a
    lock file of this package ("pid N", or one this run creates) is written to."""
    import fcntl
    import stat

    path = output / ".lock"
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as err:
        raise ValueError(f"{path} cannot be opened as a lock file ({err.strerror}): it is a link or not a "
                         "file. Remove it, or write to another folder.") from None
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise ValueError(f"{path} is not a file; remove it, or write to another folder")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(handle) or "another process"
            raise ValueError(f"{output} is being written by another annotate run ({holder}); wait for it to end, "
                             "or write to another folder") from None
        found = os.fstat(handle)  # a hard link shares its file with another name: not ours to write
        ours = found.st_nlink == 1 and (found.st_size == 0 or _lock_holder(handle) is not None)
        if ours:
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"pid {os.getpid()}".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)


def _lock_holder(handle: int) -> Optional[str]:
    """``pid N`` when the lock file is one of ours, else None."""
    text = os.pread(handle, 64, 0).decode("ascii", "replace").strip()
    return text if re.fullmatch(r"pid \d+", text) else None
