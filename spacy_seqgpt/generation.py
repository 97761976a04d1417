"""Batched answer generation for many prompts at once.

Prompts from all documents of a batch are sorted by length before they are cut into
generation batches, so a batch holds prompts of similar length and little padding.
Padding goes on the left (a decoder continues from the last real token), and
``generate`` keeps a KV cache, so each new token costs one position per sequence.
"""
import re
from typing import Iterator, List, Sequence

from .loading import SharedModel

_PIECES = re.compile(r"\s*\S+")


def generate_answers(shared: SharedModel, prompts: Sequence[str], *, batch_size: int, max_new_tokens: int,
                     num_beams: int = 1, progress: bool = False) -> List[str]:
    """Greedy (or beam) answers to ``prompts``, in the order of ``prompts`` (``progress``: a bar per batch)."""
    import torch
    from tqdm import tqdm

    if not prompts:
        return []
    tokenizer, model = shared.tokenizer, shared.model
    encoded = tokenizer(list(prompts))["input_ids"]
    answers: List[str] = [""] * len(prompts)
    batches = list(_length_sorted_batches(encoded, batch_size))
    for indices in tqdm(batches, desc="generate", unit="batch", disable=not progress):
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, padding_side="left", return_tensors="pt")
        batch = {key: value.to(shared.device) for key, value in batch.items()}
        with torch.inference_mode():
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        for i, text in zip(indices, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            answers[i] = text
    return answers


def _length_sorted_batches(encoded: Sequence[Sequence[int]], batch_size: int) -> Iterator[List[int]]:
    # Longest first: a batch that does not fit in memory fails at once, not at the end.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def subword_starts(shared: SharedModel, text: str) -> List[int]:
    """The character offset where each of ``text``'s subwords starts, under the model's tokenizer."""
    tokenizer = shared.tokenizer
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return [start for start, _ in offsets]
    # Tokenizers without offsets: count each whitespace-delimited piece on its own.
    starts: List[int] = []
    for match in _PIECES.finditer(text):
        n = len(tokenizer(match.group(), add_special_tokens=False)["input_ids"])
        starts.extend([match.start()] * n)
    return starts
