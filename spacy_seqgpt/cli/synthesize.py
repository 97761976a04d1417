"""``python -m spacy seqgpt synthesize SENTENCES OUTPUT (--endpoint URL --model NAME | --local-model DIR)``"""
import os
from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from . import command


@command("synthesize")
def synthesize_cli(
    sentences: Path = typer.Argument(..., help="Raw sentences: a text file (one per line), or records (JSONL file or folder)", exists=True),
    output: Path = typer.Argument(..., help="JSONL file the records are appended to (a rerun resumes)", dir_okay=False),
    endpoint: str = typer.Option("", "--endpoint", help="OpenAI-compatible API base URL, e.g. http://localhost:8000/v1 (empty: skip)"),
    model: str = typer.Option("", "--model", help="Model name the endpoint serves"),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the API key (may be unset for local servers)"),
    local_model: Optional[str] = typer.Option(None, "--local-model", help="Use a local Hugging Face model instead of an endpoint"),
    kinds: str = typer.Option("ner,typing,classify", "--kinds", help="Comma-separated request kinds"),
    lang: str = typer.Option("en", "--lang"),
    limit: int = typer.Option(0, "--limit", help="Use the first N sentences (0: all)"),
    seed: int = typer.Option(0, "--seed"),
    max_retries: int = typer.Option(5, "--max-retries"),
    backoff: float = typer.Option(1.0, "--backoff", help="First retry delay in seconds (doubles each time)"),
    max_wait: float = typer.Option(60.0, "--max-wait", help="Longest wait in seconds a server's Retry-After may ask for"),
    temperature: float = typer.Option(0.7, "--temperature"),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds a whole reply may take to arrive"),
):
    """Have an LLM invent fine-grained labels and answers for raw sentences (pre-training data)."""
    from ..data.backends import ChatEndpoint, LocalModel, SynthesisError
    from ..data.synthesis import read_sentences, synthesize

    if not endpoint and not local_model:
        msg.info("No --endpoint or --local-model given: synthesis skipped (pre-training will use its fallback data)")
        return
    try:
        if local_model:
            backend = LocalModel(local_model)
        else:
            if not model:
                msg.fail("--endpoint needs --model, the name of the model it serves", exits=1)
            backend = ChatEndpoint(endpoint, model, api_key=os.environ.get(api_key_env), temperature=temperature,
                                   timeout=timeout)
        texts = read_sentences(sentences)[: limit or None]
        written, rejected = synthesize(backend, texts, output, kinds=[k for k in kinds.split(",") if k], lang=lang,
                                       seed=seed, max_retries=max_retries, backoff=backoff, max_wait=max_wait)
    except (SynthesisError, ValueError, OSError) as err:
        msg.fail("Synthesis stopped; rerun the same command to resume", str(err), exits=1)
    msg.good(f"{written} records written to {output}, {rejected} answers rejected")
