"""Training: two-stage SeqGPT training (records to token batches, the answer-only loss,
checkpoints, the loop), the torch optimizer the tagger steps under ``spacy train``, and the
unmasking sweep."""
