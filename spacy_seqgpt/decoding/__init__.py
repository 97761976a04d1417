"""Decoding SeqGPT answers: the batched, constrained, scored :class:`Decoder` (``decoder`` ties
its parts together), the queries a document's windows and label chunks make, and the token
bytes the answer grammars read."""
from .answers import Answer, Query
from .decoder import DEFAULT_DRAFT_TOKENS, Decoder
from .queries import Request, make_queries, window_requests

__all__ = ["DEFAULT_DRAFT_TOKENS", "Answer", "Decoder", "Query", "Request", "make_queries", "window_requests"]
