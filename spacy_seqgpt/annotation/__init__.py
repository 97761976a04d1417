"""Annotating corpora: inputs cut into shards, each annotated by a pipeline and written with a
manifest, so a killed run resumes; on one machine (``nlp.pipe``) or on a Ray cluster."""
