"""Records as token ids: the prompt, then the answer and end-of-sequence, the loss on the answer only.

The prompt and the answer are tokenized apart and concatenated, so the boundary between them
is exact whatever the tokenizer merges. A sequence longer than ``max_length`` loses the start
of its prompt (the official recipe truncates on the left); an answer that alone exceeds it is
cut at the end.
"""
from dataclasses import dataclass
from typing import List, Sequence

from ..prompts import build_prompt, format_answer

IGNORE = -100  # label of positions without loss (PyTorch's cross-entropy ignore_index)


@dataclass
class Encoded:
    input_ids: List[int]
    labels: List[int]  # IGNORE on the prompt, the token itself on the answer

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def answer_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def encode_record(tokenizer, record: dict, max_length: int) -> Encoded:
    prompt = build_prompt(record["task"], record["text"], record["labels"])
    answer = format_answer(record["task"], record["answer"], record["labels"])
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    answer_ids = answer_ids[: max_length - 1]  # keep at least one prompt token
    prompt_ids = (
        prompt_ids[len(prompt_ids) - (max_length - len(answer_ids)) :]
        if len(prompt_ids) + len(answer_ids) > max_length
        else prompt_ids
    )
    return Encoded(prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids)


def encode_records(tokenizer, records: Sequence[dict], max_length: int) -> List[Encoded]:
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    return [encode_record(tokenizer, record, max_length) for record in records]
