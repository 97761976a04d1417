"""The span search (``decoding.span_search``): every span at least ``floor`` likely as its label's
first value, not only the spans greedy decoding writes.

Greedy decoding answers "None" for a label unless the None path loses, though the model may give
spans of the text a fair share of its probability: a model trained on few domains is precise
and shy. Where the answer's row reaches a line's first value (``Grammar.opens_value``), each
token the grammar allows there with probability at least ``floor`` starts a probe: a row of its
own on a copy of the answer row's cache, which goes on with every allowed token while the
product of its probabilities stays at least ``floor``, and ends where its value ends (a comma,
the line break, the end of the answer). A span's probability is that product, its end included,
so "New" is not found where the model goes on to "New York". The values of one line are
disjoint events, so at most ``1 / floor`` probes of a line are alive at once, and asking each
about its ``ceil(1 / floor) + 1`` likeliest tokens misses none that could reach ``floor``
(``search_width``). Probes never write the answer: what they find is its ``Answer.found``.
"""
import math
from typing import List, Optional, Tuple

from ..kernels.constraints import TokenBytes
from ..prompts import NONE_ANSWERS
from .batch_state import BatchState, Row
from .search import Pick, candidates, greedy_pick

MAX_WIDTH = 64  # the most tokens a probe is asked about a step (a floor under 1/64 searches best-first)
_VALUE_ENDS = (b",", b"\n")


def search_width(floor: float, candidates_per_row: int) -> int:
    """How many of each row's likeliest tokens the grammar is asked about: enough that no token
    at least ``floor`` likely is left out (at most ``MAX_WIDTH``)."""
    return max(candidates_per_row, min(math.ceil(1 / floor) + 1, MAX_WIDTH))


def span_search_picks(logprobs, state: BatchState, k: int, width: int, eos_id: int, max_new_tokens: int,
                      floor: float, vocab: TokenBytes) -> Tuple[List[Pick], List[Row]]:
    """The answer rows' greedy picks (among their ``k`` likeliest tokens, as greedy decoding
    picks), and the probes' (started, and going on: among their ``width`` likeliest), with the
    rows they make; probes whose value ended are recorded (``BatchState.find``) and leave."""
    log_floor = math.log(floor)
    picks: List[Pick] = []
    rows: List[Row] = []
    answers = [row for row, written in enumerate(state.rows) if not written.is_probe]
    opening = {row: line for row in answers if (line := _opens_line(state, row)) > state.rows[row].line}
    searching = [row for row, written in enumerate(state.rows) if written.is_probe or row in opening]
    wide = dict(zip(searching, _candidates(logprobs, state, searching, width, eos_id)))
    for row, pairs in zip(answers, _candidates(logprobs, state, answers, k, eos_id)):
        written = state.rows[row]
        if row in opening:  # a line's first value: a probe per start that may reach the floor
            written.line = opening[row]
            start = Row(written.query, written.tokens, written.logprobs, 0.0, line=written.line,
                        probe_from=len(written.tokens))
            _probe(state, row, start, wide.pop(row), log_floor, eos_id, max_new_tokens, vocab, picks, rows)
        pick = greedy_pick(state, row, pairs[0], eos_id, max_new_tokens)
        if pick is not None:
            picks.append(pick)
            rows.append(written.then(*pick[1:]))
    for row, pairs in wide.items():
        _probe(state, row, state.rows[row], pairs, log_floor, eos_id, max_new_tokens, vocab, picks, rows)
    return picks, rows


def _opens_line(state: BatchState, row: int) -> int:
    return state.matchers.opens_value(row) if state.matchers is not None else -1


def _candidates(logprobs, state: BatchState, rows: List[int], k: int, eos_id: int) -> List[List[Tuple[int, float]]]:
    if not rows:
        return []
    matchers = state.matchers.take(rows) if state.matchers is not None else None
    return candidates(logprobs[rows], matchers, k, eos_id)


def _probe(state: BatchState, row: int, probe: Row, pairs: List[Tuple[int, float]], log_floor: float, eos_id: int,
           max_new_tokens: int, vocab: TokenBytes, picks: List[Pick], rows: List[Row]) -> None:
    """``probe`` (row ``row``) goes on with each of ``pairs`` that keeps it at the floor: a value
    that ends is found, one that goes on is a pick."""
    for token, lp in pairs:  # best first
        total = probe.score + lp
        if total < log_floor:
            break
        span = _ended_value(probe, token, eos_id, vocab)
        if span is not None:
            if span and span.casefold() not in NONE_ANSWERS:
                state.find(probe.query, probe.line, span, total)
        elif len(probe.tokens) + 1 < max_new_tokens:
            picks.append((row, token, lp))
            rows.append(probe.then(token, lp))


def _ended_value(probe: Row, token: int, eos_id: int, vocab: TokenBytes) -> Optional[str]:
    """The value ``probe`` wrote, if ``token`` ends it; else None."""
    data = b"".join(vocab.piece(t) or b"" for t in probe.tokens[probe.probe_from:])
    if token != eos_id:
        data += vocab.piece(token) or b""
        ends = [at for at in (data.find(mark) for mark in _VALUE_ENDS) if at >= 0]
        if not ends:
            return None
        data = data[:min(ends)]
    return data.decode("utf8", errors="replace").strip()
