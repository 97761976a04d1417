"""``python -m spacy seqgpt ...``: this package's commands under spaCy's CLI.

spaCy imports every ``spacy_cli`` entry point whenever its CLI starts, so this module only
builds the command group; each command imports its heavy dependencies when it runs.
"""
import functools

from spacy.cli._util import app
from typer import Typer
from wasabi import msg

seqgpt_cli = Typer(name="seqgpt", help="SeqGPT models and components for spaCy", no_args_is_help=True)
app.add_typer(seqgpt_cli)


def command(name: str, **settings):
    """Register a ``seqgpt`` command whose file and model errors (a missing or unwritable file, a
    full disk, a model that cannot be loaded: OSError and its kinds) end in one clear line."""

    def register(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except OSError as err:
                msg.fail(f"seqgpt {name} stopped", str(err), exits=1)

        return seqgpt_cli.command(name, **settings)(run)

    return register

from . import annotate, assemble, convert, evaluate, init_tiny, synthesize, train, unmask_sweep  # noqa: E402,F401  (register their commands)
