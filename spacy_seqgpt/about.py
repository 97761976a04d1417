__title__ = "spacy-seqgpt"
__version__ = "0.1.0"
