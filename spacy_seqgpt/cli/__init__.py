"""``python -m spacy seqgpt ...``: this package's commands under spaCy's CLI.

spaCy imports every ``spacy_cli`` entry point whenever its CLI starts, so this module only
builds the command group; each command imports its heavy dependencies when it runs.
"""
from spacy.cli._util import app
from typer import Typer

seqgpt_cli = Typer(name="seqgpt", help="SeqGPT models and components for spaCy", no_args_is_help=True)
app.add_typer(seqgpt_cli)

from . import assemble, convert, evaluate, init_tiny, synthesize, train, unmask_sweep  # noqa: E402,F401  (register their commands)
