"""What every failure to load a model raises: its own module, so that every part of ``models``
(and the commands that print it) can import it without importing the loader."""


class ModelLoadError(OSError):
    """A model or tokenizer could not be loaded; the message says which and how to fix it.

    ``python_hint`` and ``cli_hint``: how to fix it from Python (``str(error)`` ends with it) and
    on spaCy's command line (:meth:`for_cli`, which the ``seqgpt`` commands and the spaCy CLI
    print instead of a traceback)."""

    def __init__(self, message: str, python_hint: str = "", cli_hint: str = ""):
        super().__init__(" ".join(part for part in (message, python_hint) if part))
        self.message, self.cli_hint = message, cli_hint or python_hint

    def for_cli(self) -> str:
        return " ".join(part for part in (self.message, self.cli_hint) if part)
