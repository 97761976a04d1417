"""``unmask(model, layers)``: remove the causal mask in chosen layers of a Hugging Face decoder.

After Dukić & Šnajder: a decoder LLM tags tokens better when some layer groups see the whole
sequence. Selected layers run ``partial_attention`` bidirectionally (``mode="full"``) or as a
prefix-LM over the prompt (``mode="prompt"``: bidirectional over the prompt, causal over the
tokens after it, so the KV cache of ``generate()`` stays exact); the other layers stay causal.
Padding is masked everywhere, and BLOOM's ALiBi goes through the kernel (symmetric on
bidirectional pairs) instead of a dense bias.

- Llama, Mistral, Qwen2: an attention function registered with transformers'
  ``AttentionInterface`` and a mask function with ``AttentionMaskInterface`` that hands it the
  2-D padding mask instead of an L x L one; each layer's mode is looked up by ``layer_idx``.
- BLOOM (no attention interface): each ``BloomAttention.forward`` is replaced.

Per-batch inputs come as keyword arguments of the model call (and of ``generate``):
``prompt_lengths`` (B,) real prompt tokens per row, for ``mode="prompt"``; or
``bidirectional_ids`` / ``segment_ids`` (B, L) as in the kernel's contract (packing).
"""
import types
from typing import Dict, Iterable, List, Optional, Sequence, Union

import torch

from ..kernels.attention import BACKENDS, AttentionLayout, partial_attention
from ..validation import check_unmask_code
from .adapters import base_model

ATTENTION_NAME = "seqgpt_partial"
MODES = ("full", "prompt")
BATCH_KWARGS = ("prompt_lengths", "bidirectional_ids", "segment_ids")
SUPPORTED = ("llama", "mistral", "qwen2", "bloom")
ATTENTION_CLASSES = ("LlamaAttention", "MistralAttention", "Qwen2Attention", "BloomAttention")


# Where unmask() keeps its state: on the unwrapped model and on each attention module, whose
# patched forward reads it (transformers calls those modules, not ours).
STATE_ATTR = "seqgpt_unmask"


def unmask_state(model) -> Optional["UnmaskState"]:
    """What :func:`unmask` did to ``model`` (a PEFT wrapper is looked through), or None."""
    return getattr(base_model(model), STATE_ATTR, None)


class UnsupportedModelError(ValueError):
    """``unmask`` does not know this model's attention."""


def layer_groups(n_layers: int, n_groups: int) -> List[range]:
    """``n_layers`` split into ``n_groups`` contiguous groups whose sizes differ by at most one:
    the first ``n_layers % n_groups`` groups get the extra layer (30 layers in 4 groups: 8, 8, 7, 7)."""
    if not 1 <= n_groups <= n_layers:
        raise ValueError(f"a code of {n_groups} groups cannot split {n_layers} layers: use at most {n_layers} digits")
    size, extra = divmod(n_layers, n_groups)
    starts = [g * size + min(g, extra) for g in range(n_groups + 1)]
    return [range(start, end) for start, end in zip(starts, starts[1:])]


def layer_selection(layers: Union[str, Sequence[int]], n_layers: int) -> List[int]:
    """Layer indices from a group code (``"0110"``: the layers split into 4 contiguous groups by
    :func:`layer_groups`, first digit nearest the input, 1 = unmasked) or from a list of indices."""
    check_unmask_code(layers)
    if isinstance(layers, str):
        groups = layer_groups(n_layers, len(layers))
        return [i for digit, group in zip(layers, groups) if digit == "1" for i in group]
    indices = list(layers)
    bad = [i for i in indices if i >= n_layers]
    if bad:
        raise ValueError(f"layer indices must be integers in [0, {n_layers}), got {bad}")
    return sorted(set(indices))


class UnmaskState:
    """What the patched attention needs: each layer's mode, the backend, and this batch's ids."""

    def __init__(self, unmasked: Iterable[int], mode: str, backend: str, alibi_slopes=None):
        self.modes: Dict[int, str] = {i: mode for i in unmasked}
        self.backend = backend
        self.alibi_slopes = alibi_slopes
        self.batch: Dict[str, Optional[torch.Tensor]] = {}
        self.layouts: Dict[tuple, tuple] = {}  # (mode, Lq, Lk, mask id) -> (mask, AttentionLayout)
        self.hook = None

    def capture(self, module, args, kwargs):
        """Forward pre-hook on the model: take this call's per-batch ids out of its kwargs, and
        forget the previous call's layouts (each model call builds its own, once, for all layers)."""
        self.start_call(**{name: kwargs.pop(name, None) for name in BATCH_KWARGS})
        return args, kwargs

    def start_call(self, **batch):
        """A new model call: its per-batch ids (``BATCH_KWARGS``), and no layouts yet. Callers that
        run the decoder directly, past the pre-hook, call this themselves."""
        self.batch = {name: batch.get(name) for name in BATCH_KWARGS}
        self.layouts = {}

    def attend(self, layer_idx: int, query, key, value, key_padding_mask, scale, alibi_slopes=None):
        """``partial_attention`` for one layer, ``(B, H, Lq, D)`` in and out."""
        if key_padding_mask is not None and key_padding_mask.dim() != 2:
            raise ValueError("unmasked layers take a 2-D padding mask (batch, length); got a "
                             f"{key_padding_mask.dim()}-D attention mask")
        mode = self.modes.get(layer_idx)
        batch, lq, length = query.shape[0], query.shape[2], key.shape[2]
        # One layout per model call and mode, shared by the layers. The model hands every layer the
        # same mask object: keying by it (kept alive with the layout) keeps a layer recomputed for
        # an earlier call (gradient checkpointing) from reading another call's layout.
        cache_key = (mode, lq, length, id(key_padding_mask))
        layout = self.layouts.get(cache_key, (None, None))[1]
        if layout is None:  # the first layer of this model call in this mode
            mask_argument = key_padding_mask
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask[:, -length:].bool()
            bidirectional_ids = None
            if mode == "prompt":
                bidirectional_ids = self._ids("bidirectional_ids", length)
                if bidirectional_ids is None:
                    bidirectional_ids = self._prompt_ids(key_padding_mask, batch, length, key.device)
            layout = AttentionLayout(
                batch, lq, length, key_padding_mask=key_padding_mask, segment_ids=self._ids("segment_ids", length),
                bidirectional_ids=bidirectional_ids, causal=mode != "full", alibi_slopes=alibi_slopes)
            self.layouts[cache_key] = (mask_argument, layout)
        device_type = query.device.type
        if torch.is_autocast_enabled(device_type):  # as SDPA does: rotary leaves q, k in float32, v in bf16
            dtype = torch.get_autocast_dtype(device_type)
            query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
        return partial_attention(query, key, value, layout=layout, scale=scale, backend=self.backend)

    def _ids(self, name: str, length: int) -> Optional[torch.Tensor]:
        ids = self.batch.get(name)
        if ids is None:
            return None
        if ids.dim() != 2 or ids.shape[1] < length:
            raise ValueError(f"{name} must be (batch, length) covering all {length} positions (cache included), "
                             f"got shape {tuple(ids.shape)}")
        return ids[:, -length:]

    def _prompt_ids(self, key_padding_mask, batch: int, length: int, device) -> torch.Tensor:
        prompt_lengths = self.batch.get("prompt_lengths")
        if prompt_lengths is None:
            raise ValueError("mode='prompt' needs the prompt length of each row: call the model (or generate) "
                             "with prompt_lengths=tensor of shape (batch,), or pass bidirectional_ids")
        prompt_lengths = torch.as_tensor(prompt_lengths, device=device).reshape(-1)
        if prompt_lengths.shape[0] != batch:
            raise ValueError(f"prompt_lengths has {prompt_lengths.shape[0]} values for a batch of {batch}")
        real = (torch.ones(batch, length, dtype=torch.bool, device=device) if key_padding_mask is None
                else key_padding_mask)
        index = real.long().cumsum(1) - 1  # position among the row's real tokens
        return torch.where(real & (index < prompt_lengths[:, None]), 0, -1)


def _padding_mask_function(batch_size, q_length=None, kv_length=None, q_offset=0, kv_offset=0,
                           mask_function=None, attention_mask=None, **kwargs):
    """For transformers' mask creation: the 2-D padding mask of the keys (None: none given). A mask
    without padding is passed as it is: asking whether it has any would wait for the GPU, and
    the kernels read its keys only in partial tiles."""
    if attention_mask is None:
        return None
    if attention_mask.shape[-1] < kv_length:  # a static cache longer than the mask seen so far
        attention_mask = torch.nn.functional.pad(attention_mask, (0, kv_length - attention_mask.shape[-1]))
    return attention_mask[:, -kv_length:]


def _interface_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                         **kwargs):
    """Registered as an attention implementation: the layer's mode from its ``layer_idx``."""
    if dropout and module.training:
        raise ValueError("unmasked attention has no attention dropout; set the model's attention_dropout to 0")
    window = getattr(module.config, "sliding_window", None)
    if window is not None and getattr(module.config, "use_sliding_window", True) and key.shape[2] > window:
        raise ValueError(f"sequences of {key.shape[2]} tokens exceed the model's sliding window ({window}), "
                         "which unmasked attention does not implement")
    out = getattr(module, STATE_ATTR).attend(module.layer_idx, query, key, value, attention_mask, scaling)
    return out.transpose(1, 2).contiguous(), None


def _bloom_attention_forward(self, hidden_states, residual, alibi, attention_mask, layer_past=None,
                             use_cache=False, output_attentions=False, **kwargs):
    """BloomAttention.forward on the kernel: ALiBi from the slopes, no dense bias or mask."""
    from transformers.models.bloom.modeling_bloom import dropout_add

    batch, q_length, _ = hidden_states.shape
    query, key, value = self._reshape(self.query_key_value(hidden_states))
    if layer_past is not None:
        key, value = layer_past.update(key, value, self.layer_idx)
    state = getattr(self, STATE_ATTR)
    out = state.attend(self.layer_idx, query, key, value, attention_mask, self.inv_norm_factor,
                       alibi_slopes=state.alibi_slopes.to(query.device))
    context = out.transpose(1, 2).reshape(batch, q_length, self.hidden_size)
    return dropout_add(self.dense(context), residual, self.hidden_dropout, self.training), None


def _register_interfaces() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, _interface_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, _padding_mask_function)


def _accept_batch_kwargs_in_generate(model) -> None:
    """``generate()`` rejects keyword arguments its model's forward does not name; ours are taken
    by the pre-hook, so they are hidden from that check (and passed on at every step)."""
    if getattr(model, "_seqgpt_validate", None) is not None or not hasattr(model, "_validate_model_kwargs"):
        return  # done already, or a model that does not generate (a token classifier)
    validate = model._validate_model_kwargs

    def validate_without_batch_ids(model_kwargs):
        return validate({key: value for key, value in model_kwargs.items() if key not in BATCH_KWARGS})

    model._seqgpt_validate = validate
    model._validate_model_kwargs = validate_without_batch_ids


def _set_attention_name(model) -> None:
    """Make transformers call our attention and mask functions (BLOOM: only the mask function)."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = ATTENTION_NAME


def unmask(model, layers: Union[str, Sequence[int]], *, mode: str = "full", backend: str = "auto"):
    """Remove the causal mask in ``layers`` of ``model`` (in place; returns the model).

    ``layers``: a group code such as ``"0110"`` or a list of layer indices; ``"0000"`` keeps the
    stock model's outputs. ``mode``: ``"full"`` (selected layers bidirectional) or ``"prompt"``
    (prefix-LM; pass ``prompt_lengths`` with each batch). ``backend``: as for
    ``partial_attention``. Works on PEFT-wrapped models and in training; calling it again
    replaces the previous selection.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    base = base_model(model)
    config = getattr(base, "config", None)
    model_type = getattr(config, "model_type", None)
    attention = [m for m in base.modules() if type(m).__name__ in ATTENTION_CLASSES]
    if model_type not in SUPPORTED or not attention:
        raise UnsupportedModelError(f"unmask supports {', '.join(SUPPORTED)} models; got model_type={model_type!r} "
                         f"({type(base).__name__})")
    if getattr(config, "attention_dropout", 0.0):
        raise ValueError(f"unmasked attention has no attention dropout; the model has attention_dropout="
                         f"{config.attention_dropout}: set it to 0")
    if getattr(config, "pretraining_tp", 1) > 1 and getattr(config, "slow_but_exact", False):
        raise ValueError("BLOOM's slow_but_exact tensor-parallel emulation is not supported by unmask")
    n_layers = len(attention)
    slopes = None
    if model_type == "bloom":
        from transformers.models.bloom.modeling_bloom import build_alibi_tensor

        # BLOOM's bias at distance 1 is each head's slope (build_alibi_tensor is the public
        # function of every transformers 5.x; the slopes' own helper is not)
        slopes = build_alibi_tensor(torch.ones(1, 2), config.n_head, torch.float32)[:, 0, 1]
    state = UnmaskState(layer_selection(layers, n_layers), mode, backend, slopes)
    old = unmask_state(base)
    if old is not None and old.hook is not None:
        old.hook.remove()
    state.hook = base.register_forward_pre_hook(state.capture, with_kwargs=True)
    setattr(base, STATE_ATTR, state)
    _accept_batch_kwargs_in_generate(base)
    _register_interfaces()
    for module in attention:
        setattr(module, STATE_ATTR, state)
        if type(module).__name__ == "BloomAttention":
            module.forward = types.MethodType(_bloom_attention_forward, module)
    _set_attention_name(base)
    return model
