"""``python -m spacy seqgpt demo MODEL_OR_PIPELINE``: a local page to try a model with labels
typed at run time (``engine`` asks, ``page`` renders with displaCy, ``server`` serves)."""
