"""Decoding SeqGPT answers: the settings block (:class:`Decoding`), the prompts a document is
asked (``requests``), the one object that asks (:class:`Asker`) and the batched, constrained,
scored :class:`Decoder` (``decoder`` ties its parts together)."""
from .answers import Answer, Query
from .asker import Asker
from .decoder import Decoder
from .requests import Request, make_queries, window_requests
from .settings import DEFAULT_DRAFT_TOKENS, Decoding

__all__ = ["DEFAULT_DRAFT_TOKENS", "Answer", "Asker", "Decoder", "Decoding", "Query", "Request", "make_queries",
           "window_requests"]
