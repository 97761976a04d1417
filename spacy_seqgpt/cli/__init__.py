"""``python -m spacy seqgpt ...``: this package's commands under spaCy's CLI.

spaCy imports every ``spacy_cli`` entry point whenever its CLI starts, so this module only
builds the command group, and changes nothing of the process (no ``sys.excepthook``): each
command imports its heavy dependencies when it runs, and ends its own errors in one block.
"""
import functools

from spacy.cli._util import app
from typer import Typer
from wasabi import msg

from ..models.errors import ModelLoadError
from ..validation import retired_settings

seqgpt_cli = Typer(name="seqgpt", help="SeqGPT models and components for spaCy", no_args_is_help=True)
app.add_typer(seqgpt_cli)


def _cli_message(err: Exception) -> str:
    """The error's message for the command line: a model's with the command line's way to fix it,
    and for a config that names a setting an earlier version had, what replaced it."""
    message = err.for_cli() if isinstance(err, ModelLoadError) else str(err)
    retired = retired_settings(getattr(err, "errors", None) or []) if isinstance(err, ValueError) else []
    return "\n".join([message, *retired])


def command(name: str, **settings):
    """Register a ``seqgpt`` command whose file, model and input errors (a missing or unwritable
    file, a full disk, a model that cannot be loaded: OSError and its kinds; a value, config or
    file the command refuses: ValueError; a missing extra: ImportError) end in one clear block
    instead of a traceback."""

    def register(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except (OSError, ValueError, ImportError) as err:
                title = "A SeqGPT model could not be loaded" if isinstance(err, ModelLoadError) else (
                    f"seqgpt {name} stopped")
                msg.fail(title, _cli_message(err), exits=1)

        return seqgpt_cli.command(name, **settings)(run)

    return register

from . import annotate, assemble, convert, demo, evaluate, init_model, init_tiny, preset, synthesize, train, unmask_sweep  # noqa: E402,F401  (register their commands)
