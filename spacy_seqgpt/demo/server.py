"""The demo's server: Python's own ``http.server``, one request at a time (the model answers one
question at a time anyway), GET for the empty form, POST for an answer."""
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Dict
from urllib.parse import parse_qs

from .engine import DemoEngine, split_labels
from .page import render_page

MAX_BODY = 1 << 20  # a form bigger than this is not a person's typing


def answer(engine: DemoEngine, form: Dict[str, str]) -> str:
    """The page for a submitted ``form``: the engine's result, or its refusal, under the form."""
    task = form.get("task", engine.tasks[0])
    result = engine.run(task, form.get("text", ""), split_labels(form.get("labels", ""), per_line=task == "questions"),
                        split_labels(form.get("entity_labels", "")))
    return render_page(source=engine.source, tasks=engine.tasks, form=form, result=result)


def make_server(engine: DemoEngine, host: str = "127.0.0.1", port: int = 8000) -> HTTPServer:
    """A server for ``engine`` (``port`` 0: any free port, ``server.server_port`` says which)."""

    class DemoHandler(BaseHTTPRequestHandler):
        def _send(self, status: int, html: str) -> None:
            body = html.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] != "/":
                self._send(HTTPStatus.NOT_FOUND, "<p>Not found: the demo is at /</p>")
                return
            self._send(HTTPStatus.OK, render_page(source=engine.source, tasks=engine.tasks, form={}))

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "<p>The form is too large.</p>")
                return
            fields = parse_qs(self.rfile.read(length).decode("utf-8", errors="replace"), keep_blank_values=True)
            self._send(HTTPStatus.OK, answer(engine, {key: values[0] for key, values in fields.items()}))

    return HTTPServer((host, port), DemoHandler)
