"""Training: two-stage SeqGPT training (records to token batches, the answer-only loss,
checkpoints, the loop), the cosine schedule, and the unmasking sweep."""
