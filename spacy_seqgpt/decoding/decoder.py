"""Batched, constrained, scored decoding of SeqGPT answers, sharing each document's prompt prefix.

What ``generate()`` cannot do for us, in one loop:

- **Shared prefixes.** The prompts of one group (a window of a document asked about several
  label chunks) start with the same tokens. Those are encoded once; their KV cache is copied
  to each prompt's rows, and only the rest of each prompt is encoded on top. Rows then hold
  padding in the middle (``[pad prefix | pad rest]``): the attention mask says which columns
  are real, and positions (Llama) or ALiBi distances (BLOOM) count real tokens only.
- **Passes of like lengths.** Padding costs as much as text: prompts (or prefixes) of unlike
  lengths are encoded in several passes, split where that computes fewer tokens
  (``length_buckets``), and their caches are stacked, aligned right, into one.
- **Constraints.** A grammar per prompt (``kernels/constraints.pyx``) is asked about the few
  best tokens of each row; only if none is allowed is the whole vocabulary searched.
- **Scores.** Each generated token keeps the log-probability the model gave it, so a span's
  probability is the product over the tokens that wrote it.
- **Prefix-LM models** (``unmask(..., mode="prompt")``): every call passes each row's prompt
  length, so the prompt attends both ways and the generated tokens causally. The prompt
  must then be encoded whole, so prefixes are not shared.
- **Jump-forward** (greedy): where the grammar allows one continuation only (the next
  ``label: `` after a line break, the line break after ``None``, the end), the decoder writes
  it without asking the model: appended after the row's pick in the same forward pass, split
  as the tokenizer splits the answer (as a model trained on tokenized answers writes it), or
  the row simply ends. The opening ``label: `` (and what may be guessed after it) is read
  with the rest of the prompt. Forced tokens get log-probability 0: the grammar chose them,
  and no span contains them.
- **Speculation** (greedy): inside a span, the input text that follows the span so far is a
  draft of its next ``draft_tokens`` tokens, appended in the same pass; the longest start of
  it that greedy decoding would have written (the model's own choice under the grammar at
  each position) is kept, the rest become holes in the mask, so the answer and its
  log-probabilities are step-by-step decoding's.
- Rows of one pass append different numbers of tokens: the rows are aligned right, a short
  row starting with holes. Holes cost compute but never change an answer: the mask leaves
  them out, and positions (Llama) and ALiBi distances (BLOOM) count real tokens only.
  So a pass is only as wide as pays (``pass_width``): where a column costs every row a token
  (a CPU, where a pass's overhead is a few dozen tokens or fewer) a long chain likely to be
  cut short by a refused guess waits for a later pass; on a GPU every chain is read whole.
  Guesses a row keeps seldom are priced by the share kept so far in the call.
- The KV cache is written in place (``kv_cache.PreallocatedCache``); rows whose answer is
  complete leave the batch (the cache is compacted), and the LM head runs on the positions
  that are read only.
"""
import codecs
import inspect
from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np

from ..kernels.constraints import STATE_INTS, TokenBytes, advance, allowed, best_allowed
from ..models.adapters import base_model
from ..models.loading import SharedModel
from .kv_cache import PreallocatedCache, cache_keyword, returned_cache, supports_preallocation
from .pass_costs import pass_costs
from .token_bytes import token_pieces

DEFAULT_CANDIDATES = 8
DEFAULT_DRAFT_TOKENS = 8


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
class _Chain:
    """What a row appends after its pick in one pass: tokens, which of them are guesses the
    model must confirm, and whether the answer ends after the last."""
    tokens: List[int] = field(default_factory=list)
    guessed: List[bool] = field(default_factory=list)
    ends: bool = False

    def add(self, tokens: List[int], *, guessed: bool) -> None:
        self.tokens += tokens
        self.guessed += [guessed] * len(tokens)


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
                 candidates: int = DEFAULT_CANDIDATES, share_prefixes: bool = True, jump_forward: bool = True,
                 speculate: bool = True, draft_tokens: int = DEFAULT_DRAFT_TOKENS):
        self.shared = shared
        # Both are greedy decoding's: beams go step by step.
        self.jump_forward = jump_forward and num_beams == 1
        self.speculate = speculate and num_beams == 1 and draft_tokens > 0
        self.draft_tokens = draft_tokens
        self.jumped = 0  # tokens the grammar wrote (jump-forward), not asked of the model
        self.drafted = self.accepted = 0  # draft tokens verified, and kept (speculation)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.candidates = max(candidates, 2 * num_beams)
        base = base_model(shared.model)
        self.prompt_mode = prefix_lm_layers(base)
        self.share_prefixes = share_prefixes and not self.prompt_mode
        self._positions = "position_ids" in inspect.signature(base.forward).parameters
        self._cache_keyword = cache_keyword(base)
        self._preallocate = supports_preallocation(base.config)
        self.costs = pass_costs(shared)  # the device's pass overhead; guesses counted for reports
        self._overhead: Optional[float] = None
        self.vocab = vocabulary_bytes(shared)

    @property
    def pass_overhead(self) -> float:
        """What one more forward pass costs, in tokens: the device's (``pass_costs``) unless set."""
        return self.costs.overhead if self._overhead is None else self._overhead

    @pass_overhead.setter
    def pass_overhead(self, tokens: float) -> None:
        self._overhead = tokens

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
        grammars = [queries[query].grammar for query in rows]
        states = self._initial_states(grammars)
        live = [_Row(query, score=0.0 if i % beams == 0 else -np.inf) for i, query in enumerate(rows)]
        finished: Dict[int, List[Tuple[float, _Row]]] = {}
        # The prompts' rests lead the first pass; each row's chain (jump-forward and guesses: the
        # opening "label: " and what may follow it) is read in the same pass.
        chains = self._plan(live, grammars, states)
        leads = [ids[query][prefixes[group_of[query]][1]:] for query in rows]
        room = max(len(lead) + len(chain.tokens) for lead, chain in zip(leads, chains)) + 2 * self.max_new_tokens
        with torch.inference_mode():
            # a shared prefix's own last logits are never read: each of its prompts reads on
            logits, cache, mask, cache_row = self._encode([ids[q][:n] for q, n in prefixes], room,
                                                          wanted=(np.bincount(group_of) == 1).tolist())
            to_rows = cache_row[[group_of[query] for query in rows]]
            cache.reorder_cache(to_rows)
            mask, logits = mask[to_rows], logits[to_rows]
            for step in range(self.max_new_tokens + 1):
                if step:  # each row picks its next token
                    logprobs = torch.log_softmax(logits.float(), -1)
                    picks = (self._greedy if beams == 1 else self._beam_step)(logprobs, live, grammars, states,
                                                                               finished)
                    if not picks:
                        live = []
                        break
                    source = np.array([row for row, _, _ in picks], dtype=np.int64)
                    tokens = np.array([token for _, token, _ in picks], dtype=np.int64)
                    states = advance(grammars, *states, source, tokens, self.vocab) if states else None
                    live = [_Row(live[row].query, live[row].tokens + [token], live[row].logprobs + [lp],
                                 live[row].score + lp) for row, token, lp in picks]
                    grammars = [grammars[row] for row in source]
                    chains = self._plan(live, grammars, states)
                    going = []
                    for row, chain in enumerate(chains):
                        if chain.ends and not chain.tokens:  # the grammar ends the answer here
                            live[row].ended = True
                            finished[live[row].query] = [(0.0, live[row])]
                        elif len(live[row].tokens) >= self.max_new_tokens:  # out of new tokens: no pass for
                            self._out_of_tokens(live[row], finished)  # logits it would never read
                        else:
                            going.append(row)
                    if not going:
                        live = []
                        break
                    source, tokens = source[going], tokens[going]
                    live, grammars, chains = ([items[row] for row in going] for items in (live, grammars, chains))
                    states = (states[0][going], states[1][going]) if states else None
                    if not np.array_equal(source, np.arange(len(logits))):  # rows left, or beams moved
                        index = torch.from_numpy(source).to(device)
                        cache.reorder_cache(index)
                        mask = mask[index]
                        prompt_lengths = prompt_lengths[index] if prompt_lengths is not None else None
                    leads = [[token] for token in tokens.tolist()]
                elif not any(leads) and not any(chain.tokens for chain in chains):
                    continue  # every prompt was read whole by the prefix pass
                logits, mask, states = self._extend(leads, chains, None if step else logits, mask, cache,
                                                    prompt_lengths, live, grammars, states, finished)
        for row in live:  # out of new tokens: the rows still going are answers too
            self._out_of_tokens(row, finished)
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

    def _encode(self, prompts: List[List[int]], room: int, wanted: Optional[Sequence[bool]] = None):
        """The prompts' last logits, and one KV cache (and its mask) of all, left-padded; row
        ``cache_row[i]`` of each is prompt ``i``'s. Padding costs as much as text, so prompts
        of unlike lengths are encoded in passes of like lengths (``length_buckets``) whose
        caches are then stacked, where the cache allows it. With ``wanted``, only the prompts
        it marks get their logits (the others zeros): the LM head, which streams the whole
        output embedding once a pass, is skipped for the rest."""
        import torch

        device = self.shared.device
        lengths = [len(prompt) for prompt in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        sizes = length_buckets([lengths[i] for i in order], self.pass_overhead) if self._preallocate else [len(order)]
        if len(sizes) == 1:
            order = list(range(len(prompts)))
        caches, masks, last = [], [], []
        start = 0
        for size in sizes:
            members = order[start:start + size]
            start += size
            input_ids, mask = self._left_pad([prompts[i] for i in members], device)
            read = None if wanted is None or all(wanted[i] for i in members) else [[0] if wanted[i] else []
                                                                                   for i in members]
            logits, cache = self._forward(input_ids, mask, None, torch.tensor([lengths[i] for i in members],
                                          device=device) if self.prompt_mode else None, room=room, read=read)
            caches.append(cache)
            masks.append(mask)
            last.append(logits[:, -1] if read is None else self._rows_or_zeros(logits))
        cache_row = torch.empty(len(prompts), dtype=torch.long, device=device)
        cache_row[torch.tensor(order, device=device)] = torch.arange(len(prompts), device=device)
        if len(caches) == 1:
            return last[0], caches[0], masks[0], cache_row
        width = max(mask.shape[1] for mask in masks)
        mask = torch.cat([torch.nn.functional.pad(mask, (width - mask.shape[1], 0)) for mask in masks])
        return torch.cat(last), PreallocatedCache.stacked(caches, room), mask, cache_row

    def _rows_or_zeros(self, read_logits):
        """``[rows, vocabulary]``: each row's one logits read, or zeros where it read none."""
        head = self.shared.model.get_output_embeddings().weight
        dtype = next((row.dtype for row in read_logits if len(row)), head.dtype)
        out = head.new_zeros((len(read_logits), head.shape[0]), dtype=dtype)
        for i, row in enumerate(read_logits):
            if len(row):
                out[i] = row[0]
        return out

    def _left_pad(self, sequences: List[List[int]], device):
        import torch

        width = max(len(seq) for seq in sequences)
        pad = self.shared.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(seq)) + seq for seq in sequences], device=device)
        mask = torch.tensor([[0] * (width - len(seq)) + [1] * len(seq) for seq in sequences], device=device)
        return ids, mask

    def _forward(self, input_ids, mask, cache, prompt_lengths, *, keep: int = 1, room: int = 0, read=None):
        """Logits of the last ``keep`` positions (0: all), and the cache; with ``read`` (per row,
        positions among those ``keep``), a list of each row's logits at its positions only: the
        LM head, over a large vocabulary most of a CPU step, then runs on those alone. A new
        cache gets ``room`` positions to grow into in place (where the model allows)."""
        if cache is None and room and self._preallocate:
            cache = PreallocatedCache(room)
        if read is not None:
            import torch

            rows = torch.tensor([row for row, positions in enumerate(read) for _ in positions], dtype=torch.long,
                                device=mask.device)
            positions = torch.tensor([p for row in read for p in row], dtype=torch.long, device=mask.device)
            head = self.shared.model.get_output_embeddings()
            # transformers' models apply the head to the kept positions' hidden states; this
            # narrows its input to the ones read (what the model does with logits after, such
            # as scaling or soft-capping, is per logit and unaffected)
            hook = head.register_forward_pre_hook(lambda module, args: (args[0][rows, positions][None], *args[1:]))
            try:
                logits, cache = self._forward(input_ids, mask, cache, prompt_lengths, keep=keep)
            finally:
                hook.remove()
            return list(logits[0].split([len(row) for row in read])), cache
        kwargs = {"input_ids": input_ids, "attention_mask": mask, self._cache_keyword: cache, "use_cache": True,
                  "logits_to_keep": keep}
        if self._positions:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
        if prompt_lengths is not None:
            kwargs["prompt_lengths"] = prompt_lengths
        out = self.shared.model(**kwargs)
        return out.logits, returned_cache(out)

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
                last, cache, mask, cache_row = self._encode(batch, width)
                totals = torch.log_softmax(last[cache_row].float(), -1)[:, [tokens[0] for tokens in continuations]]
                if width:
                    rows = torch.arange(len(batch), device=device).repeat_interleave(n)
                    cached = cache_row[rows]  # each continuation's prompt, in the cache
                    cache.reorder_cache(cached)
                    logits, _ = self._forward(inputs.repeat(len(batch), 1),
                                              torch.cat([mask[cached], real.repeat(len(batch), 1)], 1), cache,
                                              lengths[rows] if self.prompt_mode else None, keep=0)
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
            if live[row].ended:  # its chain wrote the end (finished already)
                continue
            if len(live[row].tokens) >= self.max_new_tokens:  # jumped forward to the limit
                self._out_of_tokens(live[row], finished)
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

    # -- jump-forward and speculation -------------------------------------------------------

    def _plan(self, live, grammars, states) -> List["_Chain"]:
        """Per row (after its pick), what it appends in the same pass: text the grammar forces
        (jump-forward), then guesses (speculation) and the text forced after each, up to
        ``draft_tokens`` guessed tokens, a span's draft or the end of the answer. A chain
        with no tokens that ends: the answer is complete."""
        if states is None or not (self.jump_forward or self.speculate):
            return [_Chain() for _ in live]
        chains = []
        for row, grammar in enumerate(grammars):
            chain = _Chain()
            room = self.max_new_tokens - len(live[row].tokens)
            if grammar is None:
                chains.append(chain)
                continue
            ints, bits = states[0][row].copy(), states[1][row].copy()
            written = live[row].tokens
            while len(chain.tokens) < room:
                if self.jump_forward:
                    data, ends = grammar.forced(ints, bits)
                    text = data.rstrip(b" ")
                    forced = self._text_tokens(written + chain.tokens, text) if text else []
                    if text and not forced:  # not writable as tokens: left to the model
                        break
                    forced, ints, bits = self._fed(grammar, ints, bits, forced)
                    chain.add(forced, guessed=False)
                    if ends and text == data:
                        chain.ends = True
                        break
                budget = min(self.draft_tokens - sum(chain.guessed), room - len(chain.tokens))
                if not self.speculate or budget <= 0:
                    break
                guess = grammar.draft(ints, bits)
                draft = self._text_tokens(written + chain.tokens, guess)[:budget] if guess else []
                if not draft:
                    break
                fed, ints, bits = self._fed(grammar, ints, bits, draft)
                chain.add(fed, guessed=True)
                if len(fed) < len(draft) or not guess.endswith(b"None"):  # a span's draft: where it ends is the model's to say
                    break
            if len(chain.tokens) > room:
                chain.tokens, chain.guessed, chain.ends = chain.tokens[:room], chain.guessed[:room], False
            chains.append(chain)
        return chains

    def _extend(self, leads, chains, before, mask, cache, prompt_lengths, live, grammars, states, finished):
        """One pass: each row reads its lead (the rest of its prompt, or its pick) and then its
        chain, aligned right (a shorter row starts with holes the mask leaves out). Of each chain
        what greedy decoding would have written is kept (``_follow``), the rest become holes.
        Returns each row's logits after what it kept, the mask and the states. ``before``: the
        logits before the pass, for rows with no lead (their chain's first token follows them)."""
        import torch

        width = pass_width([len(lead) for lead in leads], [chain.guessed for chain in chains], self.pass_overhead,
                           (self.accepted + 1) / (self.drafted + 2))
        for lead, chain in zip(leads, chains):
            if len(lead) + len(chain.tokens) > width:  # the rest waits for a later pass
                keep = width - len(lead)
                chain.tokens, chain.guessed, chain.ends = chain.tokens[:keep], chain.guessed[:keep], False
        lengths = [len(lead) + len(chain.tokens) for lead, chain in zip(leads, chains)]
        step_ids = torch.full((len(live), width), self.shared.tokenizer.pad_token_id, dtype=torch.long)
        step_mask = torch.zeros((len(live), width), dtype=mask.dtype)
        for row, (lead, chain) in enumerate(zip(leads, chains)):
            if lengths[row]:
                step_ids[row, width - lengths[row]:] = torch.tensor([*lead, *chain.tokens])
                step_mask[row, width - lengths[row]:] = 1
        mask = torch.cat([mask, step_mask.to(mask.device)], 1)
        # Read: the logits before each guessed token (to verify it), and at the end; a row with
        # no lead verifies a first guess from ``before``. starts[row]: the position before the
        # chain's first token.
        starts = [width - len(chain.tokens) - 1 for chain in chains]
        read = [[starts[row] + j for j, guess in enumerate(chain.guessed) if guess and j + len(leads[row])]
                + [width - 1] for row, chain in enumerate(chains)]
        if all(positions == [width - 1] for positions in read):
            every, _ = self._forward(step_ids.to(mask.device), mask, cache, prompt_lengths)
            every = every[:, -1:]
        else:
            every, _ = self._forward(step_ids.to(mask.device), mask, cache, prompt_lengths, keep=width, read=read)
        logits = []
        for row, chain in enumerate(chains):
            at = dict(zip(read[row], every[row]))
            if not leads[row]:
                at[starts[row]] = before[row]
            kept, states = self._follow(at, starts[row], live, grammars, states, row, chain, finished)
            if kept < len(chain.tokens):  # the rest of the chain becomes holes
                mask[row, mask.shape[1] - len(chain.tokens) + kept:] = 0
            logits.append(at[starts[row] + kept])
        return torch.stack(logits), mask, states

    def _fed(self, grammar, ints, bits, tokens):
        """``tokens`` up to the first the grammar refuses (a guess the model could not write
        anyway), and the row's state after them."""
        for n, token in enumerate(tokens):
            token = np.array([[token]], dtype=np.int64)
            if not allowed([grammar], ints[None], bits[None], token, self.vocab)[0, 0]:
                return tokens[:n], ints, bits
            ints, bits = self._advanced(grammar, ints, bits, token[0, 0])
        return tokens, ints, bits

    def _advanced(self, grammar, ints, bits, token: int):
        """One row's grammar state after ``token`` (the state given is left as it was)."""
        one = advance([grammar], ints[None].copy(), bits[None].copy(), np.zeros(1, dtype=np.int64),
                      np.array([token], dtype=np.int64), self.vocab)
        return one[0][0], one[1][0]

    def _text_tokens(self, tokens: List[int], data: bytes) -> List[int]:
        """The tokens of ``data`` (its whole characters) after an answer written as ``tokens``:
        as the tokenizer splits the answer with them (the split a model trained on tokenized
        answers writes), or, where that split changes the answer's own tokens, as it splits
        them alone. Empty if neither writes exactly those characters."""
        try:
            text = codecs.getincrementaldecoder("utf8")().decode(data)  # whole characters only
        except UnicodeDecodeError:  # starts inside a character: left to the model
            return []
        if not text:
            return []
        try:
            written = b"".join(self.vocab.piece(token) or b"" for token in tokens).decode("utf8")
        except UnicodeDecodeError:  # the answer so far ends inside a character
            written = None
        want = text.encode("utf8")
        if written is not None:
            ids = self.shared.tokenizer(written + text, add_special_tokens=False)["input_ids"]
            if ids[:len(tokens)] == tokens and self._writes(ids[len(tokens):]) == want:
                return ids[len(tokens):]
        ids = self.shared.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids if self._writes(ids) == want else []

    def _writes(self, tokens: List[int]) -> bytes:
        return b"".join(self.vocab.piece(token) or b"\xff" for token in tokens)

    def _follow(self, logits_at, start: int, live, grammars, states, row: int, chain: "_Chain", finished):
        """Write row ``row``'s chain as far as greedy decoding would have written it: forced
        tokens always, each guessed one only if the model's own choice under the grammar
        (from ``logits_at`` the position before it; ``start``: the one before the chain) is that token.
        Returns how many were kept, and the states."""
        import torch

        kept = 0
        for token, guessed in zip(chain.tokens, chain.guessed):
            logprob = 0.0  # forced: the grammar's choice, not the model's
            if guessed:
                logprobs = torch.log_softmax(logits_at[start + kept].float(), -1)
                self.drafted += 1
                self.costs.drafted += 1
                if self._choice(logprobs, grammars, states, row) != token:
                    break
                self.accepted += 1
                self.costs.accepted += 1
                logprob = float(logprobs[token])
            else:
                self.jumped += 1
            states = self._write(live, grammars, states, row, token, logprob)
            kept += 1
        if kept == len(chain.tokens) and chain.ends:
            live[row].ended = True
            finished[live[row].query] = [(0.0, live[row])]
        return kept, states

    def _choice(self, logprobs, grammars, states, row: int) -> int:
        """The token a greedy step would write for row ``row`` given its ``logprobs``."""
        return self._candidates(logprobs[None], [grammars[row]], (states[0][row:row + 1], states[1][row:row + 1]))[0][0][0]

    def _write(self, live, grammars, states, row: int, token: int, logprob: float):
        """Row ``row`` writes ``token``: its answer and its grammar state move on."""
        ints, bits = states
        ints[row], bits[row] = self._advanced(grammars[row], ints[row], bits[row], token)
        old = live[row]
        live[row] = _Row(old.query, old.tokens + [token], old.logprobs + [logprob], old.score + logprob)
        return ints, bits

    @staticmethod
    def _out_of_tokens(row: _Row, finished) -> None:
        """``row`` has written ``max_new_tokens``: an answer (cut short), scored as a beam."""
        finished.setdefault(row.query, []).append((row.score / max(len(row.tokens), 1), row))

    def _answer(self, row: _Row) -> Answer:
        pieces = [self.vocab.piece(token) or b"" for token in row.tokens]
        ends = np.cumsum([len(piece) for piece in pieces], dtype=np.int64).tolist()
        data = b"".join(pieces)
        # An answer cut short may end inside a character: that part is left out, not replaced.
        text = codecs.getincrementaldecoder("utf8")(errors="replace").decode(data, final=row.ended)
        return Answer(text, row.tokens, row.logprobs, ends, row.ended)


def length_buckets(lengths: Sequence[int], overhead: float) -> List[int]:
    """Sizes of the consecutive passes over ``lengths`` (longest first) that compute the fewest
    tokens, a pass costing its rows times its longest row plus ``overhead``: the optimal
    partition of a sorted list into runs, by dynamic programming over where the last run starts."""
    cost, start_of = [0.0] + [float("inf")] * len(lengths), [0] * (len(lengths) + 1)
    for end in range(1, len(lengths) + 1):
        for start in range(end):  # ties keep the earliest start: fewer, larger passes
            total = cost[start] + (end - start) * lengths[start] + overhead
            if total < cost[end]:
                cost[end], start_of[end] = total, start
    sizes, end = [], len(lengths)
    while end:
        sizes.append(end - start_of[end])
        end = start_of[end]
    return sizes[::-1]


def pass_width(leads: Sequence[int], guessed: Sequence[Sequence[bool]], overhead: float, accept: float) -> int:
    """How many positions a pass gives each row: the width with the most expected progress per
    cost. A row reads its lead whole, then as much of its chain as fits; a chain token counts
    as the chance that it is kept (``accept`` to the power of the guesses up to it and with it),
    and a pass costs ``overhead`` plus rows times width. Every position costs every row, so a
    long chain that will likely be cut short by a refused guess waits for a later pass instead
    of widening this one for all."""
    longest = max(lead + len(flags) for lead, flags in zip(leads, guessed))
    if not longest:  # nothing to read
        return 0
    gain = np.zeros(longest + 1)  # gain[w]: expected tokens kept at width w, not at w - 1
    for lead, flags in zip(leads, guessed):
        gain[lead + 1:lead + len(flags) + 1] += accept ** np.cumsum(flags, dtype=np.float64)
    widths = np.arange(max(max(leads), 1), longest + 1)
    progress = sum(leads) + np.cumsum(gain)[widths]
    rates = progress if np.isinf(overhead) else progress / (overhead + len(leads) * widths)
    # the narrowest of the best (equal rates can differ in their last bits)
    return int(widths[np.flatnonzero(rates >= rates.max() * (1 - 1e-9))[0]])


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
