"""Pre-training data synthesis: an instruction-following LLM labels raw sentences.

As in the SeqGPT paper, a strong LLM invents fine-grained labels and their answers for raw
text, in three kinds of request: entity extraction (NER), entity typing and classification;
it also names wrong labels, which become the records' negatives. Every answer is checked
before it becomes a record: spans must occur in the sentence and read back from the answer
format as themselves (no comma inside, not ``None``), labels must be non-empty, unique and
writable in a prompt; what fails is dropped.

Backends (``data.backends``): any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM,
llama.cpp's server) or a local Hugging Face model. Results are appended as they come, one line per record with
its ``id`` (``<hash of the sentence>:<kind>``); requests whose reply holds nothing valid (or is
not even readable) are noted with the reason in a ``.rejected.jsonl`` file beside the output.
A rerun skips every id found in either file, and a line cut short by a kill is removed first,
so nothing is lost or written twice. The endpoint is called without following redirects, so
the API key goes nowhere else, and a server's ``Retry-After`` is obeyed up to ``max_wait``.
"""
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..prompts import CLASSIFY, EXTRACT, check_label
from ..validation import lone_surrogate
from .backends import MalformedReply, RetryableError, SynthesisError
from .records import LEFT_OUT_SUFFIXES, answer_problem, make_record

KINDS = ("ner", "typing", "classify")
MAX_WAIT = 60.0  # seconds: the longest Retry-After obeyed before asking again
SYSTEM = "You annotate text for training an information extraction model. Answer with JSON only."
INSTRUCTIONS = {
    "ner": (
        'List the entities in the sentence with fine-grained types (e.g. "football club", not "organization"). '
        "Also give a few plausible types that do NOT occur in the sentence. "
        'Answer as {"entities": [{"text": "<exact span>", "type": "<type>"}], "absent_types": ["<type>"]}.'
    ),
    "typing": (
        "Pick one entity in the sentence and give all fine-grained types that fit it, and a few that do not. "
        'Answer as {"entity": "<exact span>", "types": ["<type>"], "wrong_types": ["<type>"]}.'
    ),
    "classify": (
        "Give labels that describe the sentence (topic, intent, sentiment, style...), and a few that do not fit. "
        'Answer as {"labels": ["<label>"], "wrong_labels": ["<label>"]}.'
    ),
}
MAX_JSON_STARTS = 64  # where in a reply a JSON object is looked for: its first braces


def request_messages(kind: str, text: str) -> List[Dict[str, str]]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{INSTRUCTIONS[kind]}\n\nSentence: {text}"}]


def parse_json_answer(answer: str) -> dict:
    """The first JSON object in ``answer`` (models like to wrap it in prose or code fences), read
    from the first ``{`` where one parses to its own end, whatever follows; at most
    ``MAX_JSON_STARTS`` ``{`` are tried, so a reply full of braces costs linear time.
    :class:`MalformedReply` when there is none."""
    text = answer if isinstance(answer, str) else ""
    decoder = json.JSONDecoder()
    reason = "the reply holds no JSON object"
    start = text.find("{")
    for _ in range(MAX_JSON_STARTS):
        if start < 0:
            break
        try:
            value, _ = decoder.raw_decode(text, start)
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError as err:
            reason = f"the reply's JSON does not parse ({err.msg})"
        except RecursionError:
            reason = "the reply's JSON is nested too deeply to read"
        start = text.find("{", start + 1)
    raise MalformedReply(reason)


def request_id(text: str, kind: str) -> str:
    """A request's id in the output: the sentence's own hash, so a rerun over an edited input
    (lines added, removed or moved) asks exactly the sentences not yet answered."""
    return f"{hashlib.blake2b(text.encode('utf8', 'surrogatepass'), digest_size=8).hexdigest()}:{kind}"


def clean_labels(values: object) -> List[str]:
    """Usable labels in order: strings that can be written in a prompt, each once (case-insensitive)."""
    labels, seen = [], set()
    for value in values if isinstance(values, list) else []:
        if not isinstance(value, str):
            continue
        value = " ".join(value.split())
        try:
            check_label(value)
        except ValueError:
            continue
        if value.casefold() not in seen:
            seen.add(value.casefold())
            labels.append(value)
    return labels


def answer_records(kind: str, text: str, answer: dict, lang: str, source: str, seed: int) -> Optional[dict]:
    """The checked record of one LLM answer, or None when nothing valid is left."""
    rng = random.Random(f"{seed}:{kind}:{text}")
    if kind == "ner":
        spans: Dict[str, List[str]] = {}
        for entity in _list(answer.get("entities")):
            if not isinstance(entity, dict) or not isinstance(entity.get("text"), str):
                continue
            span, types = entity["text"].strip(), clean_labels([entity.get("type")])
            if span and span in text and types and answer_problem(EXTRACT, types[:1], {types[0]: [span]}) is None:
                label = next((k for k in spans if k.casefold() == types[0].casefold()), types[0])
                if span not in spans.setdefault(label, []):
                    spans[label].append(span)
        if not spans:
            return None
        negatives = [label for label in clean_labels(answer.get("absent_types"))
                     if label.casefold() not in {k.casefold() for k in spans}]
        labels = list(spans) + negatives
        rng.shuffle(labels)
        return make_record(EXTRACT, text, labels, {label: spans.get(label, []) for label in labels}, source, lang)
    if kind == "typing":
        entity = answer.get("entity")
        positives = clean_labels(answer.get("types"))
        if not isinstance(entity, str) or not entity.strip() or entity.strip() not in text or not positives:
            return None
        chosen = {label.casefold() for label in positives}
        negatives = [label for label in clean_labels(answer.get("wrong_types")) if label.casefold() not in chosen]
        labels = positives + negatives
        rng.shuffle(labels)
        return make_record(CLASSIFY, f"{text} (entity: {entity.strip()})", labels, positives, source, lang)
    positives = clean_labels(answer.get("labels"))
    if not positives:
        return None
    chosen = {label.casefold() for label in positives}
    negatives = [label for label in clean_labels(answer.get("wrong_labels")) if label.casefold() not in chosen]
    labels = positives + negatives
    rng.shuffle(labels)
    return make_record(CLASSIFY, text, labels, positives, source, lang)


def _list(value) -> list:
    """``value`` if the LLM gave a list where one belongs, else nothing."""
    return value if isinstance(value, list) else []


def with_retries(call: Callable[[], str], *, max_retries: int, backoff: float, max_wait: float = MAX_WAIT,
                 sleep=time.sleep) -> str:
    """``call()``, retried on connection errors and busy servers with exponential back-off; a
    server's ``Retry-After`` is honoured up to ``max_wait`` seconds."""
    attempt = 0
    while True:
        try:
            return call()
        except RetryableError as err:
            if attempt >= max_retries:
                raise SynthesisError(f"gave up after {attempt + 1} attempts: {err}") from None
            wait = err.retry_after if err.retry_after is not None else backoff * 2 ** attempt
            sleep(min(wait, max_wait))
            attempt += 1


def read_sentences(path: Path) -> List[str]:
    """Raw sentences: a text file (one per line) or records (their ``text``; a folder of JSONL too)."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".jsonl":
        from .records import read_records

        texts = [record["text"] for record in read_records(path)]
    else:
        texts = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    return list(dict.fromkeys(text for text in texts if text))


def done_ids(output: Path) -> set:
    """Ids already answered (in the output or the rejected file); a trailing partial line is cut off first."""
    ids = set()
    for path in (output, rejected_path(output)):
        if not path.exists():
            continue
        _truncate_partial_line(path)
        for line in path.read_text(encoding="utf8").splitlines():
            if line.strip():
                ids.add(json.loads(line)["id"])
    return ids


def rejected_path(output: Path) -> Path:
    return output.with_name(output.stem + LEFT_OUT_SUFFIXES[1])


def _truncate_partial_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _append(path: Path, entry: dict) -> None:
    # One write of a whole line, flushed and synced before the next request: a kill loses at
    # most the line being written, which the next run cuts off and redoes.
    try:
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf8")
    except UnicodeEncodeError:  # a lone surrogate: escaped, so the file stays UTF-8 and reads back the same
        line = (json.dumps(entry) + "\n").encode("ascii")
    with path.open("ab") as stream:
        stream.write(line)
        stream.flush()
        os.fsync(stream.fileno())


def synthesize(backend, sentences: Sequence[str], output: Path, *, kinds: Iterable[str] = KINDS, lang: str = "en",
               source: str = "synthesized", seed: int = 0, max_retries: int = 5, backoff: float = 1.0,
               max_wait: float = MAX_WAIT, progress: bool = True, sleep=time.sleep) -> Tuple[int, int]:
    """Ask ``backend`` about each sentence for each kind; append checked records to ``output``
    and, for replies with nothing usable, the reason to the rejected file. Returns (records
    written, requests rejected) in this run."""
    from tqdm import tqdm

    kinds = list(kinds)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown synthesis kind(s) {sorted(unknown)}: choose from {', '.join(KINDS)}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = done_ids(output)
    todo = [(request_id(text, kind), kind, text) for text in sentences for kind in kinds
            if request_id(text, kind) not in done]
    written = rejected = 0
    for key, kind, text in tqdm(todo, desc="synthesize", unit="request", disable=not progress):
        surrogate = lone_surrogate(text)
        if surrogate is not None:  # not text a model (or the output file) can take
            _append(rejected_path(output), {"id": key, "text": text, "reason": f"the sentence holds a lone surrogate "
                                            f"({surrogate}), which is not Unicode text"})
            rejected += 1
            continue
        messages = request_messages(kind, text)
        try:
            answer = parse_json_answer(with_retries(lambda: backend.complete(messages), max_retries=max_retries,
                                                    backoff=backoff, max_wait=max_wait, sleep=sleep))
            record = answer_records(kind, text, answer, lang, source, seed)
            reason = "no span, type or label in the reply passed the checks"
        except MalformedReply as err:
            record, reason = None, str(err)
        if record is None:
            _append(rejected_path(output), {"id": key, "text": text, "reason": reason})
            rejected += 1
        else:
            _append(output, {"id": key, **record})
            written += 1
    return written, rejected
