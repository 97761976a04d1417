"""The grammar state of a batch's rows, as one object: the arrays the kernels read never leave it.

Each row has a compiled answer grammar (``kernels.constraints``; None: free decoding) and a
state: a few integers and a bitset of the positions a span may be at. :class:`Matchers` holds
them for all rows and asks the kernels about all rows at once (which of the best tokens each
row may write, the rows after their picks); :meth:`Matchers.copy_row` gives one row's state as
a :class:`RowMatcher` of its own, to look ahead (forced text, drafts) without touching the
batch, and :meth:`Matchers.view_row` one row as a batch of one that shares the batch's state.
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..kernels.constraints import STATE_INTS, TokenBytes, advance, allowed, best_allowed


class RowMatcher:
    """One row's grammar and a copy of its state: consuming tokens here moves this copy only
    (throw it away to roll back)."""

    def __init__(self, grammar, ints: np.ndarray, bits: np.ndarray, vocab: TokenBytes):
        self.grammar, self.ints, self.bits, self.vocab = grammar, ints.copy(), bits.copy(), vocab

    def forced(self) -> Tuple[bytes, bool]:
        """The bytes the grammar allows alone from here, and whether the answer may end after them."""
        return self.grammar.forced(self.ints, self.bits)

    def draft(self) -> bytes:
        """A guess at what follows (a span's continuation in the input text, or ``None``)."""
        return self.grammar.draft(self.ints, self.bits)

    def opens_value(self) -> int:
        """The line whose first value the row writes next, or -1 (``Grammar.opens_value``)."""
        return self.grammar.opens_value(self.ints)

    def consume(self, tokens: Sequence[int]) -> List[int]:
        """``tokens`` up to the first the grammar refuses, the state moved past them."""
        for n, token in enumerate(tokens):
            token = np.array([[token]], dtype=np.int64)
            if not allowed([self.grammar], self.ints[None], self.bits[None], token, self.vocab)[0, 0]:
                return list(tokens[:n])
            self.ints, self.bits = _state_after(self.grammar, self.ints, self.bits, int(token[0, 0]), self.vocab)
        return list(tokens)


class Matchers:
    """The grammars and states of a batch's rows (see the module's docs)."""

    def __init__(self, grammars: List, ints: np.ndarray, bits: np.ndarray, vocab: TokenBytes):
        self.grammars, self.ints, self.bits, self.vocab = grammars, ints, bits, vocab

    @classmethod
    def start(cls, grammars: Sequence, vocab: TokenBytes) -> Optional["Matchers"]:
        """Each grammar at the start of an answer; None when every row decodes freely."""
        if all(grammar is None for grammar in grammars):
            return None
        width = max(grammar.n_words for grammar in grammars if grammar is not None) or 1
        ints = np.zeros((len(grammars), STATE_INTS), dtype=np.int64)
        bits = np.zeros((len(grammars), width), dtype=np.uint64)
        for row, grammar in enumerate(grammars):
            if grammar is not None:
                row_ints, row_bits = grammar.initial_state()
                ints[row], bits[row, : len(row_bits)] = row_ints, row_bits
        return cls(list(grammars), ints, bits, vocab)

    def grammar(self, row: int):
        return self.grammars[row]

    def copy_row(self, row: int) -> RowMatcher:
        """Row ``row``'s grammar with a copy of its state (look ahead, then throw it away)."""
        return RowMatcher(self.grammars[row], self.ints[row], self.bits[row], self.vocab)

    def after(self, source: np.ndarray, tokens: np.ndarray) -> "Matchers":
        """The rows of the next step: row ``i`` is row ``source[i]`` after writing ``tokens[i]``."""
        ints, bits = advance(self.grammars, self.ints, self.bits, source, tokens, self.vocab)
        return Matchers([self.grammars[row] for row in source], ints, bits, self.vocab)

    def take(self, rows: Sequence[int]) -> "Matchers":
        """Only ``rows``, in that order."""
        return Matchers([self.grammars[row] for row in rows], self.ints[rows], self.bits[rows], self.vocab)

    def view_row(self, row: int) -> "Matchers":
        """Row ``row`` alone, sharing its state with this batch (no copy: asked once a guess)."""
        return Matchers(self.grammars[row:row + 1], self.ints[row:row + 1], self.bits[row:row + 1], self.vocab)

    def opens_value(self, row: int) -> int:
        """The line whose first value row ``row`` writes next, or -1 (``Grammar.opens_value``)."""
        return -1 if self.grammars[row] is None else self.grammars[row].opens_value(self.ints[row])

    def write(self, row: int, token: int) -> None:
        """Row ``row`` writes ``token``: its state moves on, in place."""
        self.ints[row], self.bits[row] = _state_after(self.grammars[row], self.ints[row], self.bits[row], token,
                                                   self.vocab)

    def allowed(self, token_ids: np.ndarray) -> np.ndarray:
        """``(rows, k)``: whether each row may write each of its ``token_ids``."""
        return allowed(self.grammars, self.ints, self.bits, np.ascontiguousarray(token_ids, dtype=np.int64),
                       self.vocab)

    def best_allowed(self, row: int, scores: np.ndarray) -> int:
        """The best-scored token row ``row`` may write; -1 if none."""
        return best_allowed(self.grammars[row], self.ints[row], self.bits[row], scores, self.vocab)


def _state_after(grammar, ints: np.ndarray, bits: np.ndarray, token: int, vocab: TokenBytes):
    """One row's state after ``token`` (the state given is left as it was)."""
    one = advance([grammar], ints[None].copy(), bits[None].copy(), np.zeros(1, dtype=np.int64),
                  np.array([token], dtype=np.int64), vocab)
    return one[0][0], one[1][0]
