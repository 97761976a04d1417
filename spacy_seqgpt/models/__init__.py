"""Models: which to load (:class:`HFModel`, the ``[components.*.model]`` block), the one loader,
the components' shared models, adapters, unmasking, the tagger's token classifier and the tiny
test models."""
from .errors import ModelLoadError
from .loading import load_pretrained
from .shared import SharedModel, load_shared
from .spec import DEFAULT_MODEL, HFModel

__all__ = ["DEFAULT_MODEL", "HFModel", "ModelLoadError", "SharedModel", "load_pretrained", "load_shared"]
