"""The product's hot code: the compiled span aligner and answer grammars (Cython, ``*.pyx``
with their ``*.pyi`` stubs), the character classes they share, and the Triton attention
kernel for partially bidirectional attention (``attention``)."""
