"""Batched, constrained, scored decoding of SeqGPT answers, sharing each document's prompt prefix.

What ``generate()`` cannot do for us, in one loop:

- **Shared prefixes.** The prompts of one group (a window of a document asked about several
  label chunks) start with the same tokens. Those are encoded once; their KV cache is copied
  to each prompt's rows, and only the rest of each prompt is encoded on top. Rows then hold
  padding in the middle (``[pad prefix | pad rest]``): the attention mask says which columns
  are real, and positions (Llama) or ALiBi distances (BLOOM) count real tokens only.
- **Constraints.** A grammar per prompt (``kernels/constraints.pyx``) is asked about the few
  best tokens of each row; only if none is allowed is the whole vocabulary searched.
- **Scores.** Each generated token keeps the log-probability the model gave it, so a span's
  probability is the product over the tokens that wrote it.
- **Prefix-LM models** (``unmask(..., mode="prompt")``): every call passes each row's prompt
  length, so the prompt attends both ways and the generated tokens causally. The prompt
  must then be encoded whole, so prefixes are not shared.
- Rows whose answer is complete leave the batch (the cache is compacted), and the LM head
  runs on the last position only.
"""
import codecs
import inspect
from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np

from ..kernels.constraints import STATE_INTS, TokenBytes, advance, allowed, best_allowed
from ..models.adapters import base_model
from ..models.loading import SharedModel
from .token_bytes import token_pieces

DEFAULT_CANDIDATES = 8


@dataclass
class Query:
    """One prompt; queries with equal ``group`` share their common leading tokens."""

    prompt: str
    group: Hashable = None
    grammar: object = None  # a kernels.constraints grammar, or None for free decoding


@dataclass
class Answer:
    """A generated answer: its text and each token's log-probability (end-of-sequence excluded).
    An answer made from text alone has no tokens, and every part of it probability 1.
    ``complete`` is False when ``max_new_tokens`` cut the answer short."""

    text: str
    tokens: List[int] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    token_ends: List[int] = field(default_factory=list)  # byte offset in the UTF-8 answer where each token ends
    complete: bool = True

    def probability(self, start: int, end: int) -> float:
        """Probability of the tokens that wrote characters ``start:end`` of ``text``."""
        byte_start = len(self.text[:start].encode("utf8"))
        byte_end = byte_start + len(self.text[start:end].encode("utf8"))
        total, token_start = 0.0, 0
        for token_end, logprob in zip(self.token_ends, self.logprobs):
            if token_start < byte_end and token_end > byte_start:
                total += logprob
            token_start = token_end
        return float(np.exp(total))


@dataclass
class _Row:
    query: int
    tokens: List[int] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    score: float = 0.0  # sum of log-probabilities (beam search)
    ended: bool = False  # wrote end-of-sequence


def vocabulary_bytes(shared: SharedModel) -> TokenBytes:
    """The model's token table for grammars, built once per loaded model."""
    table = getattr(shared, "_token_bytes", None)
    if table is None:
        size = shared.model.get_output_embeddings().weight.shape[0]
        table = TokenBytes(token_pieces(shared.tokenizer, max(size, len(shared.tokenizer))),
                           shared.tokenizer.eos_token_id)
        shared._token_bytes = table
    return table


def prefix_lm_layers(base) -> bool:
    """Whether ``base`` (unwrapped) was unmasked with ``mode="prompt"`` (its calls need prompt lengths)."""
    state = getattr(base, "seqgpt_unmask", None)
    return state is not None and "prompt" in state.modes.values()


class Decoder:
    """Answers many queries in batches of ``batch_size`` prompts (times ``num_beams`` rows)."""

    def __init__(self, shared: SharedModel, *, batch_size: int, max_new_tokens: int, num_beams: int = 1,
                 candidates: int = DEFAULT_CANDIDATES, share_prefixes: bool = True, jump_forward: bool = False):
        self.shared = shared
        self.jump_forward = jump_forward and num_beams == 1
        self.jumped = 0  # tokens written by jump-forward, not asked of the model one by one
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.candidates = max(candidates, 2 * num_beams)
        base = base_model(shared.model)
        self.prompt_mode = prefix_lm_layers(base)
        self.share_prefixes = share_prefixes and not self.prompt_mode
        self._positions = "position_ids" in inspect.signature(base.forward).parameters
        self.vocab = vocabulary_bytes(shared)

    def decode(self, queries: Sequence[Query], *, progress: bool = False) -> List[Answer]:
        from tqdm import tqdm

        if not queries:
            return []
        ids = self.shared.tokenizer([query.prompt for query in queries])["input_ids"]
        answers: List[Optional[Answer]] = [None] * len(queries)
        batches = list(self._batches(queries, ids))
        for members in tqdm(batches, desc="decode", unit="batch", disable=not progress):
            for index, answer in zip(members, self._decode_batch([ids[i] for i in members],
                                                                 [queries[i] for i in members])):
                answers[index] = answer
        return answers

    def _batches(self, queries: Sequence[Query], ids: Sequence[List[int]]):
        """Whole groups, longest prompts first, up to ``batch_size`` queries a batch (one group may exceed it)."""
        groups: Dict[Hashable, List[int]] = {}
        for index, query in enumerate(queries):
            groups.setdefault(self._group_key(index, query), []).append(index)
        ordered = sorted(groups.values(), key=lambda members: -max(len(ids[i]) for i in members))
        batch: List[int] = []
        for members in ordered:
            if batch and len(batch) + len(members) > self.batch_size:
                yield batch
                batch = []
            batch.extend(members)
        if batch:
            yield batch

    def _group_key(self, index: int, query: Query) -> Hashable:
        """Queries with one key share a prefix; a query without a group (or with sharing off) is alone."""
        return (0, query.group) if self.share_prefixes and query.group is not None else (1, index)

    # -- one batch --------------------------------------------------------------------------

    def _decode_batch(self, ids: List[List[int]], queries: List[Query]) -> List[Answer]:
        import torch

        device = self.shared.device
        group_of, prefixes = self._split_prefixes(ids, queries)
        beams = self.num_beams
        rows = [query for query in range(len(queries)) for _ in range(beams)]
        # prefix-LM only; no sharing then, so each prefix is a whole prompt
        prompt_lengths = torch.tensor([len(ids[query]) for query in rows], device=device) if self.prompt_mode else None
        with torch.inference_mode():
            prefix_ids, mask = self._left_pad([ids[q][:n] for q, n in prefixes], device)
            logits, cache = self._forward(prefix_ids, mask, None, torch.tensor([n for _, n in prefixes], device=device)
                                          if self.prompt_mode else None)
            to_rows = torch.tensor([group_of[query] for query in rows], device=device)
            cache.reorder_cache(to_rows)
            mask = mask[to_rows]
            rests = [ids[query][prefixes[group_of[query]][1]:] for query in rows]
            logits = logits[to_rows]
            if any(rests):  # rows without a rest of their own keep the prefix pass's logits
                rest_ids, rest_mask = self._left_pad(rests, device)
                mask = torch.cat([mask, rest_mask], 1)
                rest_logits, cache = self._forward(rest_ids, mask, cache, prompt_lengths)
                own = torch.tensor([bool(rest) for rest in rests], device=device)
                logits = torch.where(own[:, None], rest_logits, logits)
            grammars = [queries[query].grammar for query in rows]
            states = self._initial_states(grammars)
            live = [_Row(query, score=0.0 if i % beams == 0 else -np.inf) for i, query in enumerate(rows)]
            finished: Dict[int, List[Tuple[float, _Row]]] = {}
            for _ in range(self.max_new_tokens):
                logprobs = torch.log_softmax(logits.float(), -1)
                picks = (self._greedy if beams == 1 else self._beam_step)(logprobs, live, grammars, states, finished)
                if not picks:
                    live = []
                    break
                source = np.array([row for row, _, _ in picks], dtype=np.int64)
                tokens = np.array([token for _, token, _ in picks], dtype=np.int64)
                states = advance(grammars, *states, source, tokens, self.vocab) if states else None
                live = [_Row(live[row].query, live[row].tokens + [token], live[row].logprobs + [lp],
                             live[row].score + lp) for row, token, lp in picks]
                grammars = [grammars[row] for row in source]
                if not np.array_equal(source, np.arange(len(logits))):
                    index = torch.from_numpy(source).to(device)
                    cache.reorder_cache(index)
                    mask = mask[index]
                    prompt_lengths = prompt_lengths[index] if prompt_lengths is not None else None
                forced = self._forced(live, grammars, states) if self.jump_forward and states else None
                if not forced or not any(forced):
                    mask = torch.cat([mask, mask.new_ones((len(picks), 1))], 1)
                    logits, cache = self._forward(torch.from_numpy(tokens).to(device)[:, None], mask, cache,
                                                  prompt_lengths)
                    continue
                # Jump-forward: each row's pick and the text its grammar forces next, in one pass
                width = 1 + max(len(more) for more in forced)
                step_ids = torch.full((len(picks), width), self.shared.tokenizer.pad_token_id, dtype=torch.long)
                step_mask = torch.zeros((len(picks), width), dtype=mask.dtype)
                for row, (token, more) in enumerate(zip(tokens.tolist(), forced)):
                    step_ids[row, : 1 + len(more)] = torch.tensor([token, *more])
                    step_mask[row, : 1 + len(more)] = 1
                mask = torch.cat([mask, step_mask.to(device)], 1)
                every, cache = self._forward(step_ids.to(device), mask, cache, prompt_lengths, every_position=True)
                every = torch.log_softmax(every.float(), -1)
                # Keep the forced tokens the model would have chosen itself, as a step by step
                # decoder would; from the first it would not, the columns become holes in the mask.
                kept = []
                for row, more in enumerate(forced):
                    n = 0
                    while n < len(more) and self._choice(every[row, n], grammars, states, row) == more[n]:
                        states = self._advance_row(grammars, states, row, more[n])
                        n += 1
                    if n:
                        self.jumped += n
                        lps = every[row, torch.arange(n), torch.tensor(more[:n])].tolist()
                        live[row] = _Row(live[row].query, live[row].tokens + more[:n], live[row].logprobs + lps,
                                         live[row].score + sum(lps))
                    mask[row, mask.shape[1] - width + 1 + n:] = 0
                    kept.append(n)
                logits = every[torch.arange(len(picks)), torch.tensor(kept)]
        for row in live:  # out of new tokens: the rows still going are answers too
            finished.setdefault(row.query, []).append((self._normalized(row), row))
        return [self._answer(max(finished.get(query) or [(0.0, _Row(query))], key=lambda item: item[0])[1])
                for query in range(len(queries))]

    def _split_prefixes(self, ids, queries):
        """Each query's group index, and per group (first query, prefix length) to encode once."""
        group_of: List[int] = []
        prefixes: List[Tuple[int, int]] = []
        first: Dict[Hashable, int] = {}
        for query, tokens in enumerate(ids):
            key = self._group_key(query, queries[query])
            if key not in first:
                first[key] = len(prefixes)
                prefixes.append((query, len(tokens)))
            group = first[key]
            group_of.append(group)
            head, length = prefixes[group]
            length = min(length, _common_length(ids[head], tokens))
            prefixes[group] = (head, length)
        # A prompt that shares its prefix keeps at least one token of its own to predict from;
        # a prompt alone in its group is encoded whole and predicts from the prefix pass.
        members = np.bincount(group_of, minlength=len(prefixes))
        for query, tokens in enumerate(ids):
            head, length = prefixes[group_of[query]]
            if members[group_of[query]] > 1:
                prefixes[group_of[query]] = (head, min(length, len(tokens) - 1))
        return group_of, prefixes

    def _left_pad(self, sequences: List[List[int]], device):
        import torch

        width = max(len(seq) for seq in sequences)
        pad = self.shared.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(seq)) + seq for seq in sequences], device=device)
        mask = torch.tensor([[0] * (width - len(seq)) + [1] * len(seq) for seq in sequences], device=device)
        return ids, mask

    def _forward(self, input_ids, mask, cache, prompt_lengths, *, every_position: bool = False):
        kwargs = {"input_ids": input_ids, "attention_mask": mask, "past_key_values": cache, "use_cache": True,
                  "logits_to_keep": 0 if every_position else 1}
        if self._positions:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
        if prompt_lengths is not None:
            kwargs["prompt_lengths"] = prompt_lengths
        out = self.shared.model(**kwargs)
        return (out.logits if every_position else out.logits[:, -1]), out.past_key_values

    # -- scoring given answers ---------------------------------------------------------------

    def continuation_logprobs(self, prompts: Sequence[str], continuations: Sequence[List[int]]) -> np.ndarray:
        """``(len(prompts), len(continuations))``: the log-probability of each continuation's
        tokens after each prompt. A prompt is encoded once; its continuations are then scored
        together in one forward pass on copies of its KV cache."""
        import torch

        if any(not tokens for tokens in continuations):
            raise ValueError("every continuation to score needs at least one token")
        out = np.zeros((len(prompts), len(continuations)), dtype=np.float64)
        if not len(prompts):  # Docs with no text to window
            return out
        ids = self.shared.tokenizer(list(prompts))["input_ids"]
        device, n = self.shared.device, len(continuations)
        # After its first token (predicted from the prompt's last position), continuation c is
        # read as inputs c[:-1] predicting targets c[1:], right-padded to one width.
        width = max(len(tokens) for tokens in continuations) - 1
        pad = [[0] * (width + 1 - len(tokens)) for tokens in continuations]
        inputs = torch.tensor([tokens[:-1] + extra for tokens, extra in zip(continuations, pad)], device=device)
        targets = torch.tensor([tokens[1:] + extra for tokens, extra in zip(continuations, pad)], device=device)
        real = torch.tensor([[1] * (len(tokens) - 1) + extra for tokens, extra in zip(continuations, pad)],
                            device=device)
        per_batch = max(1, self.batch_size // n)
        for first in range(0, len(ids), per_batch):
            batch = ids[first:first + per_batch]
            lengths = torch.tensor([len(tokens) for tokens in batch], device=device)
            with torch.inference_mode():
                prompt_ids, mask = self._left_pad(batch, device)
                last, cache = self._forward(prompt_ids, mask, None, lengths if self.prompt_mode else None)
                totals = torch.log_softmax(last.float(), -1)[:, [tokens[0] for tokens in continuations]]
                if width:
                    rows = torch.arange(len(batch), device=device).repeat_interleave(n)
                    cache.reorder_cache(rows)
                    logits, _ = self._forward(inputs.repeat(len(batch), 1),
                                              torch.cat([mask[rows], real.repeat(len(batch), 1)], 1), cache,
                                              lengths[rows] if self.prompt_mode else None, every_position=True)
                    picked = torch.log_softmax(logits.float(), -1).gather(-1, targets.repeat(len(batch), 1)[..., None])
                    totals = totals + (picked[..., 0] * real.repeat(len(batch), 1)).sum(-1).view(len(batch), n)
            out[first:first + len(batch)] = totals.cpu().numpy()
        return out

    # -- choosing tokens ------------------------------------------------------------------------

    def _initial_states(self, grammars):
        if all(grammar is None for grammar in grammars):
            return None
        width = max(grammar.n_words for grammar in grammars if grammar is not None) or 1
        ints = np.zeros((len(grammars), STATE_INTS), dtype=np.int64)
        bits = np.zeros((len(grammars), width), dtype=np.uint64)
        for row, grammar in enumerate(grammars):
            if grammar is not None:
                row_ints, row_bits = grammar.initial_state()
                ints[row], bits[row, : len(row_bits)] = row_ints, row_bits
        return ints, bits

    def _candidates(self, logprobs, grammars, states):
        """Per row: (token, log-probability) pairs the row may write, best first."""
        k = min(self.candidates, logprobs.shape[-1])
        top_lp, top_ids = (tensor.cpu().numpy() for tensor in logprobs.topk(k, -1))
        if states is None:
            return [list(zip(ids.tolist(), lps.tolist())) for ids, lps in zip(top_ids, top_lp)]
        ok = allowed(grammars, states[0], states[1], np.ascontiguousarray(top_ids, dtype=np.int64), self.vocab)
        out = []
        for row, (ids, lps, fits) in enumerate(zip(top_ids, top_lp, ok)):
            pairs = [(int(t), float(lp)) for t, lp, fit in zip(ids, lps, fits) if fit]
            if not pairs and grammars[row] is not None:
                scores = logprobs[row].cpu().numpy()
                token = best_allowed(grammars[row], states[0][row], states[1][row], scores, self.vocab)
                # A grammar with no way on (an unusual vocabulary): end the answer here.
                token = token if token >= 0 else self.vocab.eos_id
                pairs = [(token, float(scores[token]))]
            out.append(pairs)
        return out

    def _greedy(self, logprobs, live, grammars, states, finished):
        picks = []
        for row, pairs in enumerate(self._candidates(logprobs, grammars, states)):
            token, lp = pairs[0]
            if len(live[row].tokens) >= self.max_new_tokens:  # jumped forward to the limit
                finished[live[row].query] = [(0.0, live[row])]
            elif token == self.vocab.eos_id:
                live[row].ended = True
                finished[live[row].query] = [(0.0, live[row])]
            else:
                picks.append((row, token, lp))
        return picks

    def _beam_step(self, logprobs, live, grammars, states, finished):
        """Standard beam search: per query the ``num_beams`` best continuations of its beams;
        a hypothesis ending here is scored by its mean log-probability (length penalty 1)."""
        beams = self.num_beams
        by_query: Dict[int, List[Tuple[float, int, int, float]]] = {}
        for row, pairs in enumerate(self._candidates(logprobs, grammars, states)):
            for token, lp in pairs:
                by_query.setdefault(live[row].query, []).append((live[row].score + lp, row, token, lp))
        picks = []
        for query, options in by_query.items():
            done = finished.setdefault(query, [])
            kept = []
            for total, row, token, lp in sorted(options, key=lambda option: -option[0]):
                if not np.isfinite(total):
                    continue
                if token == self.vocab.eos_id:
                    ended = _Row(query, live[row].tokens, live[row].logprobs, total, ended=True)
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

    # -- jump-forward -------------------------------------------------------------------------

    def _forced(self, live, grammars, states) -> List[List[int]]:
        """Per row, the tokens its grammar forces next (text no other answer could write), as
        the tokenizer splits the answer so far with them: the model wrote its answers in that
        split in training. Trailing whitespace is left to the model (": " then " Paris" is one
        token there), and so is all of it when the split of the answer so far is not the row's
        own, or the split writes other bytes; at most ``max_new_tokens`` tokens in all."""
        out = []
        for row, grammar in enumerate(grammars):
            data, _ = grammar.forced(states[0][row], states[1][row]) if grammar is not None else (b"", False)
            room = self.max_new_tokens - len(live[row].tokens)
            out.append(self._forced_tokens(live[row].tokens, data.rstrip(b" "))[:room] if data and room > 0 else [])
        return out

    def _forced_tokens(self, tokens: List[int], data: bytes) -> List[int]:
        try:
            written = b"".join(self.vocab.piece(token) or b"" for token in tokens).decode("utf8")
            text = codecs.getincrementaldecoder("utf8")().decode(data)  # whole characters only
        except UnicodeDecodeError:
            return []
        if not text:
            return []
        ids = self.shared.tokenizer(written + text, add_special_tokens=False)["input_ids"]
        more = ids[len(tokens):]
        if ids[: len(tokens)] != tokens or b"".join(self.vocab.piece(t) or b"\xff" for t in more) != text.encode():
            return []
        return more

    def _choice(self, logprobs, grammars, states, row: int) -> int:
        """The token a greedy step would write for row ``row`` given its ``logprobs``."""
        return self._candidates(logprobs[None], [grammars[row]], (states[0][row:row + 1], states[1][row:row + 1]))[0][0][0]

    def _advance_row(self, grammars, states, row: int, token: int):
        """``states`` with row ``row`` moved on by ``token`` (the other rows as they are)."""
        ints, bits = states
        one = advance([grammars[row]], ints[row:row + 1].copy(), bits[row:row + 1].copy(), np.zeros(1, dtype=np.int64),
                      np.array([token], dtype=np.int64), self.vocab)
        ints[row], bits[row] = one[0][0], one[1][0]
        return ints, bits

    @staticmethod
    def _normalized(row: _Row) -> float:
        return row.score / max(len(row.tokens), 1)

    def _answer(self, row: _Row) -> Answer:
        pieces = [self.vocab.piece(token) or b"" for token in row.tokens]
        ends = np.cumsum([len(piece) for piece in pieces], dtype=np.int64).tolist()
        data = b"".join(pieces)
        # An answer cut short may end inside a character: that part is left out, not replaced.
        text = codecs.getincrementaldecoder("utf8")(errors="replace").decode(data, final=row.ended)
        return Answer(text, row.tokens, row.logprobs, ends, row.ended)


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
