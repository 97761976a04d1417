"""Synthesis against a chat-completions server on loopback: checked answers, retries, resuming."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spacy_seqgpt.data.backends import ChatEndpoint, MalformedReply, SynthesisError, retry_after_seconds
from spacy_seqgpt.data.synthesis import (answer_records, clean_labels, done_ids, parse_json_answer, request_id,
                                         synthesize)

SENTENCES = [f"Sentence {i} mentions Alice Smith and the Acme Corp in Paris." for i in range(12)]


def fake_answer(prompt: str) -> dict:
    """What a helpful LLM would answer, plus one invented span that the checker must drop."""
    if '"entities"' in prompt:
        return {"entities": [{"text": "Alice Smith", "type": "software engineer"},
                             {"text": "Acme Corp", "type": "technology company"},
                             {"text": "Bob", "type": "software engineer"}],  # not in the text
                "absent_types": ["river", "technology company", ""]}
    if '"entity"' in prompt:
        return {"entity": "Paris", "types": ["city", "capital", "City"], "wrong_types": ["fruit", "city"]}
    return {"labels": ["business news"], "wrong_labels": ["sports: football", "recipes"]}


class ChatServer:
    """A minimal OpenAI-compatible server: drops the connection on chosen request numbers, can be
    slow; ``reply(number, body)`` may answer instead: ``(status, headers, bytes)``."""

    def __init__(self, drop=(), delay=0.0, reply=None):
        self.requests = 0
        self.drop, self.delay, self.reply = set(drop), delay, reply
        self.authorization = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                server.requests += 1
                server.authorization.append(self.headers.get("Authorization"))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if server.reply is not None:
                    status, headers, payload = server.reply(server.requests, body)
                    self.send_response(status)
                    for name, value in {"Content-Length": str(len(payload)), **headers}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if server.requests in server.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)  # hang up without an answer
                    return
                time.sleep(server.delay)
                prompt = body["messages"][-1]["content"]
                content = "Sure! " + json.dumps(fake_answer(prompt))
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    server = ChatServer(drop={2, 5, 6})
    yield server
    server.close()


def synthesize_against(reply, sentences, out, **options):
    """``synthesize`` against a local endpoint that answers request ``n`` (from 1) with ``reply(n, body)``."""
    server = ChatServer(reply=reply)
    try:
        return synthesize(ChatEndpoint(server.url, "any"), sentences, out, progress=False, **options)
    finally:
        server.close()


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_checked_records_and_dropped_connections(server, tmp_path):
    out = tmp_path / "synth.jsonl"
    sleeps = []
    written, rejected = synthesize(ChatEndpoint(server.url, "any"), SENTENCES[:3], out, sleep=sleeps.append,
                                   backoff=0.5, progress=False)
    assert (written, rejected) == (9, 0)
    assert sleeps == [0.5, 0.5, 1.0]  # request 2 dropped once; 5 and 6 in a row: back-off doubles
    records = {r["id"]: r for r in read_lines(out)}
    ner = records[request_id(SENTENCES[0], "ner")]
    assert ner["answer"]["software engineer"] == ["Alice Smith"]  # "Bob" is not in the text: dropped
    assert set(ner["labels"]) == {"software engineer", "technology company", "river"}  # no gold label as negative
    typing = records[request_id(SENTENCES[0], "typing")]
    assert typing["text"].endswith("(entity: Paris)")
    assert sorted(typing["answer"]) == ["capital", "city"] and "fruit" in typing["labels"]
    classify = records[request_id(SENTENCES[0], "classify")]
    assert classify["labels"].count("recipes") == 1
    assert "sports: football" not in classify["labels"]  # a colon cannot be written in a prompt


def test_a_server_that_stays_down_stops_with_a_clear_error(tmp_path):
    endpoint = ChatEndpoint("http://127.0.0.1:9/v1", "any", timeout=2)  # discard port: refused
    with pytest.raises(SynthesisError, match="gave up after 3 attempts"):
        synthesize(endpoint, SENTENCES[:1], tmp_path / "o.jsonl", max_retries=2, sleep=lambda s: None, progress=False)


@pytest.mark.slow  # a synthesis run killed and resumed
def test_kill_mid_run_then_rerun_loses_and_repeats_nothing(tmp_path):
    server = ChatServer(delay=0.05)
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES), encoding="utf8")
    out = tmp_path / "synth.jsonl"
    command = [sys.executable, "-m", "spacy", "seqgpt", "synthesize", str(sentences), str(out),
               "--endpoint", server.url, "--model", "any"]
    env = dict(os.environ, OPENAI_API_KEY="test-key")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 5):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = len(read_lines(out))
    assert 5 <= partial < 36, "the kill should land mid-run"
    with out.open("a") as stream:
        stream.write('{"id": "' + request_id(SENTENCES[11], "ner") + '", "task": "ext')  # a line cut short by the kill
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server.close()
    ids = [r["id"] for r in read_lines(out)]
    assert sorted(ids) == sorted(request_id(text, k) for text in SENTENCES for k in ("ner", "typing", "classify"))
    assert done_ids(out) == set(ids)


def test_answer_checking_helpers():
    assert parse_json_answer('```json\n{"labels": ["a"]}\n```') == {"labels": ["a"]}
    for reply, reason in (("no json here", "no JSON object"), ("{'single': 'quotes'}", "does not parse")):
        with pytest.raises(MalformedReply, match=reason):
            parse_json_answer(reply)
    assert clean_labels(["city", " City ", "", 3, "a,b", "new   york"]) == ["city", "new york"]
    assert answer_records("ner", "Alice runs.", {"entities": [{"text": "Bob", "type": "x"}]}, "en", "s", 0) is None
    assert answer_records("classify", "text", {"labels": []}, "en", "s", 0) is None


def test_cli_without_a_backend_skips(tmp_path):
    sentences = tmp_path / "s.txt"
    sentences.write_text("One sentence.\n")
    result = subprocess.run([sys.executable, "-m", "spacy", "seqgpt", "synthesize", str(sentences),
                             str(tmp_path / "o.jsonl")], capture_output=True, text=True)
    assert result.returncode == 0 and "skipped" in result.stdout and not (tmp_path / "o.jsonl").exists()


def test_local_model_backend_notes_unusable_answers(tiny_bloom, tmp_path):
    from spacy_seqgpt.data.backends import LocalModel
    from spacy_seqgpt.data.synthesis import rejected_path

    out = tmp_path / "local.jsonl"
    backend = LocalModel(str(tiny_bloom), max_new_tokens=8)  # random weights: no JSON comes out
    assert synthesize(backend, ["Anna lives in Rome."], out, kinds=["classify"], progress=False) == (0, 1)
    asked = request_id("Anna lives in Rome.", "classify")
    assert [r["id"] for r in read_lines(rejected_path(out))] == [asked]
    assert done_ids(out) == {asked}  # a rerun does not ask again


def completion(content) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


def test_a_redirect_is_refused_and_the_key_goes_nowhere_else(tmp_path):
    elsewhere = ChatServer()
    redirecting = ChatServer(reply=lambda n, body: (307, {"Location": elsewhere.url + "/chat/completions"}, b""))
    try:
        with pytest.raises(SynthesisError, match="redirect to .* not followed"):
            synthesize(ChatEndpoint(redirecting.url, "any", api_key="secret"), SENTENCES[:1], tmp_path / "o.jsonl",
                       sleep=lambda s: None, progress=False)
        assert redirecting.authorization == ["Bearer secret"] and elsewhere.requests == 0
    finally:
        redirecting.close()
        elsewhere.close()


def test_retry_after_is_obeyed_up_to_max_wait(tmp_path):
    def reply(number, body):
        if number == 1:
            return 429, {"Retry-After": "86400"}, b""
        return 200, {}, completion(json.dumps(fake_answer(body["messages"][-1]["content"])))

    sleeps = []
    written, _ = synthesize_against(reply, SENTENCES[:1], tmp_path / "o.jsonl", kinds=["ner"], max_wait=30,
                                    sleep=sleeps.append)
    assert written == 1 and sleeps == [30]


ODD_REPLIES = [completion(5), completion([1, 2]), completion({"entities": []}), completion('{"entities": 5}'),
               completion('{"entity": ["Paris"], "types": "city"}'), completion('{"a":' * 5000 + "1" + "}" * 5000),
               b'{"choices":' * 5000 + b"1" + b"}" * 5000, completion("no JSON here"), completion(None)]


def test_odd_but_valid_replies_are_rejected_with_a_reason_and_the_run_goes_on(tmp_path):
    out = tmp_path / "o.jsonl"
    written, rejected = synthesize_against(lambda n, body: (200, {}, ODD_REPLIES[(n - 1) % len(ODD_REPLIES)]),
                                           SENTENCES[:3], out, sleep=lambda s: None)
    assert (written, rejected) == (0, 9)
    reasons = [entry["reason"] for entry in read_lines(out.with_name("o.rejected.jsonl"))]
    assert reasons[:2] == ["the reply's content is a int, not text", "the reply's content is a list, not text"]
    assert all(reasons) and sum("nested too deeply" in reason for reason in reasons) == 2


def test_replies_that_are_not_utf8_or_retry_afters_that_are_no_number_do_not_stop_the_run(tmp_path):
    def reply(number, body):
        if number == 1:
            return 200, {}, b'{"choices": [{"message": {"content": "\xff\xfe"}}]}'  # not UTF-8
        if number == 2:
            return 503, {"Retry-After": "\u00b2"}, b""  # a superscript 2: str.isdigit says yes, float says no
        if number == 3:
            return 429, {"Retry-After": "soon"}, b""
        return 200, {}, completion(json.dumps(fake_answer(body["messages"][-1]["content"])))

    sleeps = []
    written, rejected = synthesize_against(reply, SENTENCES[:2], tmp_path / "o.jsonl", kinds=["ner"],
                                           sleep=sleeps.append, backoff=0.25)
    assert (written, rejected) == (1, 1) and sleeps == [0.25, 0.5]  # back-off where Retry-After is no wait
    reason = read_lines(tmp_path / "o.rejected.jsonl")[0]["reason"]
    assert reason.startswith("the reply is not UTF-8")


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("120") == 120.0 and retry_after_seconds("1.5") == 1.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: ask again now
    assert (
        3500 < retry_after_seconds(__import__("email.utils").utils.formatdate(time.time() + 3600, usegmt=True)) <= 3600
    )
    for value in (None, "", "soon", "\u00b2", "nan", "inf", "-5"):
        assert retry_after_seconds(value) in (None, 0.0)


@pytest.mark.parametrize("reply, expected", [
    ('Here: {"labels": ["a"]} -- note that {braces} and } appear in prose', {"labels": ["a"]}),
    ("{" * 40000 + ' {"labels": ["a"]}', None),  # too many false starts: refused, and quickly
    ('{"labels": [' + "{" * 40000, None),
    ('{ not json } {"labels": ["b"]}', {"labels": ["b"]}),
])
def test_the_json_search_reads_the_first_object_in_linear_time(reply, expected):
    started = time.perf_counter()
    if expected is None:
        with pytest.raises(MalformedReply):
            parse_json_answer(reply)
    else:
        assert parse_json_answer(reply) == expected
    assert time.perf_counter() - started < 1.0  # was about 5 s for 40,000 braces


def test_a_reply_that_trickles_in_past_the_timeout_is_retried(tmp_path):
    class Trickle(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            payload = completion(json.dumps({"labels": ["x"]}))
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            for byte in payload:  # one byte every 0.3 s: each read is quick, the whole is not
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.3)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    endpoint = ChatEndpoint(f"http://127.0.0.1:{httpd.server_address[1]}/v1", "any", timeout=1.0)
    started = time.time()
    try:
        with pytest.raises(SynthesisError, match="gave up after 1 attempts: .*longer than 1 s"):
            synthesize(endpoint, SENTENCES[:1], tmp_path / "o.jsonl", kinds=["classify"], max_retries=0,
                       sleep=lambda s: None, progress=False)
    finally:
        httpd.shutdown()
    assert time.time() - started < 5


def test_a_sentence_with_a_lone_surrogate_is_rejected_without_a_request_and_the_run_goes_on(tmp_path):
    sentences = ["Bad \udcff sentence about Alice Smith.", SENTENCES[0]]
    asked = []

    def reply(number, body):
        asked.append(body["messages"][-1]["content"])
        return 200, {}, completion(json.dumps({"labels": ["news"], "wrong_labels": ["sports"]}))

    for _ in range(2):  # the rerun asks nothing again
        synthesize_against(reply, sentences, tmp_path / "o.jsonl", kinds=["classify"])
    rejected = read_lines(tmp_path / "o.rejected.jsonl")
    assert len(asked) == 1 and SENTENCES[0] in asked[0]
    assert [r["text"] for r in rejected] == [sentences[0]]  # kept as it was, escaped in the file
    assert "lone surrogate (U+DCFF at character 4)" in rejected[0]["reason"]
    assert [r["text"] for r in read_lines(tmp_path / "o.jsonl")] == [SENTENCES[0]]


def test_a_server_that_trickles_its_headers_is_cut_off_at_the_timeout(tmp_path):
    """The status line and headers count too: one header byte every 0.3 s, forever."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():
                try:
                    connection.sendall(b"X")
                except OSError:
                    return
                time.sleep(0.3)

    threading.Thread(target=serve, daemon=True).start()
    endpoint = ChatEndpoint(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", "any", timeout=1.0)
    raised = []

    def run():  # in a thread, so that a stall fails this test instead of hanging the suite
        try:
            synthesize(endpoint, SENTENCES[:1], tmp_path / "o.jsonl", kinds=["classify"], max_retries=0,
                       sleep=lambda s: None, progress=False)
        except SynthesisError as err:
            raised.append(err)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(10)
    stop.set()
    listener.close()
    assert not runner.is_alive(), "the request outlived its timeout"
    assert raised and re.search("gave up after 1 attempts: .*longer than 1 s", str(raised[0]))


def test_a_line_inserted_at_the_top_of_the_input_is_asked_and_no_other_twice(server, tmp_path):
    out = tmp_path / "o.jsonl"
    synthesize(ChatEndpoint(server.url, "any"), SENTENCES[:2], out, kinds=["classify"], progress=False)
    asked = server.requests
    synthesize(ChatEndpoint(server.url, "any"), ["A new first line."] + SENTENCES[:2], out, kinds=["classify"],
               progress=False)
    assert server.requests == asked + 1
    assert sorted(r["text"] for r in read_lines(out)) == sorted(["A new first line."] + SENTENCES[:2])


def test_an_llm_span_with_a_comma_is_dropped():
    answer = {"entities": [{"text": "Smith, Jr.", "type": "person"}, {"text": "Paris", "type": "city"}]}
    record = answer_records("ner", "Smith, Jr. lives in Paris.", answer, "en", "s", 0)
    assert record["answer"] == {"city": ["Paris"]}
