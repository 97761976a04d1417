"""spacy-seqgpt: open-domain extraction and classification with decoder LLMs in spaCy."""
from .about import __version__

# Importing the components registers their factories (entry points do this too, lazily).
from .components.ner import SeqGPTNER  # noqa: E402
from .components.textcat import SeqGPTTextcat  # noqa: E402

__all__ = ["__version__", "SeqGPTNER", "SeqGPTTextcat", "unmask"]


def __getattr__(name):
    # `unmask` pulls in torch and Triton: only when asked for, so `import spacy` stays fast.
    if name == "unmask":
        from .unmasking import unmask

        return unmask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
