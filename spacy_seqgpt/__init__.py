"""spacy-seqgpt: open-domain extraction and classification with decoder LLMs in spaCy."""
from .about import __version__

# Importing the components registers their factories (entry points do this too, lazily).
from .components.ner import SeqGPTNER  # noqa: E402
from .components.textcat import SeqGPTTextcat  # noqa: E402

__all__ = ["__version__", "SeqGPTNER", "SeqGPTTextcat"]
