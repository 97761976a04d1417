__title__ = "spacy-seqgpt"
__version__ = "0.2.0.dev0"
