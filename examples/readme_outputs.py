"""Run the component examples of docs/components.md on a model and print what each returned,
so their comments show real output (and can be checked again after any change):

    python examples/readme_outputs.py training/ft/final    # the smollm2 preset's SeqGPT-135M
"""
import sys

import spacy

from spacy_seqgpt import SeqGPT


def main(model: str) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_ner", config={"labels": ["person", "location"], "model": model})
    nlp.add_pipe("seqgpt_textcat", config={"labels": ["sports", "politics"], "model": model})
    doc = nlp("Tim Cook met Olaf Scholz in Berlin.")
    print("ner + textcat:", [(e.text, e.label_) for e in doc.ents], {k: round(v, 2) for k, v in doc.cats.items()})

    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "ENT", "pattern": "Olaf Scholz"}])
    nlp.add_pipe("seqgpt_typing", config={"labels": ["politician", "athlete", "company", "city"], "model": model})
    print("typing:", [(e.text, e.label_, e._.seqgpt_score) for e in nlp("Olaf Scholz spoke in Berlin.").ents])

    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(
        [{"label": "ENT", "pattern": p} for p in ("Tim Cook", "Apple", "Cupertino")]
    )
    nlp.add_pipe("seqgpt_rel", config={"labels": ["works for", "based in"], "model": model})
    doc = nlp("Tim Cook works for Apple in Cupertino.")
    print(
        "rel:", doc._.rel.get((0, 2, 4, 5)), "pairs with a relation:", sum(any(v.values()) for v in doc._.rel.values())
    )

    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_events", config={"labels": ["Attack", "Transport"],
                                          "roles": {"Attack": ["attacker", "target"], "Transport": ["destination"]},
                                          "model": model})
    doc = nlp("Rebels attacked the convoy and then travelled to Kabul.")
    print("events:", [(e["trigger"].text, e["type"], e["arguments"]) for e in doc._.events])

    nlp = spacy.blank("en")
    nlp.add_pipe("seqgpt_questions", config={"model": model})
    doc = nlp.make_doc("Steve Jobs founded Apple in Cupertino in 1976.")
    doc._.questions = {"founder": "Who founded the company, and where?", "year": "Year: when was it founded?"}
    print("questions:", [(span.label_, span.text) for span in nlp(doc).spans["answers"]])

    seqgpt = SeqGPT(model, decoding={"batch_size": 16})
    print("extract:", seqgpt.extract(["Tim Cook met Olaf Scholz in Berlin."], ["person", "location"]))
    print("classify:", seqgpt.classify(["The bank raised rates again."], ["sports", "politics", "business"],
                                       probabilities=True))
    print("classify_pairs:", seqgpt.classify_pairs(["A man plays a guitar."], ["A person makes music."],
                                                   ["entailment", "neutral", "contradiction"]))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
