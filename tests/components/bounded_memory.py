"""A child process of ``test_memory.py``: components over texts that once took gigabytes, run
under a memory limit so that a regression fails the test instead of the machine.

    python bounded_memory.py MODEL SCENARIO

loads the pipeline of SCENARIO on MODEL, annotates a short Doc (the model and torch's threads
are then in place), limits the process's address space to what it uses then plus
``LIMIT_BYTES``, annotates SCENARIO's Docs and prints one JSON line: the component's ``stats``
and what it wrote. Over the limit, an allocation fails and the process exits non-zero.
"""
import json
import os
import resource
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import spacy  # noqa: E402
from spacy.tokens import Doc, Span  # noqa: E402

LIMIT_BYTES = 2 << 30


def limit_memory(extra: int = LIMIT_BYTES) -> None:
    """Cap the address space at what the process holds now plus ``extra`` bytes."""
    with open("/proc/self/status", encoding="utf8") as status:
        held = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (held + extra, held + extra))


def run_on(n_clauses: int) -> tuple:
    """One sentence of ``n_clauses`` clauses and the character ranges of its names."""
    text, names = "", []
    for i in range(n_clauses):
        clause = f"Olaf{i} Scholz visited the old market of town {i} with friends and family"
        names.append((len(text), len(text) + len(f"Olaf{i} Scholz")))
        text += clause + (", and " if i < n_clauses - 1 else "")
    return text, names


def with_ents(nlp, text: str, ranges) -> Doc:
    doc = nlp(text) if "sentencizer" in nlp.pipe_names else nlp.make_doc(text)
    doc.ents = [doc.char_span(start, end, label="ENT") for start, end in ranges]
    return doc


def pipeline(model: str, factory: str, sentences: bool, **config) -> spacy.Language:
    nlp = spacy.blank("en")
    if sentences:
        nlp.add_pipe("sentencizer")
    labels = {"seqgpt_events": ["Attack"]}.get(factory, ["person", "city"])
    nlp.add_pipe(factory, name="component", config={"labels": labels, "model": model, "max_new_tokens": 8,
                                                    "max_input_tokens": 128, **config})
    return nlp


def annotate(nlp, docs) -> dict:
    component = nlp.get_pipe("component")
    for doc in docs:  # as nlp(doc) would, past the sentencizer the Doc already went through
        component(doc)
    return {"stats": dict(component.stats), "ents": [len(doc.ents) for doc in docs],
            "rel": [len(doc._.rel or {}) for doc in docs]}


def scenario(name: str, model: str):
    """The pipeline and a function that annotates with it."""
    if name == "typing_run_on":  # 9.4k characters, 150 names, one sentence
        nlp = pipeline(model, "seqgpt_typing", True)
        text, names = run_on(150)
        return nlp, lambda: annotate(nlp, [with_ents(nlp, text, names)])
    if name == "rel_run_on":  # 3.7k characters, 60 names, one sentence
        nlp = pipeline(model, "seqgpt_rel", True)
        text, names = run_on(60)
        return nlp, lambda: annotate(nlp, [with_ents(nlp, text, names)])
    if name in ("typing_long_token", "typing_longer_token"):  # no sentences; the name is one long token
        nlp = pipeline(model, "seqgpt_typing", False)
        size = 8_000 if name == "typing_long_token" else 50_000
        text = "We met " + "Ab" * (size // 2) + " in Berlin yesterday ."
        berlin = text.index("Berlin")
        return nlp, lambda: annotate(nlp, [with_ents(nlp, text, [(7, 7 + size), (berlin, berlin + 6)])])
    if name == "events_run_on":  # the confirm step and the arguments ask about a trigger in its context
        nlp = pipeline(model, "seqgpt_events", True, confirm=True, roles={"Attack": ["attacker"]})
        text, names = run_on(150)

        def run():
            component = nlp.get_pipe("component")
            doc = nlp(text)
            triggers = [[(Span(doc, span.start, span.end, label="Attack"), 1.0)
                         for span in with_ents(nlp, text, names).ents]]
            confirmed = component._confirmed([doc], triggers)
            component._arguments([doc], triggers)
            return {"stats": dict(component.stats), "confirmed": len(confirmed[0])}

        return nlp, run
    raise SystemExit(f"unknown scenario {name!r}")


def main(model: str, names) -> None:
    """Every scenario's pipeline is loaded and warmed up before the limit, then each runs."""
    scenarios = {name: scenario(name, model) for name in names}
    for nlp, _ in scenarios.values():
        nlp.get_pipe("component")(with_ents(nlp, "Olaf Scholz visited Berlin.", [(0, 11), (20, 26)]))
    limit_memory()
    print(json.dumps({name: run() for name, (_, run) in scenarios.items()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
