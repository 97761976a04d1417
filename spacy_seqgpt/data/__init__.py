"""SeqGPT training data: atomic-task records, converters from public corpora, sampling, synthesis."""
