"""The atomic-task record: one prompt and the answer SeqGPT should give.

One JSON object per line::

    {"task": "extract", "text": "...", "labels": ["person", "location"],
     "answer": {"person": ["Tim Cook"], "location": []}, "source": "conll2003", "lang": "en",
     "spans": [[0, 8, "person"]]}

``answer`` is ``{label: [span, ...]}`` for extraction (a key per queried label, ``[]`` for
None) and the list of chosen labels for classification. ``spans`` (character offsets into
``text``) is optional; records converted from annotated corpora carry it so that evaluation
can also score strict span F1.

Also here: the gold examples the corpus readers (``readers``, ``relations``) read records from.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import srsly

from ..prompts import CLASSIFY, EXTRACT, check_labels, format_answer, parse_answer

Record = Dict[str, object]
Span = Tuple[int, int, str]  # (start char, end char, label word)
REQUIRED = ("task", "text", "labels", "answer", "source", "lang")
# Beside a records file: what conversion (``seqgpt convert``) and synthesis left out, and why.
LEFT_OUT_SUFFIXES = (".left-out.jsonl", ".rejected.jsonl")


def make_record(task: str, text: str, labels: List[str], answer, source: str, lang: str, spans=None) -> Record:
    record: Record = {"task": task, "text": text, "labels": list(labels), "answer": answer, "source": source,
                      "lang": lang}
    if spans is not None:
        record["spans"] = [list(span) for span in spans]
    return record


def check_record(record: object, where: str = "record") -> Record:
    """Return ``record`` if it is a well-formed atomic-task record, else raise ValueError naming the problem."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    task, text, labels, answer = record["task"], record["text"], record["labels"], record["answer"]
    if task not in (EXTRACT, CLASSIFY):
        raise ValueError(f"{where}: task must be 'extract' or 'classify', got {task!r}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: text must be a non-empty string")
    if not isinstance(labels, list) or not labels:
        raise ValueError(f"{where}: labels must be a non-empty list")
    try:
        check_labels(task, labels)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    if len(set(labels)) != len(labels):
        raise ValueError(f"{where}: labels repeat: {labels}")
    if task == EXTRACT:
        if not isinstance(answer, dict) or set(answer) != set(labels):
            raise ValueError(f"{where}: an extraction answer needs one key per queried label, got {answer!r}")
        for label, spans in answer.items():
            if not isinstance(spans, list) or any(not isinstance(s, str) or s not in text for s in spans):
                raise ValueError(f"{where}: the answer for {label!r} must be a list of substrings of the text")
    elif not isinstance(answer, list) or any(label not in labels for label in answer):
        raise ValueError(f"{where}: a classification answer must be a list of queried labels, got {answer!r}")
    return record


def answer_problem(task: str, labels: List[str], answer) -> Optional[str]:
    """Why the answer SeqGPT is taught for ``answer`` would not read back as it (None when it
    does): a span with a comma or a run of spaces reads back as two, a span ``None`` as none.
    The answer format cannot hold such spans; a model trained on them would learn to split them."""
    if task != EXTRACT:
        return None
    back = parse_answer(EXTRACT, format_answer(EXTRACT, answer, labels), labels)
    for label in labels:
        if back.get(label, []) != answer.get(label, []):
            return (f"the {label!r} spans {answer.get(label, [])} read back from the answer format as "
                    f"{back.get(label, [])}")
    return None


def read_records(path: Union[str, Path]) -> Iterator[Record]:
    """The records of a JSONL file, or of every ``*.jsonl`` file in a folder (sorted by name) but
    the lists of what conversion and synthesis left out."""
    path = Path(path)
    if path.is_dir():
        files = sorted(file for file in path.glob("*.jsonl") if not file.name.endswith(LEFT_OUT_SUFFIXES))
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"no records at {str(path)!r}: expected a .jsonl file or a folder of them")
    for file in files:
        for number, record in enumerate(srsly.read_jsonl(file), 1):
            yield check_record(record, f"{file}:{number}")


def write_records(path: Union[str, Path], records: Iterable[Record]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = list(records)
    srsly.write_jsonl(path, records)
    return len(records)


def gold_labels(records: Iterable[Record], task: str, lang: str, *, pairs: bool = False) -> List[str]:
    """The labels ``records`` of ``task`` in ``lang`` answer with (extraction: a label with a span;
    classification: a chosen label), most frequent first: what a model trained on them knows.
    ``pairs``: only the relation records (those about a ``pair`` of spans), without their
    no-relation answer; else only the others."""
    from collections import Counter

    counts: Counter = Counter()
    for record in records:
        if record["task"] == task and record["lang"] == lang and ("pair" in record) == pairs:
            answer = record["answer"]
            none = record["pair"].get("no_relation") if pairs else None
            counts.update(label for label in answer if (task == CLASSIFY or answer[label]) and label != none)
    return [label for label, _ in counts.most_common()]


@dataclass
class GoldExample:
    text: str
    spans: List[Span] = field(default_factory=list)  # extraction
    cats: List[str] = field(default_factory=list)  # classification
    meta: Dict[str, object] = field(default_factory=dict)  # more fields for its records (e.g. a relation pair)


@dataclass
class GoldCorpus:
    task: str
    lang: str
    labels: List[str]  # the dataset's whole label set, in first-seen order
    examples: List[GoldExample]


def json_line(line: str, where: str):
    """One JSON line of a corpus file; a line that is not JSON, or nested too deeply to read, is a
    ValueError naming ``where`` (file:line)."""
    try:
        return json.loads(line)
    except ValueError as err:
        raise ValueError(f"{where}: not JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to read") from None
