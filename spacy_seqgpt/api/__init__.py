"""SeqGPT's atomic tasks as plain Python, for what has no Doc shape (sentence pairs, NLI)."""
from .seqgpt import PAIR_TEMPLATE, SeqGPT

__all__ = ["PAIR_TEMPLATE", "SeqGPT"]
