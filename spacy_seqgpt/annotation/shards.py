"""Annotating one shard and keeping the job's manifest: what makes a run resumable.

A shard is done when the manifest lists it. Its files are written first, each atomically
(a temporary sibling, then a rename): ``shard-NNNNNN.spacy`` (the annotated Docs, input order,
with user data), ``shard-NNNNNN.rejects.jsonl`` (the documents that could not be annotated,
with the reason) and, when asked, ``shard-NNNNNN.jsonl`` (the annotations as JSON). A run
killed at any moment leaves shards that are listed and whole, or not listed and redone from
scratch by the next run: every input document ends up exactly once in a listed shard's Docs
or rejects.
"""
import json
import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

from .inputs import Item, Shard, read_shard

MANIFEST = "manifest.json"
INPUT_ATTR = "seqgpt_input"  # doc.user_data key: where the document came from


def shard_name(number: int, suffix: str) -> str:
    return f"shard-{number:06d}{suffix}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename, synced to disk."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(draft, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(draft, path)


def _jsonl(rows: Iterable[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf8")


def annotate_shard(nlp, shard: Shard, output: Path, *, text_field: str, batch_size: int, n_process: int = 1,
                   as_json: bool = False, progress: Optional[Callable[[int], None]] = None) -> dict:
    """Annotate ``shard`` with ``nlp`` and write its files; returns its manifest entry. A
    document whose annotation raises is rejected with the error; the others are kept."""
    started = time.time()
    items = read_shard(shard, text_field, nlp.vocab)
    reported = []

    def tick() -> None:
        reported.append(1)
        if progress is not None:
            progress(1)

    docs = _annotated(nlp, [item for item in items if item.reason is None], batch_size, n_process, tick)
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

    write_atomic(output / shard_name(shard.number, ".rejects.jsonl"), _jsonl(rejects))
    if as_json:
        write_atomic(output / shard_name(shard.number, ".jsonl"), _jsonl(doc_json(doc) for doc in kept))
    write_atomic(output / shard_name(shard.number, ".spacy"), DocBin(docs=kept, store_user_data=True).to_bytes())
    return {**shard.to_dict(), "docs": len(kept), "rejected": len(rejects), "seconds": round(time.time() - started, 3)}


def _annotated(nlp, items: List[Item], batch_size: int, n_process: int, tick: Callable[[], None]
               ) -> Dict[int, object]:
    """``{index: annotated Doc}``; on an error, each document alone, the failing ones marked."""
    try:
        docs = {}
        for item, doc in zip(items, nlp.pipe((item.content for item in items), batch_size=batch_size,
                                             n_process=n_process)):
            docs[item.index] = doc
            tick()
        return docs
    except Exception:  # one bad document must not stop the run: find it
        docs = {}
        for item in items:
            try:
                docs[item.index] = nlp(item.content)
            except Exception as err:
                item.reason = f"error: {type(err).__name__}: {err}"
        return docs


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


class Manifest:
    """``manifest.json`` of an output folder: the job (inputs, pipeline, settings) and its done shards."""

    def __init__(self, output: Path, job: dict):
        self.path = output / MANIFEST
        self.data = {**job, "shards": {}}
        if self.path.exists():
            saved = json.loads(self.path.read_text(encoding="utf8"))
            differ = [key for key in job if saved.get(key) != job[key]]
            if differ:
                raise ValueError(f"{output} holds another job's shards ({', '.join(differ)} differ): resume with the "
                                 "same pipeline, inputs and settings, or write to another folder")
            self.data["shards"] = {key: entry for key, entry in saved.get("shards", {}).items()
                                   if (output / shard_name(int(key), ".spacy")).is_file()}
            self.data["runs"] = saved.get("runs", [])

    def start_run(self, settings: dict) -> None:
        """Record a run's settings that do not change the output (engine, batch size, workers)."""
        self.data.setdefault("runs", []).append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **settings})
        self.save()

    def done(self, shard: Shard) -> bool:
        return str(shard.number) in self.data["shards"]

    def add(self, entry: dict) -> None:
        self.data["shards"][str(entry["number"])] = entry
        self.save()

    def save(self) -> None:
        shards = self.data["shards"].values()
        self.data["counts"] = {"shards": len(self.data["shards"]), "docs": sum(e["docs"] for e in shards),
                               "rejected": sum(e["rejected"] for e in shards)}
        write_atomic(self.path, json.dumps(self.data, indent=2, ensure_ascii=False).encode("utf8"))
