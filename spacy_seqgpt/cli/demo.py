"""``python -m spacy seqgpt demo MODEL_OR_PIPELINE``: a local page to try a model with labels typed at run time."""
import typer
from wasabi import msg

from . import command


@command("demo")
def demo_cli(
    source: str = typer.Argument(..., help="A model folder (init-model, init-tiny, a trained SeqGPT), a hub id, or a saved spaCy pipeline"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on (0.0.0.0: reachable from other machines)"),
    port: int = typer.Option(8000, "--port", help="Port to serve on (0: any free one)"),
    max_chars: int = typer.Option(5000, "--max-chars", min=1, help="The longest text the page takes"),
):
    """Serve a page where a person types a text and the labels (or categories, or questions),
    picks a task (ner, textcat, typing, relations, questions: those the pipeline has) and sees
    the spans highlighted with displaCy (scores on hover), categories as bars, relations as a
    list, and the time taken. The model loads once, before the page is served."""
    from ..demo.engine import DemoEngine
    from ..demo.server import make_server
    with msg.loading(f"Loading {source}"):
        engine = DemoEngine(source, max_chars=max_chars)
    server = make_server(engine, host, port)
    msg.good(f"SeqGPT demo of {source} ({', '.join(engine.tasks)}) at http://{host}:{server.server_port}/",
             "Ctrl+C stops it.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        msg.info("Stopped")
    finally:
        server.server_close()
