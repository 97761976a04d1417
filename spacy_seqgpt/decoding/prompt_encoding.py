"""Which prompts are encoded together: batches of whole groups, shared prefixes, passes of like lengths.

- **Shared prefixes.** The prompts of one group (a window of a document asked about several
  label chunks) start with the same tokens. Those are encoded once; their KV cache is copied
  to each prompt's rows, and only the rest of each prompt is encoded on top. Rows then hold
  padding in the middle (``[pad prefix | pad rest]``): the attention mask says which columns
  are real, and positions (Llama) or ALiBi distances (BLOOM) count real tokens only.
- **Passes of like lengths.** Padding costs as much as text: prompts (or prefixes) of unlike
  lengths are encoded in several passes, split where that computes fewer tokens
  (``length_buckets``), and their caches are stacked, aligned right, into one.
"""
from typing import Dict, Hashable, Iterator, List, Sequence, Tuple


def batches(keys: Sequence[Hashable], ids: Sequence[List[int]], batch_size: int) -> Iterator[List[int]]:
    """Whole groups (queries of equal ``keys``), longest prompts first, up to ``batch_size``
    queries a batch (one group may exceed it)."""
    groups: Dict[Hashable, List[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    ordered = sorted(groups.values(), key=lambda members: -max(len(ids[i]) for i in members))
    batch: List[int] = []
    for members in ordered:
        if batch and len(batch) + len(members) > batch_size:
            yield batch
            batch = []
        batch.extend(members)
    if batch:
        yield batch


def split_prefixes(ids: Sequence[List[int]], keys: Sequence[Hashable]) -> Tuple[List[int], List[Tuple[int, int]]]:
    """Each query's group index, and per group (first query, prefix length) to encode once."""
    group_of: List[int] = []
    prefixes: List[Tuple[int, int]] = []
    first: Dict[Hashable, int] = {}
    for query, tokens in enumerate(ids):
        if keys[query] not in first:
            first[keys[query]] = len(prefixes)
            prefixes.append((query, len(tokens)))
        group = first[keys[query]]
        group_of.append(group)
        head, length = prefixes[group]
        prefixes[group] = (head, min(length, common_length(ids[head], tokens)))
    # A prompt that shares its prefix keeps at least one token of its own to predict from;
    # a prompt alone in its group is encoded whole and predicts from the prefix pass.
    members = [0] * len(prefixes)
    for group in group_of:
        members[group] += 1
    for query, tokens in enumerate(ids):
        head, length = prefixes[group_of[query]]
        if members[group_of[query]] > 1:
            prefixes[group_of[query]] = (head, min(length, len(tokens) - 1))
    return group_of, prefixes


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


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
