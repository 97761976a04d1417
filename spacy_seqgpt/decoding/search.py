"""Choosing each row's next token: greedy and beam search under the rows' grammars.

A grammar is asked about the few best tokens of each row only (``candidates``); only if none
is allowed is the whole vocabulary searched for the best it allows.
"""
from typing import Dict, List, Optional, Tuple

import numpy as np

from .batch_state import BatchState, Row
from .matcher import Matchers

Pick = Tuple[int, int, float]  # row, token, log-probability


def candidates(logprobs, matchers: Matchers, k: int, eos_id: int) -> List[List[Tuple[int, float]]]:
    """Per row: (token, log-probability) pairs the row may write, best first."""
    k = min(k, logprobs.shape[-1])
    top_lp, top_ids = (tensor.cpu().numpy() for tensor in logprobs.topk(k, -1))
    if matchers is None:
        return [list(zip(ids.tolist(), lps.tolist())) for ids, lps in zip(top_ids, top_lp)]
    ok = matchers.allowed(top_ids)
    out = []
    for row, (ids, lps, fits) in enumerate(zip(top_ids, top_lp, ok)):
        pairs = [(int(t), float(lp)) for t, lp, fit in zip(ids, lps, fits) if fit]
        if not pairs and matchers.grammar(row) is not None:
            scores = logprobs[row].cpu().numpy()
            token = matchers.best_allowed(row, scores)
            # A grammar with no way on (an unusual vocabulary): end the answer here.
            token = token if token >= 0 else eos_id
            pairs = [(token, float(scores[token]))]
        out.append(pairs)
    return out


def greedy_choice(logprobs, state: BatchState, row: int, k: int, eos_id: int) -> int:
    """The token a greedy step would write for row ``row`` given its ``logprobs``."""
    matchers = state.matchers.view_row(row) if state.matchers is not None else None
    return candidates(logprobs[None], matchers, k, eos_id)[0][0][0]


def greedy_picks(logprobs, state: BatchState, k: int, eos_id: int, max_new_tokens: int) -> List[Pick]:
    picks = []
    for row, pairs in enumerate(candidates(logprobs, state.matchers, k, eos_id)):
        pick = greedy_pick(state, row, pairs[0], eos_id, max_new_tokens)
        if pick is not None:
            picks.append(pick)
    return picks


def greedy_pick(state: BatchState, row: int, best: Tuple[int, float], eos_id: int, max_new_tokens: int
                ) -> Optional[Pick]:
    """Row ``row`` writes its ``best`` (token, log-probability) allowed, or its answer is over."""
    token, lp = best
    if state.rows[row].ended:  # its chain wrote the end (finished already)
        return None
    if len(state.rows[row].tokens) >= max_new_tokens:  # jumped forward to the limit
        state.out_of_tokens(state.rows[row])
    elif token == eos_id:
        state.end(row)
    else:
        return row, token, lp
    return None


def beam_picks(logprobs, state: BatchState, k: int, eos_id: int, beams: int) -> List[Pick]:
    """Standard beam search: per query the ``beams`` best continuations of its beams; a
    hypothesis ending here is scored by its mean log-probability (length penalty 1)."""
    live = state.rows
    by_query: Dict[int, List[Tuple[float, int, int, float]]] = {}
    for row, pairs in enumerate(candidates(logprobs, state.matchers, k, eos_id)):
        for token, lp in pairs:
            by_query.setdefault(live[row].query, []).append((live[row].score + lp, row, token, lp))
    picks = []
    for query, options in by_query.items():
        done = state.finished.setdefault(query, [])
        kept = []
        for total, row, token, lp in sorted(options, key=lambda option: -option[0]):
            if not np.isfinite(total):
                continue
            if token == eos_id:
                ended = Row(query, live[row].tokens, live[row].logprobs, total, ended=True)
                done.append((total / (len(ended.tokens) + 1), ended))
            else:
                kept.append((row, token, lp))
            if len(kept) == beams:
                break
        done.sort(key=lambda item: -item[0])
        del done[beams:]
        best_live = kept[0] if kept else None
        if best_live is not None and len(done) == beams:
            length = len(live[best_live[0]].tokens) + 1
            if (live[best_live[0]].score + best_live[2]) / length <= done[-1][0]:
                continue  # no live beam can beat the finished ones any more
        while kept and len(kept) < beams:  # keep the row count fixed per query
            kept.append(kept[-1][:2] + (-np.inf,))
        picks.extend(kept)
    return picks
