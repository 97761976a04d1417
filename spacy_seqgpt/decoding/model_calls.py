"""The forward passes decoding makes: with a KV cache grown in place, the LM head on the
positions read only, and prompts encoded in passes of like lengths.

- The KV cache is written in place (``kv_cache.PreallocatedCache``) where the model allows.
- The LM head, over a large vocabulary most of a CPU step, runs on the positions that are
  read only.
- **Prefix-LM models** (``unmask(..., mode="prompt")``): every call passes each row's prompt
  length, so the prompt attends both ways and the generated tokens causally.
"""
import inspect
from typing import List, Optional, Sequence

from ..models.adapters import base_model
from ..models.shared import SharedModel
from .kv_cache import PreallocatedCache, cache_keyword, returned_cache, supports_preallocation
from .prompt_encoding import length_buckets


class ModelCalls:
    """Forward passes of ``shared``'s model as decoding makes them."""

    def __init__(self, shared: SharedModel):
        self.shared = shared
        base = base_model(shared.model)
        self.prompt_mode = shared.prefix_lm
        self._positions = "position_ids" in inspect.signature(base.forward).parameters
        self._cache_keyword = cache_keyword(base)
        self.preallocate = supports_preallocation(base.config)

    def encode(self, prompts: List[List[int]], room: int, overhead: float, wanted: Optional[Sequence[bool]] = None):
        """The prompts' last logits, and one KV cache (and its mask) of all, left-padded; row
        ``cache_row[i]`` of each is prompt ``i``'s. Prompts of unlike lengths are encoded in
        passes of like lengths (``length_buckets``, a pass costing ``overhead`` tokens more)
        whose caches are then stacked, where the cache allows it. With ``wanted``, only the
        prompts it marks get their logits (the others zeros): the LM head, which streams the
        whole output embedding once a pass, is skipped for the rest."""
        import torch

        device = self.shared.device
        lengths = [len(prompt) for prompt in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        sizes = length_buckets([lengths[i] for i in order], overhead) if self.preallocate else [len(order)]
        if len(sizes) == 1:
            order = list(range(len(prompts)))
        caches, masks, last = [], [], []
        start = 0
        for size in sizes:
            members = order[start:start + size]
            start += size
            input_ids, mask = self.left_pad([prompts[i] for i in members], device)
            read = None if wanted is None or all(wanted[i] for i in members) else [[0] if wanted[i] else []
                                                                                   for i in members]
            logits, cache = self.forward(input_ids, mask, None, torch.tensor([lengths[i] for i in members],
                                         device=device) if self.prompt_mode else None, room=room, read=read)
            caches.append(cache)
            masks.append(mask)
            last.append(logits[:, -1] if read is None else self.rows_or_zeros(logits))
        cache_row = torch.empty(len(prompts), dtype=torch.long, device=device)
        cache_row[torch.tensor(order, device=device)] = torch.arange(len(prompts), device=device)
        if len(caches) == 1:
            return last[0], caches[0], masks[0], cache_row
        width = max(mask.shape[1] for mask in masks)
        mask = torch.cat([torch.nn.functional.pad(mask, (width - mask.shape[1], 0)) for mask in masks])
        return torch.cat(last), PreallocatedCache.stacked(caches, room), mask, cache_row

    def rows_or_zeros(self, read_logits):
        """``[rows, vocabulary]``: each row's one logits read, or zeros where it read none."""
        head = self.shared.model.get_output_embeddings().weight
        dtype = next((row.dtype for row in read_logits if len(row)), head.dtype)
        out = head.new_zeros((len(read_logits), head.shape[0]), dtype=dtype)
        for i, row in enumerate(read_logits):
            if len(row):
                out[i] = row[0]
        return out

    def left_pad(self, sequences: List[List[int]], device):
        import torch

        width = max(len(seq) for seq in sequences)
        pad = self.shared.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(seq)) + seq for seq in sequences], device=device)
        mask = torch.tensor([[0] * (width - len(seq)) + [1] * len(seq) for seq in sequences], device=device)
        return ids, mask

    def forward(self, input_ids, mask, cache, prompt_lengths, *, keep: int = 1, room: int = 0, read=None):
        """Logits of the last ``keep`` positions (0: all), and the cache; with ``read`` (per row,
        positions among those ``keep``), a list of each row's logits at its positions only. A new
        cache gets ``room`` positions to grow into in place (where the model allows)."""
        if cache is None and room and self.preallocate:
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
                logits, cache = self.forward(input_ids, mask, cache, prompt_lengths, keep=keep)
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
