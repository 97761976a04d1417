"""Data: atomic-task records, converters from public corpora, sampling, synthesis, and CoNLL
files as spaCy training data (``spacy_seqgpt.ConllCorpus.v1``)."""
