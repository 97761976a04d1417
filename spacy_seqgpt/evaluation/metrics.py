"""The SeqGPT paper's metric, and strict span F1 through spaCy's Scorer.

Per dataset and task: micro-F1 over (label, answer) pairs (extraction: each span under its
label; classification: each chosen label), ROUGE-1/2/L F-measures of the generated answer
text against the gold answer text (rouge-score; Chinese, Japanese and Thai scored by
characters, since rouge-score's own tokenizer keeps only ASCII words), and the final score,
the mean of F1 and the ROUGE mean. Records that carry gold character ``spans`` are also
scored by strict span F1: predicted phrases are found in the text (every occurrence) and
compared as spaCy spans by ``Scorer.score_spans``.

Relation extraction is scored as the paper scores it, the mean of its atomic tasks (a source
with both entity extraction records and pair classification records gets a ``relation`` row
whose f1, ROUGE and score are the means of its two rows), plus strict relation triple F1:
(head span, tail span, label) over the pair records, the no-relation answer not counting.
The pairs are the gold entities' pairs, as in CrossRE's own relation classification setting.
"""
from collections import defaultdict
from typing import Dict, Iterable, List, Sequence, Set, Tuple

from ..prompts import CLASSIFY, EXTRACT, format_answer
from ..validation import require

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
UNSPACED_LANGS = ("zh", "ja", "th")


class CharTokenizer:
    """rouge-score tokenizer for unspaced scripts: every non-space character is a token."""

    def tokenize(self, text: str) -> List[str]:
        return [char for char in text if not char.isspace()]


def answer_pairs(task: str, answer) -> Set[Tuple[str, str]]:
    """The (label, answer) pairs of a parsed or gold answer."""
    if task == EXTRACT:
        return {(label, span) for label, spans in answer.items() for span in spans}
    return {(label, label) for label in answer}


def micro_f1(pairs: Iterable[Tuple[Set, Set]]) -> Dict[str, float]:
    """Micro precision, recall and F1 over (predicted, gold) pair sets."""
    tp = fp = fn = 0
    for predicted, gold in pairs:
        tp += len(predicted & gold)
        fp += len(predicted - gold)
        fn += len(gold - predicted)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"p": p, "r": r, "f": 2 * p * r / (p + r) if p + r else 0.0}


def rouge_scores(predictions: Sequence[str], references: Sequence[str], lang: str) -> Dict[str, float]:
    """Mean ROUGE-1/2/L F-measures over pairs of texts, and their mean."""
    require("rouge_score", "ROUGE (scoring free-text answers)", "train")
    from rouge_score import rouge_scorer

    tokenizer = CharTokenizer() if lang in UNSPACED_LANGS else None
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=tokenizer)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references):
        for name, score in scorer.score(reference, prediction).items():
            totals[name] += score.fmeasure
    n = max(len(references), 1)
    means = {name: total / n for name, total in totals.items()}
    means["rouge"] = sum(means.values()) / len(ROUGE_TYPES)
    return means


def span_f1(records: Sequence[dict], predictions: Sequence[dict]) -> Dict[str, float]:
    """Strict span P/R/F (spaCy's ``Scorer.score_spans``) of records with gold ``spans``."""
    import spacy
    from spacy.scorer import Scorer
    from spacy.training import Example

    from ..text.alignment import find_phrases

    examples = []
    tokenizers = {}
    for record, predicted in zip(records, predictions):
        lang = record["lang"]
        if lang not in tokenizers:
            tokenizers[lang] = spacy.blank(lang if lang in ("en", "zh", "ja", "th") else "xx")
        nlp = tokenizers[lang]
        gold_doc, pred_doc = nlp.make_doc(record["text"]), nlp.make_doc(record["text"])
        gold_doc.spans["sc"] = _char_spans(gold_doc, [tuple(span) for span in record["spans"]])
        phrases = [(label, span) for label, spans in predicted.items() for span in spans]
        matches = find_phrases(record["text"], [span for _, span in phrases])
        pred_doc.spans["sc"] = _char_spans(pred_doc, [(start, end, phrases[i][0]) for i, start, end in matches])
        examples.append(Example(pred_doc, gold_doc))
    scores = Scorer.score_spans(examples, "spans_sc", getter=lambda doc, key: list(doc.spans["sc"]),
                                allow_overlap=True)
    return {"p": scores["spans_sc_p"] or 0.0, "r": scores["spans_sc_r"] or 0.0, "f": scores["spans_sc_f"] or 0.0}


def _char_spans(doc, spans):
    found = {}
    for start, end, label in spans:
        span = doc.char_span(start, end, label=label, alignment_mode="expand")
        if span is not None and len(span):
            found[(span.start, span.end, label)] = span
    return list(found.values())


def score_records(records: Sequence[dict], predictions: Sequence, generated: Sequence[str],
                  held_out: Sequence[str] = ()) -> Dict[str, dict]:
    """Scores per ``source/task`` group: p, r, f1, rouge1/2/L, rouge, score, n, span_p/r/f1 where gold
    spans exist, triple_p/r/f1 where pairs do, and split ("held-out" for sources starting with one
    of ``held_out``, else "held-in")."""
    groups: Dict[Tuple[str, str], List[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[(record["source"], record["task"])].append(i)
    results = {}
    for (source, task), indices in sorted(groups.items()):
        group = [records[i] for i in indices]
        f1 = micro_f1((answer_pairs(task, predictions[i]), answer_pairs(task, records[i]["answer"])) for i in indices)
        references = [format_answer(task, r["answer"], r["labels"]) for r in group]
        rouge = rouge_scores([generated[i] for i in indices], references, group[0]["lang"])
        split = "held-out" if source.startswith(tuple(held_out)) else "held-in"
        result = {"task": task, "source": source, "split": split, "n": len(indices), "p": f1["p"], "r": f1["r"],
                  "f1": f1["f"], **rouge, "score": (f1["f"] + rouge["rouge"]) / 2}
        with_spans = [i for i in indices if task == EXTRACT and "spans" in records[i]]
        if with_spans:
            result.update(_prefixed("span", span_f1([records[i] for i in with_spans],
                                                    [predictions[i] for i in with_spans])))
        with_pairs = [i for i in indices if task == CLASSIFY and "pair" in records[i]]
        if with_pairs:
            result.update(_prefixed("triple", triple_f1([records[i] for i in with_pairs],
                                                        [predictions[i] for i in with_pairs])))
        results[f"{source}/{task}"] = result
    for source in sorted({r["source"] for r in results.values() if "triple_f1" in r}):
        parts = [results.get(f"{source}/{task}") for task in (EXTRACT, CLASSIFY)]
        if parts[0] is not None:
            results[f"{source}/{RELATION}"] = relation_result(*parts)
    return results


def _prefixed(name: str, prf: Dict[str, float]) -> Dict[str, float]:
    return {f"{name}_p": prf["p"], f"{name}_r": prf["r"], f"{name}_f1": prf["f"]}


RELATION = "relation"  # the task of a source's combined row, scored over its atomic tasks


def relation_triples(record: dict, labels) -> Set[Tuple[int, int, int, int, str]]:
    """``(head start, head end, tail start, tail end, label)`` of a pair record's relations."""
    pair = record["pair"]
    return {(*pair["head"], *pair["tail"], label) for label in labels if label != pair["no_relation"]}


def triple_f1(records: Sequence[dict], predictions: Sequence[list]) -> Dict[str, float]:
    """Strict relation triple P/R/F over pair records (each record one pair of one text)."""
    return micro_f1(
        ({(i, *t) for t in relation_triples(r, predicted)}, {(i, *t) for t in relation_triples(r, r["answer"])})
        for i, (r, predicted) in enumerate(zip(records, predictions))
    )


def relation_result(entities: dict, pairs: dict) -> dict:
    """The relation row of a source: the mean of its atomic rows; its rows are marked ``part_of`` it."""
    for part in (entities, pairs):
        part["part_of"] = RELATION
    means = {key: (entities[key] + pairs[key]) / 2 for key in ("p", "r", "f1", *ROUGE_TYPES, "rouge", "score")}
    return {"task": RELATION, "source": pairs["source"], "split": pairs["split"], "n": entities["n"] + pairs["n"],
            **means, **{key: entities.get(key, 0.0) for key in ("span_p", "span_r", "span_f1")},
            **{key: pairs[key] for key in ("triple_p", "triple_r", "triple_f1")}}


def summarize(results: Dict[str, dict]) -> Dict[str, dict]:
    """Mean scores of held-in and held-out groups, per task, and over ALL groups (macro over
    datasets; a relation dataset counts once, by its relation row)."""
    whole = [r for r in results.values() if "part_of" not in r]
    buckets = {"ALL": whole}
    for task in (EXTRACT, CLASSIFY, RELATION):
        buckets[task] = [r for r in results.values() if r["task"] == task]
    for split in ("held-in", "held-out"):
        buckets[split] = [r for r in whole if r["split"] == split]
    keys = ("p", "r", "f1", "rouge", "score")
    return {name: {key: sum(r[key] for r in group) / len(group) for key in keys} | {"datasets": len(group)}
            for name, group in buckets.items() if group}
