"""Batched, constrained, scored decoding of SeqGPT answers: the loop that ties the parts together.

What ``generate()`` cannot do for us, each part in a module of its own:

- shared prompt prefixes and passes of like lengths (``prompt_encoding``), forward passes
  with an in-place KV cache and the LM head on the positions read only (``model_calls``);
- answer grammars asked about the few best tokens of each row (``matcher``, ``search``), and
  scores: each generated token keeps the log-probability the model gave it, so a span's
  probability is the product over the tokens that wrote it;
- greedy and beam search (``search``), jump-forward and speculation (``speculation``), the
  search for every span above a probability beside the greedy answer (``span_search``);
- scoring given answers instead of generating them (``continuations``).

Rows of one pass append different numbers of tokens (a prompt's rest, a pick, a chain of
forced and guessed tokens): the rows are aligned right, a short row starting with holes.
Holes cost compute but never change an answer: the mask leaves them out, and positions
(Llama) and ALiBi distances (BLOOM) count real tokens only. So a pass is only as wide as pays
(``speculation.pass_width``): where a column costs every row a token (a CPU, where a pass's
overhead is a few dozen tokens or fewer) a long chain likely to be cut short by a refused
guess waits for a later pass; on a GPU every chain is read whole. Guesses a row keeps seldom
are priced by the share kept so far in the call. Rows whose answer is complete leave the
batch (the cache is compacted).
"""
from functools import partial
from typing import Hashable, List, Optional, Sequence

import numpy as np

from ..models.shared import SharedModel
from ..text.token_bytes import text_tokens
from .answers import Answer, Query
from .batch_state import BatchState, Row
from .continuations import continuation_logprobs
from .matcher import Matchers
from .model_calls import ModelCalls
from .prompt_encoding import batches, split_prefixes
from .search import beam_picks, greedy_choice, greedy_picks
from .settings import Decoding
from .span_search import search_width, span_search_picks
from .speculation import Chain, pass_width, plan, verify_chain

DEFAULT_CANDIDATES = 8


class Decoder:
    """Answers many queries as ``decoding`` says (:class:`~spacy_seqgpt.decoding.settings.Decoding`):
    in batches of ``batch_size`` prompts (times ``num_beams`` rows), ``constrained`` aside (the
    queries bring their grammars)."""

    def __init__(self, shared: SharedModel, decoding: Decoding = Decoding(), *, candidates: int = DEFAULT_CANDIDATES,
                 share_prefixes: bool = True):
        self.shared = shared
        self.decoding = decoding
        num_beams = decoding.num_beams
        # Both are greedy decoding's: beams go step by step.
        self.jump_forward = decoding.jump_forward and num_beams == 1
        self.speculate = decoding.speculate and num_beams == 1
        self.jumped = 0  # tokens the grammar wrote (jump-forward), not asked of the model
        self.drafted = self.accepted = 0  # draft tokens verified, and kept (speculation)
        self.candidates = max(candidates, 2 * num_beams)
        self.calls = ModelCalls(shared)
        self.share_prefixes = share_prefixes and not self.calls.prompt_mode  # a prefix-LM reads prompts whole
        self._overhead: Optional[float] = None
        self._floor: Optional[float] = None  # the span search's, for the queries being decoded
        self.token_bytes = shared.token_table
        self._to_tokens = partial(text_tokens, shared.tokenizer, self.token_bytes)  # text forced or guessed -> tokens

    @property
    def pass_overhead(self) -> float:
        """What one more forward pass costs, in tokens: the model's device's (``SharedModel.costs``) unless set."""
        return self.shared.costs.overhead if self._overhead is None else self._overhead

    @pass_overhead.setter
    def pass_overhead(self, tokens: float) -> None:
        self._overhead = tokens

    def decode(self, queries: Sequence[Query], *, progress: bool = False, span_floor: float = 0.0) -> List[Answer]:
        """The answers to ``queries``; with ``span_search`` and a ``span_floor`` above 0, each
        extraction answer also holds the spans at least that likely (``Answer.found``); a floor of
        0 asks for no search (classification)."""
        from tqdm import tqdm

        if not 0 <= span_floor <= 1:
            raise ValueError(f"the span search's floor is a threshold, a probability from 0 to 1 (got {span_floor!r}).")
        self._floor = span_floor if self.decoding.span_search and span_floor > 0 else None
        if not queries:
            return []
        ids = self.shared.tokenizer([query.prompt for query in queries])["input_ids"]
        keys = self._group_keys(queries)
        answers: List[Optional[Answer]] = [None] * len(queries)
        for members in tqdm(list(batches(keys, ids, self.decoding.batch_size)), desc="decode", unit="batch",
                            disable=not progress):
            batch = self._decode_batch([ids[i] for i in members], [queries[i] for i in members],
                                       [keys[i] for i in members])
            for index, answer in zip(members, batch):
                answers[index] = answer
        return answers

    def continuation_logprobs(self, prompts: Sequence[str], continuations: Sequence[List[int]]) -> np.ndarray:
        """``(len(prompts), len(continuations))``: see ``continuations.continuation_logprobs``."""
        return continuation_logprobs(self.calls, prompts, continuations, batch_size=self.decoding.batch_size,
                                     overhead=self.pass_overhead)

    def _group_keys(self, queries: Sequence[Query]) -> List[Hashable]:
        """Queries with one key share a prefix; a query without a group (or with sharing off) is alone."""
        return [(0, query.group) if self.share_prefixes and query.group is not None else (1, index)
                for index, query in enumerate(queries)]

    def _decode_batch(self, ids: List[List[int]], queries: List[Query], keys: List[Hashable]) -> List[Answer]:
        import torch

        group_of, prefixes = split_prefixes(ids, keys)
        beams = self.decoding.num_beams
        queries_of_rows = [query for query in range(len(queries)) for _ in range(beams)]
        # prefix-LM only; no sharing then, so each prefix is a whole prompt
        prompt_lengths = (torch.tensor([len(ids[query]) for query in queries_of_rows], device=self.shared.device)
                          if self.calls.prompt_mode else None)
        rows = [Row(query, score=0.0 if i % beams == 0 else -np.inf) for i, query in enumerate(queries_of_rows)]
        state = BatchState(rows, Matchers.start([queries[query].grammar for query in queries_of_rows],
                                                self.token_bytes), None, None, prompt_lengths)
        # The prompts' rests are the rows' first inputs; each row's chain (jump-forward and guesses:
        # the opening "label: " and what may follow it) is read in the same pass.
        chains = self._plan(state)
        row_inputs = [ids[query][prefixes[group_of[query]][1]:] for query in queries_of_rows]
        room = max(len(row_input) + len(chain.tokens) for row_input, chain in zip(row_inputs, chains))
        room += 2 * self.decoding.max_new_tokens
        with torch.inference_mode():
            # a shared prefix's own last logits are never read: each of its prompts reads on
            logits, state.cache, mask, cache_row = self.calls.encode(
                [ids[q][:n] for q, n in prefixes], room, self.pass_overhead,
                wanted=(np.bincount(group_of) == 1).tolist())
            to_rows = cache_row[[group_of[query] for query in queries_of_rows]]
            state.cache.reorder_cache(to_rows)
            state.mask, logits = mask[to_rows], logits[to_rows]
            for step in range(self.decoding.max_new_tokens + 1):
                if step:  # each row picks its next token
                    chains = self._step(torch.log_softmax(logits.float(), -1), state, len(logits))
                    if chains is None:
                        break
                    row_inputs = [[row.tokens[-1]] for row in state.rows]
                elif not any(row_inputs) and not any(chain.tokens for chain in chains):
                    continue  # every prompt was read whole by the prefix pass
                logits = self._extend(row_inputs, chains, None if step else logits, state)
        return state.answers(len(queries), self.token_bytes)

    def _step(self, logprobs, state: BatchState, cache_size: int) -> Optional[List[Chain]]:
        """Each row picks its next token; rows whose answer ended leave. The chains of the rows
        going on, or None when none does."""
        new_rows = None
        if self._floor is not None:
            picks, new_rows = span_search_picks(logprobs, state, self.candidates,
                                                search_width(self._floor, self.candidates), self.token_bytes.eos_id,
                                                self.decoding.max_new_tokens, self._floor, self.token_bytes)
        elif self.decoding.num_beams == 1:
            picks = greedy_picks(logprobs, state, self.candidates, self.token_bytes.eos_id,
                                 self.decoding.max_new_tokens)
        else:
            picks = beam_picks(logprobs, state, self.candidates, self.token_bytes.eos_id, self.decoding.num_beams)
        if not picks:
            state.rows = []
            return None
        source = state.step(picks, new_rows)
        chains = self._plan(state)
        continuing = []
        for row, chain in enumerate(chains):
            if chain.ends and not chain.tokens:  # the grammar ends the answer here
                state.end(row)
            elif len(state.rows[row].tokens) >= self.decoding.max_new_tokens:  # out of new tokens: no pass for
                state.out_of_tokens(state.rows[row])  # logits it would never read
            else:
                continuing.append(row)
        if not continuing:
            state.rows = []
            return None
        state.keep(continuing, source[continuing], cache_size)
        return [chains[row] for row in continuing]

    def _plan(self, state: BatchState) -> List[Chain]:
        return plan(state, jump_forward=self.jump_forward, speculate=self.speculate,
                    draft_tokens=self.decoding.draft_tokens, max_new_tokens=self.decoding.max_new_tokens,
                    to_tokens=self._to_tokens, stop_at_values=self._floor is not None)

    def _extend(self, row_inputs, chains: List[Chain], before, state: BatchState):
        """One pass: each row reads its input (the rest of its prompt, or its pick) and then its
        chain, aligned right (a shorter row starts with holes the mask leaves out). Of each chain
        what greedy decoding would have written is kept (``speculation.verify_chain``), the rest become
        holes. Returns each row's logits after what it kept. ``before``: the logits before the
        pass, for rows with no input (their chain's first token follows them)."""
        import torch

        width = pass_width([len(row_input) for row_input in row_inputs], [chain.guessed for chain in chains],
                           self.pass_overhead, (self.accepted + 1) / (self.drafted + 2))
        for row_input, chain in zip(row_inputs, chains):
            if len(row_input) + len(chain.tokens) > width:  # the rest waits for a later pass
                chain.cut(width - len(row_input))
        lengths = [len(row_input) + len(chain.tokens) for row_input, chain in zip(row_inputs, chains)]
        mask = state.mask
        step_ids = torch.full((len(state), width), self.shared.tokenizer.pad_token_id, dtype=torch.long)
        step_mask = torch.zeros((len(state), width), dtype=mask.dtype)
        for row, (row_input, chain) in enumerate(zip(row_inputs, chains)):
            if lengths[row]:
                step_ids[row, width - lengths[row]:] = torch.tensor([*row_input, *chain.tokens])
                step_mask[row, width - lengths[row]:] = 1
        mask = state.mask = torch.cat([mask, step_mask.to(mask.device)], 1)
        # Read: the logits before each guessed token (to verify it), and at the end; a row with
        # no input verifies a first guess from ``before``. starts[row]: the position before the
        # chain's first token.
        starts = [width - len(chain.tokens) - 1 for chain in chains]
        read = [[starts[row] + j for j, guess in enumerate(chain.guessed) if guess and j + len(row_inputs[row])]
                + [width - 1] for row, chain in enumerate(chains)]
        if all(positions == [width - 1] for positions in read):
            read_logits, _ = self.calls.forward(step_ids.to(mask.device), mask, state.cache, state.prompt_lengths)
            read_logits = read_logits[:, -1:]
        else:
            read_logits, _ = self.calls.forward(step_ids.to(mask.device), mask, state.cache, state.prompt_lengths,
                                                keep=width, read=read)
        logits, choose = [], self._choose(state)
        for row, chain in enumerate(chains):
            at = dict(zip(read[row], read_logits[row]))
            if not row_inputs[row]:
                at[starts[row]] = before[row]
            kept, drafted, accepted = verify_chain(at, starts[row], state, row, chain, choose)
            self._count(kept - accepted, drafted, accepted)
            if kept < len(chain.tokens):  # the rest of the chain becomes holes
                mask[row, mask.shape[1] - len(chain.tokens) + kept:] = 0
            logits.append(at[starts[row] + kept])
        return torch.stack(logits)

    def _choose(self, state: BatchState):
        return lambda logprobs, row: greedy_choice(logprobs, state, row, self.candidates, self.token_bytes.eos_id)

    def _count(self, jumped: int, drafted: int, accepted: int) -> None:
        self.jumped += jumped
        self.drafted += drafted
        self.accepted += accepted
        self.shared.costs.drafted += drafted
        self.shared.costs.accepted += accepted
