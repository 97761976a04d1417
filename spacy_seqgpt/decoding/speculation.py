"""Jump-forward and speculation (greedy decoding): more than one token a row per forward pass.

After its pick, a row appends in the same pass what its grammar forces (jump-forward: the
next ``label: ``, the line break after ``None``, the end) and guesses at what follows
(speculation: inside a span, the input text after the span so far; after a line break,
``None``). Forced tokens are written as the tokenizer splits the answer (``text_tokens``) and
get log-probability 0: the grammar chose them, and no span contains them. A guessed token is
kept only where greedy decoding would have written it (``verify_chain``), so the answer and its
log-probabilities are step-by-step decoding's.
"""
from dataclasses import dataclass, field
from typing import Callable, List, Sequence, Tuple

import numpy as np

from .batch_state import BatchState


@dataclass
class Chain:
    """What a row appends after its pick in one pass: tokens, which of them are guesses the
    model must confirm, and whether the answer ends after the last."""
    tokens: List[int] = field(default_factory=list)
    guessed: List[bool] = field(default_factory=list)
    ends: bool = False

    def add(self, tokens: List[int], *, guessed: bool) -> None:
        self.tokens += tokens
        self.guessed += [guessed] * len(tokens)

    def cut(self, length: int) -> None:
        """Only the first ``length`` tokens (the rest waits for a later pass)."""
        self.tokens, self.guessed, self.ends = self.tokens[:length], self.guessed[:length], False


# (tokens written so far, bytes) -> the bytes as tokens after them (``token_bytes.text_tokens``)
ToTokens = Callable[[List[int], bytes], List[int]]


def plan(state: BatchState, *, jump_forward: bool, speculate: bool, draft_tokens: int, max_new_tokens: int,
         to_tokens: ToTokens, stop_at_values: bool = False) -> List[Chain]:
    """Per row (after its pick), what it appends in the same pass: text the grammar forces,
    then guesses and the text forced after each, up to ``draft_tokens`` guessed tokens, a
    span's draft or the end of the answer. A chain with no tokens that ends: the answer is
    complete. ``stop_at_values`` (the span search): a chain stops where a line's first value
    opens, which the search must see the model's logits at; probes go step by step."""
    if state.matchers is None or not (jump_forward or speculate):
        return [Chain() for _ in state.rows]
    chains = []
    for row, written in enumerate(state.rows):
        chain = Chain()
        room = max_new_tokens - len(written.tokens)
        if state.matchers.grammar(row) is None or written.is_probe:
            chains.append(chain)
            continue
        matcher = state.matchers.copy_row(row)
        while len(chain.tokens) < room:
            if jump_forward:
                data, ends = matcher.forced()
                text = data.rstrip(b" ")
                forced = to_tokens(written.tokens + chain.tokens, text) if text else []
                if text and not forced:  # not writable as tokens: left to the model
                    break
                chain.add(matcher.consume(forced), guessed=False)
                if ends and text == data:
                    chain.ends = True
                    break
            if stop_at_values and matcher.opens_value() > written.line:
                break
            budget = min(draft_tokens - sum(chain.guessed), room - len(chain.tokens))
            if not speculate or budget <= 0:
                break
            guess = matcher.draft()
            draft = to_tokens(written.tokens + chain.tokens, guess)[:budget] if guess else []
            if not draft:
                break
            fed = matcher.consume(draft)
            chain.add(fed, guessed=True)
            if len(fed) < len(draft) or not guess.endswith(
                b"None"
            ):  # a span's draft: where it ends is the model's to say
                break
        if len(chain.tokens) > room:
            chain.cut(room)
        chains.append(chain)
    return chains


def verify_chain(logits_at, start: int, state: BatchState, row: int, chain: Chain,
           choose: Callable[[object, int], int]) -> Tuple[int, int, int]:
    """Write row ``row``'s chain as far as greedy decoding would have written it: forced tokens
    always, each guessed one only if ``choose`` (the model's own choice under the grammar, from
    ``logits_at`` the position before it; ``start``: the one before the chain) is that token.
    Returns how many were kept, and how many guesses were verified and kept."""
    import torch

    kept = drafted = accepted = 0
    for token, guessed in zip(chain.tokens, chain.guessed):
        logprob = 0.0  # forced: the grammar's choice, not the model's
        if guessed:
            logprobs = torch.log_softmax(logits_at[start + kept].float(), -1)
            drafted += 1
            if choose(logprobs, row) != token:
                break
            accepted += 1
            logprob = float(logprobs[token])
        state.write(row, token, logprob)
        kept += 1
    if kept == len(chain.tokens) and chain.ends:
        state.end(row)
    return kept, drafted, accepted


def pass_width(inputs: Sequence[int], guessed: Sequence[Sequence[bool]], overhead: float, accept: float) -> int:
    """How many positions a pass gives each row: the width with the most expected progress per
    cost. A row reads its input whole, then as much of its chain as fits; a chain token counts
    as the chance that it is kept (``accept`` to the power of the guesses up to it and with it),
    and a pass costs ``overhead`` plus rows times width. Every position costs every row, so a
    long chain that will likely be cut short by a refused guess waits for a later pass instead
    of widening this one for all."""
    longest = max(size + len(flags) for size, flags in zip(inputs, guessed))
    if not longest:  # nothing to read
        return 0
    gain = np.zeros(longest + 1)  # gain[w]: expected tokens kept at width w, not at w - 1
    for size, flags in zip(inputs, guessed):
        gain[size + 1:size + len(flags) + 1] += accept ** np.cumsum(flags, dtype=np.float64)
    widths = np.arange(max(max(inputs), 1), longest + 1)
    progress = sum(inputs) + np.cumsum(gain)[widths]
    rates = progress if np.isinf(overhead) else progress / (overhead + len(inputs) * widths)
    # the narrowest of the best (equal rates can differ in their last bits)
    return int(widths[np.flatnonzero(rates >= rates.max() * (1 - 1e-9))[0]])
