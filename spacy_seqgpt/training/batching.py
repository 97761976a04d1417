"""Micro-batches of encoded records: padded rows, or packed rows of several records each.

Packing fills each row of ``max_length`` tokens with whole records (first fit, in the
seeded order) and gives each record its own ``segment_ids`` value, so attention never crosses
records (the kernel's segment rule) and positions restart at every record. Padding uses
segment id -1 and is masked out.

The order is a function of (seed, epoch) only, so a resumed run sees the same batches.
"""
import random
from typing import Dict, List, Sequence

import torch

from .encoding import IGNORE, Encoded


def epoch_order(n: int, seed: int, epoch: int) -> List[int]:
    order = list(range(n))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    return order


OPEN_ROWS = 64  # packing looks for room in the last this many rows only: linear time on big corpora


def group_rows(encoded: Sequence[Encoded], order: Sequence[int], max_length: int, packing: bool) -> List[List[int]]:
    """Indices of the records of each row: one per row, or packed first fit (among the last
    ``OPEN_ROWS`` rows) up to ``max_length`` tokens."""
    if not packing:
        return [[i] for i in order]
    rows: List[List[int]] = []
    free: List[int] = []
    for i in order:
        size = len(encoded[i])
        first_open = max(0, len(rows) - OPEN_ROWS)
        for row in range(first_open, len(rows)):
            if size <= free[row]:
                rows[row].append(i)
                free[row] -= size
                break
        else:
            rows.append([i])
            free.append(max_length - size)
    return rows


def collate(encoded: Sequence[Encoded], rows: Sequence[Sequence[int]], pad_id: int) -> Dict[str, torch.Tensor]:
    """Tensors of a micro-batch of rows, right-padded: input_ids, labels, attention_mask,
    position_ids and segment_ids (B, L)."""
    length = max(sum(len(encoded[i]) for i in row) for row in rows)
    shape = (len(rows), length)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    segments = torch.full(shape, -1, dtype=torch.long)
    for b, row in enumerate(rows):
        offset = 0
        for segment, i in enumerate(row):
            item, n = encoded[i], len(encoded[i])
            input_ids[b, offset:offset + n] = torch.tensor(item.input_ids)
            labels[b, offset:offset + n] = torch.tensor(item.labels)
            positions[b, offset:offset + n] = torch.arange(n)
            segments[b, offset:offset + n] = segment
            offset += n
    return {"input_ids": input_ids, "labels": labels, "attention_mask": (segments >= 0).long(),
            "position_ids": positions, "segment_ids": segments}


class BatchStream:
    """Micro-batch ``index`` of the endless sequence epoch 0, epoch 1, ... (packed epochs differ in
    length, so the epoch of an index is found by counting); one epoch is kept in memory."""

    def __init__(self, encoded: Sequence[Encoded], *, seed: int, rows_per_batch: int, max_length: int, packing: bool,
                 pad_id: int):
        self.encoded, self.pad_id = encoded, pad_id
        self.options = {"seed": seed, "rows_per_batch": rows_per_batch, "max_length": max_length, "packing": packing}
        self.starts = [0]  # first index of each epoch seen so far
        self.epoch, self.batches = -1, []

    def _load(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.batches = epoch, micro_batches(self.encoded, epoch=epoch, **self.options)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        epoch = 0
        while True:
            if epoch == len(self.starts) - 1:
                self._load(epoch)
                self.starts.append(self.starts[-1] + len(self.batches))
            if index < self.starts[epoch + 1]:
                break
            epoch += 1
        self._load(epoch)
        return collate(self.encoded, self.batches[index - self.starts[epoch]], self.pad_id)


def micro_batches(encoded: Sequence[Encoded], *, seed: int, epoch: int, rows_per_batch: int, max_length: int,
                  packing: bool) -> List[List[List[int]]]:
    """The micro-batches of one epoch, as lists of rows of record indices."""
    rows = group_rows(encoded, epoch_order(len(encoded), seed, epoch), max_length, packing)
    return [rows[i:i + rows_per_batch] for i in range(0, len(rows), rows_per_batch)]
