"""Where synthesis asks: an OpenAI-compatible chat-completions endpoint (stdlib HTTP, no client
library) or a local Hugging Face model, and the errors a request ends in.

The endpoint is called without following redirects, so the API key goes nowhere else; a
server's ``Retry-After`` is read for the retries; a request, whole reply included, ends
within its timeout however slowly the server sends.
"""
import email.utils
import http.client
import json
import math
import socket
import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.client import HTTPException
from typing import Dict, List, Optional

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
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
        self.sockets: list = []
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
        from ..decoding import Decoder, Decoding
        from ..models import HFModel, load_shared

        self.shared = load_shared(HFModel(name=path).resolved())
        self.decoder = Decoder(self.shared, Decoding(batch_size=1, max_new_tokens=max_new_tokens))

    def complete(self, messages: List[Dict[str, str]]) -> str:
        from ..decoding import Query

        tokenizer = self.shared.tokenizer
        if getattr(tokenizer, "chat_template", None):
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            prompt = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return self.decoder.decode([Query(prompt)])[0].text


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
