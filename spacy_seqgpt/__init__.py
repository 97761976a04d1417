"""spacy-seqgpt: open-domain extraction and classification with decoder LLMs in spaCy."""
from .about import __version__

# The compiled kernels are required (docs/development.md, "Build"): without them the package
# would silently run Python stand-ins orders of magnitude slower, so a missing build stops here.
try:
    from .kernels import alignment as _alignment, constraints as _constraints  # noqa: F401
except ImportError as err:
    raise ImportError(
        f"spacy_seqgpt's compiled kernels (kernels/*.pyx) are not built or do not load ({err}). Install the "
        "package from its folder with `pip install -e .` (or `pip install .`), which compiles them; after "
        "changing spaCy's version, reinstall to rebuild them."
    ) from err

# Importing the components registers their factories (entry points do this too, lazily).
from .components.ner import SeqGPTNER  # noqa: E402
from .components.tagger import LLMUnmaskedTagger  # noqa: E402
from .components.textcat import SeqGPTTextcat  # noqa: E402
from .components.entity_typing import SeqGPTTyping  # noqa: E402
from .components.relations import SeqGPTRelations  # noqa: E402
from .components.questions import SeqGPTQuestions  # noqa: E402
from .components.events import SeqGPTEvents  # noqa: E402
from .models import HFModel  # noqa: E402
from .decoding import Decoding  # noqa: E402
from .api import SeqGPT  # noqa: E402

__all__ = ["__version__", "Decoding", "HFModel", "LLMUnmaskedTagger", "SeqGPT", "SeqGPTEvents", "SeqGPTNER",
           "SeqGPTQuestions", "SeqGPTRelations", "SeqGPTTextcat", "SeqGPTTyping", "unmask"]


def __getattr__(name):
    # `unmask` pulls in torch and Triton: only when asked for, so `import spacy` stays fast.
    if name == "unmask":
        from .models.unmasking import unmask

        return unmask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
