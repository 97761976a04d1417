"""One batch of answers being written: its rows, their grammar states, the KV cache, the mask,
and the answers finished so far.

A row is one hypothesis of one query (``num_beams`` rows a query), or one of the span search's
probes (``decoding.span_search``): a value being written after the answer's row at a line's
start, never the query's answer. Rows leave the batch as their answers end, and the cache,
mask and grammar states follow them (``keep``).
"""
import codecs
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..kernels.constraints import TokenBytes
from .answers import Answer
from .matcher import Matchers


@dataclass
class Row:
    query: int
    tokens: List[int] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    score: float = 0.0  # sum of log-probabilities (beam search; a probe's: since its value began)
    ended: bool = False  # wrote end-of-sequence
    line: int = -1  # the answer line a probe writes a value of; the answer's row: the last line searched
    probe_from: int = -1  # a probe: where in ``tokens`` its value begins; -1: a hypothesis of the answer

    @property
    def is_probe(self) -> bool:
        return self.probe_from >= 0

    def then(self, token: int, logprob: float) -> "Row":
        """This row after writing ``token``."""
        return Row(self.query, self.tokens + [token], self.logprobs + [logprob], self.score + logprob,
                   line=self.line, probe_from=self.probe_from)


class BatchState:
    """``rows`` and their ``matchers`` (None: all free), ``finished``: per query its ended
    hypotheses as ``(score, row)``; ``cache``, ``mask`` and ``prompt_lengths`` (prefix-LM
    models) have a row per row."""

    def __init__(self, rows: List[Row], matchers: Optional[Matchers], cache, mask, prompt_lengths):
        self.rows, self.matchers = rows, matchers
        self.cache, self.mask, self.prompt_lengths = cache, mask, prompt_lengths
        self.finished: Dict[int, List[Tuple[float, Row]]] = {}
        self.found: Dict[int, Dict[Tuple[int, str], float]] = {}  # per query: the span search's (line, span)

    def __len__(self) -> int:
        return len(self.rows)

    def end(self, row: int) -> None:
        """Row ``row``'s answer is complete: it is its query's answer."""
        self.rows[row].ended = True
        self.finished[self.rows[row].query] = [(0.0, self.rows[row])]

    def out_of_tokens(self, row: Row) -> None:
        """``row`` has written ``max_new_tokens``: an answer (cut short), scored as a beam (a
        probe's value is left unread)."""
        if not row.is_probe:
            self.finished.setdefault(row.query, []).append((row.score / max(len(row.tokens), 1), row))

    def write(self, row: int, token: int, logprob: float) -> None:
        """Row ``row`` writes ``token``: its answer and its grammar state move on."""
        if self.matchers is not None:
            self.matchers.write(row, token)
        self.rows[row] = self.rows[row].then(token, logprob)

    def find(self, query: int, line: int, span: str, logprob: float) -> None:
        """The span search found ``span`` as a value of line ``line`` of ``query``'s answer."""
        found = self.found.setdefault(query, {})
        found[line, span] = max(found.get((line, span), -np.inf), logprob)

    def step(self, picks: Sequence[Tuple[int, int, float]], new_rows: Optional[List[Row]] = None) -> np.ndarray:
        """The rows after ``picks`` (row, token, log-probability): each pick a row of its own
        (``new_rows``: those rows, where they are not just the picking row after its token).
        Returns each new row's source row (the cache still has the old rows)."""
        source = np.array([row for row, _, _ in picks], dtype=np.int64)
        tokens = np.array([token for _, token, _ in picks], dtype=np.int64)
        if self.matchers is not None:
            self.matchers = self.matchers.after(source, tokens)
        self.rows = new_rows if new_rows is not None else [self.rows[row].then(token, lp) for row, token, lp in picks]
        return source

    def keep(self, going: Sequence[int], cache_rows: np.ndarray, cache_size: int) -> None:
        """Only rows ``going``; the cache, mask and prompt lengths take their rows ``cache_rows``."""
        self.rows = [self.rows[row] for row in going]
        if self.matchers is not None:
            self.matchers = self.matchers.take(going)
        if not np.array_equal(cache_rows, np.arange(cache_size)):  # rows left, or beams moved
            import torch

            index = torch.from_numpy(cache_rows).to(self.mask.device)
            self.cache.reorder_cache(index)
            self.mask = self.mask[index]
            self.prompt_lengths = self.prompt_lengths[index] if self.prompt_lengths is not None else None

    def answers(self, queries: int, vocab: TokenBytes) -> List[Answer]:
        """Each query's best finished hypothesis (the rows still going count as cut short)."""
        for row in self.rows:
            self.out_of_tokens(row)
        return [answer_of(max(self.finished.get(query) or [(0.0, Row(query))], key=lambda item: item[0])[1], vocab,
                          self.found.get(query, {}))
                for query in range(queries)]


def answer_of(row: Row, vocab: TokenBytes, found: Dict[Tuple[int, str], float]) -> Answer:
    pieces = [vocab.piece(token) or b"" for token in row.tokens]
    ends = np.cumsum([len(piece) for piece in pieces], dtype=np.int64).tolist()
    data = b"".join(pieces)
    # An answer cut short may end inside a character: that part is left out, not replaced.
    text = codecs.getincrementaldecoder("utf8")(errors="replace").decode(data, final=row.ended)
    best_first = sorted(found.items(), key=lambda item: -item[1])
    return Answer(text, row.tokens, row.logprobs, ends, row.ended,
                  [(line, span, float(np.exp(logprob))) for (line, span), logprob in best_first])
