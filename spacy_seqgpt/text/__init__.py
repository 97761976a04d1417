"""Text: phrases and spans aligned to characters, subwords and spaCy tokens (the compiled
aligner and its Python reference), windows of long documents, IOB tags, and relations between
spans (`doc._.rel`)."""
