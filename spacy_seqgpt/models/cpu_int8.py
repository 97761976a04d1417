"""``quantize = "int8"``: a loaded model's linear layers as torch's dynamic int8 layers, on a CPU.

torch's own dynamic quantization (FBGEMM) keeps each weight matrix in int8 with a scale per
output row, quantizes the activations per batch and multiplies in int8 (with VNNI where the CPU
has it); it needs no other package. ``benchmarks/inference.py --precisions auto float32 int8``
measures it against bfloat16 and float32. The output layer stays in float: the answer scores
are its log-probabilities, and the embeddings it shares weights with are read as floats.
"""
import warnings


def quantize_linear_layers(model) -> None:
    """Replace ``model``'s ``nn.Linear`` layers, except its output layer, in place."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    output = model.get_output_embeddings()
    targets = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and module is not output}
    with warnings.catch_warnings():  # torch marks eager quantization as moving to torchao; the kernels are the same
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning, FutureWarning))
        quantize_dynamic(model, targets, inplace=True)
