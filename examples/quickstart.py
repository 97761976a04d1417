"""Quickstart: open-domain entities and categories with SeqGPT in a spaCy pipeline.

    python examples/quickstart.py                               # a tiny random model, made here
    python examples/quickstart.py --model DAMO-NLP/SeqGPT-560M  # the released weights (hub or local folder)

The tiny model has random weights, so its answers are noise: it shows the whole path
(prompt, batched generation, parsing, alignment, saving and loading) running offline.
"""
import argparse
import tempfile
from pathlib import Path

import spacy
from wasabi import msg

TEXTS = [
    "Tim Cook met Olaf Scholz in Berlin.",
    "Serena Williams won the final in New York.",
    "Apple opened a new office in Paris.",
]


def build(model: str):
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"labels": ["person", "organization", "location"], "model": model})
    nlp.add_pipe("seqgpt_textcat", config={"labels": ["sports", "politics", "business"], "model": model})
    return nlp


def main(model: str = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            from spacy_seqgpt.models.tiny import write_tiny_model

            model = str(write_tiny_model(Path(tmp) / "tiny-bloom", arch="bloom"))
            msg.info("No --model given: using a tiny random-weight BLOOM (answers are noise)")
        nlp = build(model)
        for doc in nlp.pipe(TEXTS, batch_size=8):
            print(f"{doc.text}\n  ents: {[(e.text, e.label_) for e in doc.ents]}\n  cats: {doc.cats}")
        ner = nlp.get_pipe("seqgpt_ner")
        print(f"answers: {ner.stats['answers']}, not found in the text: {ner.stats['dropped']}")
        nlp.to_disk(Path(tmp) / "pipeline")
        reloaded = spacy.load(Path(tmp) / "pipeline")
        same = all(a.ents == b.ents and a.cats == b.cats for a, b in zip(nlp.pipe(TEXTS), reloaded.pipe(TEXTS)))
        (msg.good if same else msg.fail)(
            "Saved, loaded back, same annotations" if same else "Reloaded pipeline differs"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="hub id or local folder of a SeqGPT (or any causal LM) model")
    main(parser.parse_args().model)
