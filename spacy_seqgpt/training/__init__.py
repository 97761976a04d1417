"""Two-stage SeqGPT training: records to token batches, the answer-only loss, checkpoints, the loop."""
