__title__ = "spacy-seqgpt"
__version__ = "0.2.0.dev0"
# The released weights the SeqGPT components are made for (hub id): their default model.
DEFAULT_MODEL = "DAMO-NLP/SeqGPT-560M"
