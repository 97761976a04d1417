"""What one more forward pass costs, in tokens, on this device: the decoder's ``pass_overhead``.

The decoder encodes prompts in passes of like lengths (``length_buckets``), paying for a pass
its rows times its longest row plus a fixed ``overhead`` in tokens. This times the decoder's
own prompt pass (``ModelCalls.encode``: forward, KV cache with room to grow, last logits) on
batches of equal-length prompts, fits ``seconds = a + b * tokens`` by least squares and prints
``a / b``, to compare with the constant the decoder uses on this device type.

    python benchmarks/pass_overhead.py                          # tiny random BLOOM
    python benchmarks/pass_overhead.py --preset bloomz-560m     # BLOOMZ-560M's shape
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import spacy
from wasabi import msg

from inference import make_model  # benchmarks/ is the script's folder
from spacy_seqgpt.models.pass_costs import DEFAULT_PASS_OVERHEAD_TOKENS, PASS_OVERHEAD_TOKENS

ROWS = (1, 2, 4, 8, 16, 32, 64)
LENGTHS = (16, 32, 64, 128, 256)


def timed_pass(decoder, rows: int, length: int, repeats: int) -> float:
    """Median seconds of one prompt pass over ``rows`` prompts of ``length`` tokens."""
    import torch

    generator = torch.Generator().manual_seed(rows * 1000 + length)
    vocab = len(decoder.shared.tokenizer)
    prompts = torch.randint(3, vocab, (rows, length), generator=generator).tolist()
    synchronize = torch.cuda.synchronize if decoder.shared.device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first is a warm-up
            synchronize()
            start = time.perf_counter()
            decoder.calls.encode(prompts, 32, decoder.pass_overhead)
            synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a local model folder (default: random weights, see --preset)")
    parser.add_argument("--preset", choices=["tiny", "bloomz-560m"], default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=4096, help="leave out passes of more tokens")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nlp = spacy.blank("en")
        pipe = nlp.add_pipe("seqgpt_ner", config={"labels": ["person"], "model": {
            "name": args.model or make_model(args.preset, Path(tmp) / "model"), "device": args.device}})
        decoder = pipe.asker().decoder()
        decoder.pass_overhead = float("inf")  # one pass per call, whatever the lengths
        sizes = [(rows, length) for rows in ROWS for length in LENGTHS if rows * length <= args.max_tokens]
        rows_out = []
        for rows, length in sizes:
            seconds = timed_pass(decoder, rows, length, args.repeats)
            rows_out.append((rows, length, rows * length, seconds))
            msg.text(f"{rows:3d} x {length:4d} = {rows * length:6d} tokens: {seconds * 1000:9.2f} ms")
    tokens = np.array([row[2] for row in rows_out], dtype=float)
    seconds = np.array([row[3] for row in rows_out])
    per_token, per_pass = np.polyfit(tokens, seconds, 1)
    device = decoder.shared.device
    current = PASS_OVERHEAD_TOKENS.get(device.type, DEFAULT_PASS_OVERHEAD_TOKENS)
    msg.table([(r, n, t, f"{s * 1000:.2f}", f"{(per_pass + per_token * t) * 1000:.2f}") for r, n, t, s in rows_out],
              header=("rows", "length", "tokens", "ms", "fit ms"), divider=True)
    msg.good(f"{args.model or args.preset} on {device}: a pass costs {per_pass * 1000:.2f} ms plus "
             f"{per_token * 1e6:.2f} us a token, so one more pass costs {per_pass / per_token:.0f} tokens "
             f"(the decoder uses {current} on {device.type}: ratio {per_pass / per_token / current:.2f})")


if __name__ == "__main__":
    main()
