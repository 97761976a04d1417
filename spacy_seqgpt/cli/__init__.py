"""``python -m spacy seqgpt ...``: this package's commands under spaCy's CLI.

spaCy imports every ``spacy_cli`` entry point whenever its CLI starts, so this module only
builds the command group; each command imports its heavy dependencies when it runs.
"""
import functools
import sys

from spacy.cli._util import app
from typer import Typer
from wasabi import msg

from ..models.errors import ModelLoadError
from ..validation import retired_settings


def _short_model_errors(previous):
    """spaCy's own commands (``spacy assemble``, ``train``, ``evaluate``...) load our models too: a
    model that cannot be loaded ends them in one clear block, as our commands end, instead of a
    traceback through spaCy; a config that names a setting an earlier version had says what
    replaced it. Only uncaught errors of those kinds; any other keeps its traceback."""

    def hook(kind, value, traceback):
        if isinstance(value, ModelLoadError):
            msg.fail("A SeqGPT model could not be loaded", _cli_message(value))
        elif _retired(value):
            msg.fail("A SeqGPT component's config names settings an earlier version had", _cli_message(value))
        else:
            previous(kind, value, traceback)

    return hook


def _retired(err: BaseException) -> list:
    return retired_settings(getattr(err, "errors", None) or []) if isinstance(err, ValueError) else []


# This module is imported by spaCy's command line (the ``spacy_cli`` entry point), not by a
# library user's import of the package.
sys.excepthook = _short_model_errors(sys.excepthook)

seqgpt_cli = Typer(name="seqgpt", help="SeqGPT models and components for spaCy", no_args_is_help=True)
app.add_typer(seqgpt_cli)


def _cli_message(err: Exception) -> str:
    message = err.for_cli() if isinstance(err, ModelLoadError) else str(err)
    return "\n".join([message, *_retired(err)])


def command(name: str, **settings):
    """Register a ``seqgpt`` command whose file, model and input errors (a missing or unwritable
    file, a full disk, a model that cannot be loaded: OSError and its kinds; a value or file
    the command refuses: ValueError) end in one clear block instead of a traceback."""

    def register(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except (OSError, ValueError) as err:
                msg.fail(f"seqgpt {name} stopped", _cli_message(err), exits=1)

        return seqgpt_cli.command(name, **settings)(run)

    return register

from . import annotate, assemble, convert, evaluate, init_model, init_tiny, preset, synthesize, train, unmask_sweep  # noqa: E402,F401  (register their commands)
