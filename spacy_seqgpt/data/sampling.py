"""From gold examples to atomic-task records, as the SeqGPT paper builds its fine-tuning data.

- **Negative labels**: each record also asks for labels of the dataset that the text does not
  have (drawn from the dataset's whole label set), so the model learns to answer ``None``
  and to reject distractors. A gold label is never drawn as a negative.
- **Readable answers**: a training record's answer must read back as itself
  (``records.answer_problem``): an example with a span the answer format cannot hold (a comma
  inside it, ``None``) is left out (``left_out``) instead of teaching the model to split it.
  Evaluation records (``all_labels``) keep every example: the test sets stay whole.
- **Quotas**: at most ``quota`` records per dataset-label pair. A label whose quota is full is
  left out of later records' queries (the record is kept for its other labels); records with
  no gold label share one quota of their own. Nothing is ever repeated (no up-sampling).
- **Label variants**: a share (``label_variants``) of the extraction training records asks for
  each of its labels with another word for it (``label_words.VARIANTS``: "place" for
  "location"), so the model learns that a label's wording varies, as unseen label sets do.

Seeded: same examples, same seed, same records.
"""
import random
from collections import Counter
from typing import List, Optional

from ..prompts import CLASSIFY, EXTRACT, check_label
from .label_words import reworded_labels
from .records import GoldCorpus
from .records import Record, answer_problem, make_record

NO_LABEL = ""  # the quota key of records without any gold label


def corpus_records(corpus: GoldCorpus, source: str, *, seed: int = 0, quota: int = 0, max_negatives: int = 5,
                   all_labels: bool = False, limit: int = 0, left_out: Optional[List[dict]] = None,
                   label_variants: float = 0.0) -> List[Record]:
    """Records of ``corpus``. ``quota``: per dataset-label pair (0: no quota). ``max_negatives``:
    at most this many negative labels per record (at least one for classification when there is
    one). ``all_labels``: ask for the dataset's whole label set in every record, for evaluation
    (no sampling, no quota). ``limit``: stop after this many records (0: all). ``left_out``:
    gets ``{"example", "text", "reason"}`` of each training example whose answer would not read
    back; without it, such an example is a ValueError naming it. A label that cannot be
    written in a prompt is a ValueError that says to map it to a readable word.
    ``label_variants``: the share of extraction training records that ask with other words
    for their labels (never evaluation records)."""
    if quota < 0 or max_negatives < 0 or limit < 0:
        raise ValueError("quota, max_negatives and limit must be >= 0")
    if not 0 <= label_variants <= 1:
        raise ValueError(f"label_variants is a share of the records, from 0 to 1; got {label_variants!r}")
    variants = random.Random(f"{seed}-variants")  # its own stream: the records drawn stay those without variants
    for label in corpus.labels:
        try:
            check_label(label)
        except ValueError as err:
            raise ValueError(f"{err} Map the corpus tag to a readable word with --label-map "
                             "(a JSON file: {\"tag\": \"words\"}).") from None
    rng = random.Random(seed)
    order = list(range(len(corpus.examples)))
    if not all_labels:
        rng.shuffle(order)
    used: Counter = Counter()
    records = []
    for index in order:
        if limit and len(records) >= limit:
            break
        example = corpus.examples[index]
        gold = _gold_labels(corpus, example)
        problem = None if all_labels or corpus.task != EXTRACT else answer_problem(EXTRACT, gold, _spans(example, gold))
        if problem is not None:
            if left_out is None:
                raise ValueError(f"example {index} ({example.text[:60]!r}): {problem}")
            left_out.append({"example": index, "text": example.text, "reason": problem})
            continue
        if all_labels:
            labels = list(corpus.labels)
        else:
            labels = _sample_labels(corpus, gold, used, rng, quota, max_negatives)
            if labels is None:
                continue
        record = _record(corpus, example, labels, source)
        if corpus.task == EXTRACT and not all_labels and label_variants and variants.random() < label_variants:
            record = _reworded(record, reworded_labels(labels, variants))
        records.append(record)
    return records


def _reworded(record: Record, words: dict) -> Record:
    """``record`` asking for each label ``words[label]`` instead."""
    return {**record, "labels": [words[label] for label in record["labels"]],
            "answer": {words[label]: spans for label, spans in record["answer"].items()},
            "spans": [[start, end, words[label]] for start, end, label in record["spans"]]}


def _gold_labels(corpus: GoldCorpus, example) -> List[str]:
    found = example.cats if corpus.task == CLASSIFY else [label for _, _, label in example.spans]
    return list(dict.fromkeys(found))


def _sample_labels(corpus: GoldCorpus, gold: List[str], used: Counter, rng: random.Random, quota: int,
                   max_negatives: int) -> Optional[List[str]]:
    """The labels one record asks for, or None when its quotas are all full."""
    positives = [label for label in gold if not quota or used[label] < quota]
    if gold and not positives:
        return None
    if not gold:
        if quota and used[NO_LABEL] >= quota:
            return None
        used[NO_LABEL] += 1
    used.update(positives)
    pool = [label for label in corpus.labels if label not in gold]
    low = 1 if corpus.task == CLASSIFY and pool else 0
    if not positives and pool:
        low = 1  # a record must ask for something
    count = rng.randint(low, max(low, min(max_negatives, len(pool))))
    labels = positives + rng.sample(pool, count)
    rng.shuffle(labels)
    return labels or None


def _record(corpus: GoldCorpus, example, labels: List[str], source: str) -> Record:
    if corpus.task == CLASSIFY:
        answer = [label for label in labels if label in example.cats]
        return {**make_record(CLASSIFY, example.text, labels, answer, source, corpus.lang), **example.meta}
    spans = [span for span in example.spans if span[2] in labels]
    return {**make_record(EXTRACT, example.text, labels, _spans(example, labels), source, corpus.lang, spans=spans),
            **example.meta}


def _spans(example, labels: List[str]) -> dict:
    """The extraction answer of ``example`` for ``labels``: each label's phrases, in text order, once."""
    answer: dict = {label: [] for label in labels}
    for start, end, label in example.spans:
        if label in answer and example.text[start:end] not in answer[label]:
            answer[label].append(example.text[start:end])
    return answer
