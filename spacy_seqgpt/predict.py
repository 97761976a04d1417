"""Answers of a model to atomic-task records, as the components would ask them.

Extraction labels go in chunks of ``label_chunk_size`` per prompt (SeqGPT's 6); the chunks'
answers are merged into one parsed answer and one answer text per record.
"""
from typing import List, Sequence, Tuple

from .generation import generate_answers
from .loading import SharedModel
from .prompts import DEFAULT_LABEL_CHUNK_SIZE, EXTRACT, build_prompt, chunk_labels, parse_answer


def predict_records(shared: SharedModel, records: Sequence[dict], *, batch_size: int = 16, max_new_tokens: int = 256,
                    num_beams: int = 1, label_chunk_size: int = DEFAULT_LABEL_CHUNK_SIZE,
                    progress: bool = False) -> Tuple[List, List[str]]:
    """``(parsed answers, generated texts)``, one of each per record."""
    owners, prompts, chunks = [], [], []
    for index, record in enumerate(records):
        labels = record["labels"]
        for chunk in chunk_labels(labels, label_chunk_size) if record["task"] == EXTRACT else [labels]:
            owners.append(index)
            chunks.append(chunk)
            prompts.append(build_prompt(record["task"], record["text"], chunk))
    texts = generate_answers(shared, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                             num_beams=num_beams, progress=progress)
    parsed: List = [{} if r["task"] == EXTRACT else [] for r in records]
    generated: List[List[str]] = [[] for _ in records]
    for index, chunk, text in zip(owners, chunks, texts):
        answer = parse_answer(records[index]["task"], text, chunk)
        if records[index]["task"] == EXTRACT:
            parsed[index].update(answer)
        else:
            parsed[index].extend(label for label in answer if label not in parsed[index])
        generated[index].append(text.strip())
    return parsed, ["\n".join(parts) for parts in generated]
