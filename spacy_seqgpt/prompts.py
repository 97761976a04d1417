"""The SeqGPT prompt: building it exactly as the released weights expect, and reading answers.

The official template (Alibaba-NLP/SeqGPT README) is Chinese for every language:

    输入: {text}\\n{task}: {labels joined by '，'}\\n输出: [GEN]

and the model answers one line per queried label, ``label: span, span`` or ``label: None``
for extraction, and the chosen label(s) for classification. This module imports nothing
from the rest of the package.
"""
import re
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple, Union

EXTRACT = "extract"
CLASSIFY = "classify"
TASK_WORDS = {EXTRACT: "抽取", CLASSIFY: "分类"}
LABEL_SEPARATOR = "，"  # U+FF0C, the full-width comma of the official prompt
GEN_TOKEN = "[GEN]"
DEFAULT_LABEL_CHUNK_SIZE = 6

# A label containing one of these could not be read back from the prompt or the answer.
_SEPARATORS_IN_LABEL = {
    ",": "a comma",
    "，": "a full-width comma",
    ":": "a colon",
    "：": "a full-width colon",
    "\t": "a tab",
}
# Where str.splitlines breaks a line: such a character would split the prompt or the answer.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# Quotes that a label named in an answer may be wrapped in; they are taken off when it is read.
_QUOTES = "\"'“”‘’「」"
# Answers that mean "no span" (compared case-folded); the answer grammar writes "None".
NONE_ANSWERS = frozenset({"none", "无", "null", "n/a", "nil", "没有", "无。", "none."})
# Spans are separated by commas (ASCII or full-width), tabs, or runs of two or more spaces;
# a single space belongs inside multi-word spans.
_SPAN_SPLIT = re.compile(r"[,，\t]|\s{2,}")
_WHITESPACE_RUN = re.compile(r"\s{2,}")
_KEY_VALUE_SPLIT = re.compile(r"[:：]")

LabelSpec = Union[Sequence[str], Mapping[str, str]]

def build_prompt(task: str, text: str, labels: Sequence[str]) -> str:
    """The official SeqGPT prompt for ``task`` ("extract" or "classify")."""
    _check_task(task)
    labels = check_labels(task, labels)
    return f"输入: {text}\n{TASK_WORDS[task]}: {LABEL_SEPARATOR.join(labels)}\n输出: {GEN_TOKEN}"


def _check_task(task: str) -> None:
    if task not in TASK_WORDS:
        raise ValueError(f"Unknown SeqGPT task {task!r}: expected 'extract' or 'classify'.")


def check_label(label: object) -> str:
    """Return ``label`` if it can be written in a prompt and read back from an answer exactly
    (as an extraction line's label and as a classification answer), else raise ValueError
    naming the character that prevents it."""
    if not isinstance(label, str):
        raise ValueError(f"Label {label!r} is a {type(label).__name__}; labels must be strings.")
    if not label.strip():
        raise ValueError(f"Label {label!r} is empty; every label needs visible text.")
    if label != label.strip():
        raise ValueError(f"Label {label!r} has leading or trailing whitespace; remove it.")
    for char in label:
        if char in LINE_BREAKS:
            raise ValueError(f"Label {label!r} contains a line break ({char!r}), which would split the prompt.")
        if char in _SEPARATORS_IN_LABEL:
            raise ValueError(
                f"Label {label!r} contains {_SEPARATORS_IN_LABEL[char]} ({char!r}), which SeqGPT uses as a "
                "separator; rename the label, or give {label: prompt_text} to write it differently in the prompt."
            )
    run = _WHITESPACE_RUN.search(label)
    if run:
        raise ValueError(f"Label {label!r} contains a run of whitespace ({run.group()!r}), which separates answers; "
                         "use single spaces.")
    for char in (label[0], label[-1]):
        if char in _QUOTES:
            raise ValueError(f"Label {label!r} begins or ends with a quote ({char!r}), which is taken off when an "
                             "answer is read; remove it.")
    return label


def check_labels(task: str, labels: Iterable[object]) -> List[str]:
    """The labels of one ``task`` prompt, if they can be read back: the one query of an extraction
    prompt may be any line of text (``check_query``); other labels must pass ``check_label``."""
    labels = list(labels)
    if not labels:
        raise ValueError("A SeqGPT prompt needs at least one label.")
    check = check_query if task == EXTRACT and len(labels) == 1 else check_label
    for label in labels:
        check(label)
    return labels


def check_query(query: object) -> str:
    """Return ``query`` if it can be asked alone in a prompt and read back from an extraction
    answer whose line the grammar forced to begin with it: any one line of visible text, commas
    and colons included (a question, say). Else raise ValueError naming the problem."""
    if not isinstance(query, str):
        raise ValueError(f"Query {query!r} is a {type(query).__name__}; queries must be strings.")
    if not query.strip():
        raise ValueError(f"Query {query!r} is empty; every query needs visible text.")
    for char in query:
        if char in LINE_BREAKS:
            raise ValueError(f"Query {query!r} contains a line break ({char!r}), which would split the prompt "
                             "and the answer; write it on one line.")
    return query


def prompt_labels(spec: LabelSpec, *, component: str = "component", check=check_label) -> Dict[str, str]:
    """Normalise a ``labels`` setting into ``{label: text written in the prompt}``.

    A list uses each label as its own prompt text; a dict maps the label that ends up on the
    Doc (e.g. ``"PER"``) to the words the model reads (e.g. ``"person"``). ``check`` refuses a
    prompt text that could not be read back (``check_label``; ``check_query`` for queries asked
    one per prompt).
    """
    if isinstance(spec, str) or not isinstance(spec, (Mapping, Sequence)):
        raise ValueError(
            f"{component}: 'labels' must be a list of labels or a dict from label to prompt text, "
            f"got {type(spec).__name__} {spec!r}."
        )
    pairs = list(spec.items()) if isinstance(spec, Mapping) else [(label, label) for label in spec]
    if not pairs:
        raise ValueError(
            f"{component}: no labels given. Pass them at add_pipe, e.g. "
            f'config={{"labels": ["person", "location"]}}.'
        )
    mapping: Dict[str, str] = {}
    seen_texts: Dict[str, str] = {}
    for label, text in pairs:
        if not isinstance(label, str) or not label:
            raise ValueError(f"{component}: label {label!r} must be a non-empty string.")
        try:
            check(text)
        except ValueError as err:
            raise ValueError(f"{component}: {err}") from None
        if label in mapping:
            raise ValueError(f"{component}: label {label!r} is given twice.")
        if text.casefold() in seen_texts:
            raise ValueError(
                f"{component}: labels {seen_texts[text.casefold()]!r} and {label!r} are both written "
                f"as {text!r} in the prompt, so their answers could not be told apart."
            )
        mapping[label] = text
        seen_texts[text.casefold()] = label
    return mapping


def chunk_labels(labels: Sequence[str], size: int = DEFAULT_LABEL_CHUNK_SIZE) -> List[List[str]]:
    """Split extraction labels into prompts of at most ``size`` labels (SeqGPT uses 6)."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"label_chunk_size must be a positive integer, got {size!r}.")
    labels = list(labels)
    return [labels[i : i + size] for i in range(0, len(labels), size)]


def format_answer(task: str, answer, labels: Sequence[str]) -> str:
    """The answer SeqGPT is trained to give: the inverse of :func:`parse_answer`.

    ``answer`` is ``{label: [span, ...]}`` for extraction (every queried label gets a line,
    ``None`` when it has no span) and a list of chosen labels for classification.
    """
    _check_task(task)
    if task == EXTRACT:
        return "\n".join(f"{label}: {', '.join(answer.get(label, [])) or 'None'}" for label in labels)
    return LABEL_SEPARATOR.join(label for label in labels if label in answer)


def parse_answer(task: str, answer: object, labels: Iterable[str]):
    """Read a generated answer leniently; never raises on model output.

    Extraction returns ``{label: [span, ...]}`` with a key for every queried label (spans in
    answer order, without duplicates). Classification returns the queried labels named in the
    answer, in answer order. Labels that were not asked for are ignored; a label written with
    other casing is matched to the queried one.
    """
    _check_task(task)
    labels = list(labels)
    text = answer if isinstance(answer, str) else ""
    if task == EXTRACT:
        return _parse_extraction(text, labels)
    return _parse_classification(text, _label_lookup(labels))


def _label_lookup(labels: Sequence[str]) -> Dict[str, str]:
    lookup = {label.strip().casefold(): label for label in labels}
    lookup.update({label.strip(): label for label in labels})
    return lookup


def _match_label(candidate: str, lookup: Mapping[str, str]):
    candidate = candidate.strip().strip(_QUOTES)
    return lookup.get(candidate) or lookup.get(candidate.casefold())


def _split_spans(value: str) -> Iterable[Tuple[str, int]]:
    """The spans of one answer line's value with their offsets in it (split as SeqGPT writes them)."""
    start = 0
    for end, next_start in [(m.start(), m.end()) for m in _SPAN_SPLIT.finditer(value)] + [(len(value), len(value))]:
        piece = value[start:end]
        span = piece.strip()
        if span and span.casefold() not in NONE_ANSWERS:
            yield span, start + len(piece) - len(piece.lstrip())
        start = next_start


def locate_spans(answer: str, labels: Iterable[str]) -> List[Tuple[str, str, int]]:
    """``(label, span, offset in the answer)`` of every extracted span, in answer order, as
    :func:`parse_answer` reads them (duplicates kept): to score a span by its answer tokens."""
    labels = list(labels)
    lookup = _label_lookup(labels)
    longest_first = sorted(labels, key=len, reverse=True)
    found = []
    offset = 0
    for line in answer.splitlines(keepends=True):
        label, value_at = _forced_label(line, longest_first)
        if label is None:
            split = _KEY_VALUE_SPLIT.search(line)
            label = _match_label(line[: split.start()], lookup) if split else None
            value_at = split.end() if split else 0
        if label is not None:
            value = line[value_at:].rstrip("\r\n")
            found.extend((label, span, offset + value_at + at) for span, at in _split_spans(value))
        offset += len(line)
    return found


def _forced_label(line: str, longest_first: Sequence[str]):
    """``(label, where its value starts)`` when ``line`` begins with a queried label and a colon,
    as the answer grammar writes it: a label (a question, say) may itself hold colons."""
    for label in longest_first:
        if line.startswith(label) and line[len(label):len(label) + 1] in (":", "："):
            return label, len(label) + 1
    return None, 0


def _parse_extraction(text: str, labels: Sequence[str]) -> Dict[str, List[str]]:
    result: Dict[str, List[str]] = {label: [] for label in labels}
    for label, span, _ in locate_spans(text, labels):
        if span not in result[label]:
            result[label].append(span)
    return result


def _parse_classification(text: str, lookup: Mapping[str, str]) -> List[str]:
    chosen: List[str] = []
    for line in text.splitlines():
        parts = _KEY_VALUE_SPLIT.split(line, maxsplit=1)
        # "分类: sports" or "label: sports": the value holds the answer unless the key is itself a label
        candidates = parts if len(parts) == 1 or _match_label(parts[0], lookup) else parts[1:]
        for candidate in candidates:
            for item in _SPAN_SPLIT.split(candidate):
                label = _match_label(item, lookup)
                if label is not None and label not in chosen:
                    chosen.append(label)
    return chosen
