"""Checks of user settings shared by components, models and training: one wording for each rule."""
import importlib.util
import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Optional, Sequence, Union


def check_positive_int(value: Any, key: str, owner: str = "") -> int:
    """``value`` if it is a positive integer (not a bool), else a ValueError naming ``key``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner + ': ' if owner else ''}'{key}' must be a positive integer, got {value!r}.")
    return value


def check_count(value: Any, key: str, owner: str = "") -> int:
    """``value`` if it is a whole number of 0 or more (not a bool), else a ValueError naming ``key``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{owner + ': ' if owner else ''}'{key}' must be a whole number of 0 or more, got {value!r}.")
    return value


# The extras of the package (setup.py) and what each brings: the core holds what a pipeline needs.
EXTRAS = {"gpu": "the GPU extras", "train": "training, evaluation plots and ROUGE", "ray": "Ray Data",
          "gguf": "reading GGUF files"}


def require(package: str, purpose: str, extra: str = "gpu") -> None:
    """An ImportError that names the extra that installs ``package`` (a module name) when it is missing."""
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"{purpose} needs {package}, which is not installed: "
                          f"pip install 'spacy-seqgpt[{extra}]' ({EXTRAS[extra]})")


def check_spans_key(spans_key: Optional[str], owner: str) -> Optional[str]:
    """``null`` (write ``doc.ents``) or a non-empty ``doc.spans`` key."""
    return check_key(spans_key, owner, "spans_key", optional=True, null_means="write doc.ents")


def check_threshold(threshold: Any, owner: str) -> float:
    """A score between 0 and 1: what a component writes must reach it."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{owner}: 'threshold' is a score between 0 and 1, got {threshold!r}.")
    return float(threshold)


def check_key(key: Any, owner: str, setting: str, *, optional: bool, null_means: str = "") -> Optional[str]:
    """A ``doc.spans`` key (or null where ``optional``: then ``null_means``)."""
    if key is None and optional:
        return None
    if not isinstance(key, str) or not key:
        allowed = f"null ({null_means}) or " if optional else ""
        raise ValueError(f"{owner}: '{setting}' must be {allowed}a non-empty doc.spans key, got {key!r}.")
    return key


def check_unmask_code(layers: Union[str, Sequence[int]]) -> None:
    """A layer group code (``"0110"``) or a sequence of layer indices; the model's layer count
    is checked when it is loaded (``unmasking.layer_selection``)."""
    if isinstance(layers, str):
        if not layers or set(layers) - {"0", "1"}:
            raise ValueError(f"'unmask' must be a layer group code of 0s and 1s such as \"0110\", got {layers!r}.")
        return
    if not isinstance(layers, (list, tuple)):
        raise ValueError(f"'unmask' must be a group code such as \"0110\" or a list of layer indices, got {layers!r}.")
    bad = [i for i in layers if not isinstance(i, int) or isinstance(i, bool) or i < 0]
    if bad:
        raise ValueError(f"'unmask' layer indices must be non-negative integers, got {bad}.")


def lone_surrogate(value) -> Optional[str]:
    """Where text or JSON data holds a lone surrogate (``"\\udcff"`` is valid JSON and a Python
    string, but no Unicode text: it cannot be tokenized or written as UTF-8), as ``U+DCFF at
    character 4`` or ``U+DCFF in the field 'note'``; None when it holds none."""
    if isinstance(value, str):
        try:
            value.encode("utf8")
            return None
        except UnicodeEncodeError as err:
            return f"U+{ord(value[err.start]):04X} at character {err.start}"
    for name, item in value.items() if isinstance(value, dict) else [(None, value)]:
        try:
            json.dumps({name: item} if name is not None else item, ensure_ascii=False).encode("utf8")
        except UnicodeEncodeError as err:
            where = f" in the field {name.encode('utf8', 'backslashreplace').decode()!r}" if name is not None else ""
            return f"U+{ord(err.object[err.start]):04X}{where}"
    return None


def inside(root: Path, name: object) -> Path:
    """``root / name`` for a relative ``name`` that stays inside ``root``; a ValueError naming it otherwise."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"{name!r} is not a file name")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor or ".." in parts:
        raise ValueError(f"{name!r} is not a relative path inside {root}")
    target = Path(root).joinpath(*parts)
    if not target.resolve().is_relative_to(Path(root).resolve()):
        raise ValueError(f"{name!r} leads outside {root}")
    return target


# Settings an earlier version had, by factory ("*": every component, "seqgpt_*": the SeqGPT
# ones): what to write instead. spaCy checks a component's settings against its factory's
# signature before any code of ours runs, and refuses these as "unexpected argument"; the
# seqgpt commands add this line to that (retired_settings).
_MODEL_BLOCK = "[components.{name}.model] {key} (model settings live in the model block)"
_DECODING_BLOCK = "[components.{name}.decoding] {key} (decoding settings live in the decoding block)"
_TEMPLATES_BLOCK = "[components.{name}.templates] {new} (the three questions live in one block)"
RETIRED_SETTINGS = {
    "*": {key: _MODEL_BLOCK for key in ("device", "dtype", "quantize", "adapter", "trust_remote_code", "unmask")},
    "seqgpt_events": {"event_types": "labels (an event component's labels are its event types)",
                      **{old: _TEMPLATES_BLOCK.replace("{new}", new) for old, new in (
                          ("trigger_template", "trigger"), ("type_template", "event_type"),
                          ("argument_template", "argument"))}},
    "seqgpt_*": {**{key: _DECODING_BLOCK for key in ("batch_size", "max_new_tokens", "num_beams", "max_input_tokens",
                                                    "constrained", "jump_forward", "speculate", "draft_tokens",
                                                    "span_search")},
                 "scoring": "probabilities (the labels' probabilities instead of a generated answer)"},
    "seqgpt_typing": {"output_key": "spans_key (where multi-label typing writes its spans)"},
    "seqgpt_rel": {"spans_key": "input_key (the spans whose pairs seqgpt_rel classifies)",
                   **{key: "[components.{name}.candidates] {key} (which pairs are asked about: one block)"
                      for key in ("max_distance", "max_pairs")}},
    "llm_unmasked_tagger": {"max_length": "max_input_tokens (every component's window, in subwords)"},
}


def retired_settings(errors: Sequence[dict]) -> list:
    """For a config error's ``errors`` (confection's: ``loc`` = factory, setting), a line per
    setting an earlier version had, naming what replaced it."""
    lines = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if len(loc) != 2 or not str(error.get("msg", "")).startswith("unexpected argument"):
            continue
        factory, key = loc
        groups = [factory, *(("seqgpt_*", "*") if factory.startswith("seqgpt_") else ()),
                  *(("*",) if factory.startswith("llm_unmasked") else ())]
        instead = next((RETIRED_SETTINGS[group][key] for group in groups
                        if key in RETIRED_SETTINGS.get(group, {})), None)
        if instead:
            lines.append(f"{factory}: '{key}' was renamed or moved; write {instead.format(name=factory, key=key)}.")
    return lines
