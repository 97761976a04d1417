"""Accelerated kernels, shipped as ``spacy_seqgpt.kernels``.

``setup.py`` compiles every ``*.pyx`` here with Cython; Triton kernels live beside them as
plain modules. Nothing here imports the rest of the package.
"""
