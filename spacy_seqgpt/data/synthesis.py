"""Pre-training data synthesis: an instruction-following LLM labels raw sentences.

As in the SeqGPT paper, a strong LLM invents fine-grained labels and their answers for raw
text, in three kinds of request: entity extraction (NER), entity typing and classification;
it also names wrong labels, which become the records' negatives. Every answer is checked
before it becomes a record: spans must occur in the sentence and read back from the answer
format as themselves (no comma inside, not ``None``), labels must be non-empty, unique and
writable in a prompt; what fails is dropped.

Backends: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp's server)
or a local Hugging Face model. Results are appended as they come, one line per record with
its ``id`` (``<hash of the sentence>:<kind>``); requests whose reply holds nothing valid (or is
not even readable) are noted with the reason in a ``.rejected.jsonl`` file beside the output.
A rerun skips every id found in either file, and a line cut short by a kill is removed first,
so nothing is lost or written twice. The endpoint is called without following redirects, so
the API key goes nowhere else, and a server's ``Retry-After`` is obeyed up to ``max_wait``.
"""
import email.utils
import hashlib
import http.client
import json
import math
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.client import HTTPException
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..prompts import CLASSIFY, EXTRACT, check_label
from ..validation import lone_surrogate
from .records import LEFT_OUT_SUFFIXES, answer_problem, make_record

KINDS = ("ner", "typing", "classify")
MAX_WAIT = 60.0  # seconds: the longest Retry-After obeyed before asking again
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
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
MAX_REPLY_BYTES = 16 << 20


class SynthesisError(RuntimeError):
    """A backend could not be reached after all retries, or answered with an error that retrying cannot fix."""


class MalformedReply(ValueError):
    """A reply that arrived but holds nothing usable: its request is rejected and the run goes on."""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: a followed POST would carry the API key to wherever it points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise SynthesisError(f"{req.full_url} answered HTTP {code}, a redirect to {newurl}. Redirects are not "
                             "followed (the API key must not go to another address): pass the final URL as --endpoint.")


class RetryableError(Exception):
    def __init__(self, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Deadline:
    """Ends a request ``seconds`` after it starts, wherever it is: connecting, waiting for the
    status line and headers, or reading the body. A socket's timeout is per read, so a server
    that trickles bytes would outlive it; this shuts the request's sockets down instead, which
    wakes a blocked read. The opener it makes records every socket the request opens."""

    def __init__(self, seconds: float):
        self.seconds, self.sockets = seconds, []
        self.expired = threading.Event()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def opener(self) -> urllib.request.OpenerDirector:
        sockets = self.sockets

        def recording(base):
            class Connection(base):
                def connect(self):
                    super().connect()
                    sockets.append(self.sock)

            return Connection

        class HTTP(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(recording(http.client.HTTPConnection), req)

        class HTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(recording(http.client.HTTPSConnection), req, context=self._context)

        return urllib.request.build_opener(_RefuseRedirects, HTTP, HTTPS)

    def _expire(self) -> None:
        self.expired.set()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # closed already
                pass

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


class ChatEndpoint:
    """An OpenAI-compatible ``/chat/completions`` endpoint (stdlib HTTP: no client library
    needed); each request, whole reply included, ends within ``timeout`` seconds."""

    def __init__(self, endpoint: str, model: str, *, api_key: Optional[str] = None, temperature: float = 0.7,
                 timeout: float = 120.0):
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"--endpoint must be an http(s) URL, got {endpoint!r}")
        base = endpoint.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model, self.api_key, self.temperature, self.timeout = model, api_key, temperature, timeout

    @staticmethod
    def _read(response) -> bytes:
        """The reply's body, at most ``MAX_REPLY_BYTES``."""
        chunks, size = [], 0
        while True:
            chunk = response.read1(1 << 16)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_REPLY_BYTES:
                raise MalformedReply(f"the reply is larger than {MAX_REPLY_BYTES >> 20} MB")
            chunks.append(chunk)

    def complete(self, messages: List[Dict[str, str]]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        late = f"TimeoutError: the reply took longer than {self.timeout:g} s to arrive"
        try:
            with _Deadline(self.timeout) as deadline:
                with deadline.opener().open(request, timeout=self.timeout) as response:
                    data = self._read(response)
            if deadline.expired.is_set():  # the shut socket ended the body early
                raise RetryableError(late)
            payload = json.loads(data.decode("utf8"))
        except RecursionError:
            raise MalformedReply("the reply is JSON nested too deeply to read") from None
        except UnicodeDecodeError as err:
            raise MalformedReply(f"the reply is not UTF-8 ({err.reason} at byte {err.start})") from None
        except urllib.error.HTTPError as err:
            if err.code in RETRY_STATUS:
                raise RetryableError(f"HTTP {err.code}", retry_after_seconds(err.headers.get("Retry-After")
                                                                             if err.headers else None)) from None
            raise SynthesisError(f"{self.url} answered HTTP {err.code}: {err.read(200)!r}") from None
        except (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError, OSError,
                json.JSONDecodeError) as err:
            raise RetryableError(late if deadline.expired.is_set() else f"{type(err).__name__}: {err}") from None
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise SynthesisError(
                f"{self.url} did not answer in the chat-completions format: {str(payload)[:200]}"
            ) from None
        if not isinstance(content, str):
            raise MalformedReply(f"the reply's content is a {type(content).__name__}, not text")
        return content


class LocalModel:
    """A local Hugging Face causal LM; its chat template is used when it has one."""

    def __init__(self, path: str, *, max_new_tokens: int = 256):
        from ..decoding import Decoder
        from ..models import HFModel, load_shared

        self.shared = load_shared(HFModel(name=path).resolved())
        self.decoder = Decoder(self.shared, batch_size=1, max_new_tokens=max_new_tokens)

    def complete(self, messages: List[Dict[str, str]]) -> str:
        from ..decoding import Query

        tokenizer = self.shared.tokenizer
        if getattr(tokenizer, "chat_template", None):
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            prompt = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return self.decoder.decode([Query(prompt)])[0].text


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


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """A ``Retry-After`` header's wait in seconds: a number, or an HTTP date; None for anything else."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


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
    line = json.dumps(entry, ensure_ascii=lone_surrogate(entry) is not None)  # escaped: the line stays UTF-8
    with path.open("a", encoding="utf8") as stream:
        stream.write(line + "\n")
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
