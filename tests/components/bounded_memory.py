"""A child process of ``test_memory.py``: components over texts that once took gigabytes, run
under a memory limit so that a regression fails the test instead of the machine.

    python bounded_memory.py MODEL SCENARIO [SCENARIO ...]
    python bounded_memory.py MODEL fuzz EXAMPLES

loads the pipelines on MODEL, annotates a short Doc with each (the model and torch's threads
are then in place), limits the process's address space to what it uses then plus
``LIMIT_BYTES``, annotates and prints one JSON line: each scenario's ``stats`` and what it
wrote, or how many random Docs went through every component (``fuzz``). Over the limit, an
allocation fails and the process exits non-zero.
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
    nlp.add_pipe(factory, name="component", config={"labels": labels, "model": model,
                                                    "decoding": {"max_new_tokens": 8, "max_input_tokens": 128},
                                                    **config})
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
            asker = component.asker()
            confirmed = component._confirmed(asker, [doc], triggers)
            component._arguments(asker, [doc], triggers)
            return {"stats": dict(component.stats), "confirmed": len(confirmed[0])}

        return nlp, run
    raise SystemExit(f"unknown scenario {name!r}")


def fuzz_pipelines(model: str) -> dict:
    """Every component on one model, small budgets: with sentences (True) and without (False)."""
    small = {"model": model, "decoding": {"max_new_tokens": 6, "max_input_tokens": 32, "batch_size": 8}}
    pipelines = {}
    for sentences in (True, False):
        nlp = spacy.blank("en")
        if sentences:
            nlp.add_pipe("sentencizer")
        nlp.add_pipe("seqgpt_typing", config={**small, "labels": ["person", "city"], "multi_label": True,
                                              "spans_key": "types"})
        nlp.add_pipe("seqgpt_rel", config={**small, "labels": ["works for"], "threshold": 0.0,
                                           "candidates": {"max_pairs": 12}})
        nlp.add_pipe("seqgpt_textcat", config={**small, "labels": ["sports", "politics"]})
        nlp.add_pipe("seqgpt_events", config={**small, "labels": ["Attack"], "roles": {"Attack": ["attacker"]},
                                              "confirm": True})
        nlp.add_pipe("seqgpt_questions", config={**small, "questions": ["Who is named?"]})
        nlp.add_pipe("seqgpt_ner", config={**small, "labels": ["person", "city"], "spans_key": "ner"})
        tagger = nlp.add_pipe("llm_unmasked_tagger", config={"model": {"name": model, "unmask": "1111"},
                                                             "spans_key": "tagged", "max_input_tokens": 32})
        tagger.initialize(labels=["person", "city"])
        pipelines[sentences] = nlp
    return pipelines


def annotations(doc) -> tuple:
    """What the components wrote, to compare a Doc with its round trip."""
    groups = {key: [(s.start, s.end, s.label_) for s in group] for key, group in doc.spans.items()}
    return (doc.text, [(e.start, e.end, e.label_) for e in doc.ents], groups, dict(doc.cats),
            sorted((key, sorted(scores)) for key, scores in (doc._.rel or {}).items()))


def fuzz(model: str, examples: int) -> dict:
    """Random texts (long run-on sentences, long tokens, odd Unicode) with entities on every k-th
    token through every component, then through ``Doc.to_bytes``/``from_bytes`` and a DocBin,
    and through ``nlp.pipe(n_process=2)``; returns how many Docs went through."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from spacy.tokens import DocBin

    pipelines = fuzz_pipelines(model)
    for nlp in pipelines.values():  # loaded and warmed up before the limit
        list(nlp.pipe(["Olaf Scholz visited Berlin."]))
    limit_memory()
    words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=12)
    run_on = st.lists(words, min_size=50, max_size=500).map(", ".join)  # no full stop: one sentence
    long_token = st.tuples(st.sampled_from("aZ9ü字🙂-"), st.integers(1_000, 20_000)).map(lambda p: p[0] * p[1])
    texts = st.lists(st.one_of(run_on, long_token, st.text(max_size=200)), min_size=1, max_size=3).map(" ".join)
    seen = {"docs": 0}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(texts=st.lists(texts, min_size=1, max_size=2), every=st.integers(1, 6), sentences=st.booleans())
    def through_everything(texts, every, sentences):
        nlp = pipelines[sentences]
        docs = []
        for text in texts:
            doc = nlp.make_doc(text)
            tokens = [token for token in doc if not token.is_space][::every][:60]
            doc.ents = [doc[t.i:t.i + 1] for t in tokens]
            for span in doc.ents:
                span.label_ = "ENT"
            docs.append(doc)
        annotated = list(nlp.pipe(docs))
        for doc in annotated:
            again = Doc(nlp.vocab).from_bytes(doc.to_bytes())
            assert annotations(again) == annotations(doc)
        stored = DocBin(docs=annotated, store_user_data=True).to_bytes()
        read = list(DocBin(store_user_data=True).from_bytes(stored).get_docs(nlp.vocab))
        assert [annotations(doc) for doc in read] == [annotations(doc) for doc in annotated]
        workers = list(nlp.pipe([doc.text for doc in annotated], n_process=2, batch_size=1))
        assert [doc.text for doc in workers] == [doc.text for doc in annotated]
        for doc in workers:
            assert all(0 <= start < end <= len(doc) for start, end, _ in annotations(doc)[1])
            assert all(0 <= key[0] < key[1] <= len(doc) for key, _ in annotations(doc)[4])
        seen["docs"] += len(annotated)

    through_everything()
    return seen


def main(model: str, names) -> None:
    """Every scenario's pipeline is loaded and warmed up before the limit, then each runs."""
    scenarios = {name: scenario(name, model) for name in names}
    for nlp, _ in scenarios.values():
        nlp.get_pipe("component")(with_ents(nlp, "Olaf Scholz visited Berlin.", [(0, 11), (20, 26)]))
    limit_memory()
    print(json.dumps({name: run() for name, (_, run) in scenarios.items()}))


if __name__ == "__main__":
    if sys.argv[2] == "fuzz":
        print(json.dumps(fuzz(sys.argv[1], int(sys.argv[3]))))
    else:
        main(sys.argv[1], sys.argv[2:])
