"""A KV cache that writes each step in place.

transformers' ``DynamicCache`` concatenates every layer's keys and values with the new ones at
each step, copying the whole cache; at 24 layers and a few hundred positions that copy is a
measurable part of a CPU decoding step (BENCHMARKS.md). Here each layer keeps buffers with room
to spare: a step writes its positions into the room and the layer hands out views of the part
written so far. When the room runs out the buffers double (rare: the room is sized from
``max_new_tokens``). Rows leaving the batch, or beams reordering, still copy (``index_select``),
as they must.
"""
import inspect

from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, get_layer_types_and_kwargs


def cache_keyword(model) -> str:
    """The keyword ``model.forward`` takes its KV cache by: ``cache`` since transformers 5.24
    (``past_key_values`` is deprecated there and goes in 5.40), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def returned_cache(output):
    """The KV cache a model call returned, by the name its output class has."""
    return output.cache if "cache" in getattr(output, "__dataclass_fields__", {}) else output.past_key_values


class PreallocatedLayer(DynamicLayer):
    def __init__(self, room: int):
        super().__init__()
        self.room = room
        self.length = 0
        self._keys = self._values = None

    def update(self, key_states, value_states, *args, **kwargs):
        new = key_states.shape[-2]
        if not self.is_initialized:
            self.dtype, self.device = key_states.dtype, key_states.device
            self._keys = key_states.new_empty(key_states.shape[:-2] + (new + self.room, key_states.shape[-1]))
            self._values = value_states.new_empty(value_states.shape[:-2] + (new + self.room, value_states.shape[-1]))
            self.is_initialized = True
        elif self.length + new > self._keys.shape[-2]:
            self._keys, self._values = (self._grown(buffer, 2 * (self.length + new))
                                        for buffer in (self._keys, self._values))
        self._keys[..., self.length:self.length + new, :] = key_states
        self._values[..., self.length:self.length + new, :] = value_states
        self.length += new
        self._expose()
        return self.keys, self.values

    def _grown(self, buffer, capacity: int):
        out = buffer.new_empty(buffer.shape[:-2] + (capacity, buffer.shape[-1]))
        out[..., :self.length, :] = buffer[..., :self.length, :]
        return out

    def _expose(self) -> None:
        self.keys, self.values = self._keys[..., :self.length, :], self._values[..., :self.length, :]

    def get_seq_length(self) -> int:
        return self.length

    def reorder_cache(self, beam_idx) -> None:
        if self.is_initialized:
            self._keys = self._keys.index_select(0, beam_idx.to(self._keys.device))
            self._values = self._values.index_select(0, beam_idx.to(self._values.device))
            self._expose()

    def batch_select_indices(self, indices) -> None:
        self.reorder_cache(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self._expose()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes the negative number of positions to remove")
        if self.is_initialized:
            self.length = max(0, self.length + tokens_to_remove)
            self._expose()

    def reset(self) -> None:
        self.length = 0
        self._keys = self._values = None
        super().reset()


    @classmethod
    def stacked(cls, parts, room: int) -> "PreallocatedLayer":
        """The rows of ``parts`` one after another, each part's positions aligned right to the
        longest part's: the columns left of a shorter part's are zeros, which the attention mask
        must leave out (zeros, not whatever memory held: a masked weight of 0 times NaN is NaN)."""
        width = max(part.length for part in parts)
        first = parts[0]._keys
        out = cls(room)
        out.dtype, out.device, out.length, out.is_initialized = first.dtype, first.device, width, True
        shape = (sum(part._keys.shape[0] for part in parts),) + first.shape[1:-2] + (width + room, first.shape[-1])
        out._keys, out._values = first.new_zeros(shape), first.new_zeros(shape)
        row = 0
        for part in parts:
            rows = slice(row, row + part._keys.shape[0])
            out._keys[rows, ..., width - part.length:width, :] = part.keys
            out._values[rows, ..., width - part.length:width, :] = part.values
            row = rows.stop
        out._expose()
        return out


class PreallocatedCache(DynamicCache):
    """A ``DynamicCache`` whose layers have ``room`` positions beyond their first write."""

    def __init__(self, room: int):
        Cache.__init__(self, layer_class_to_replicate=lambda: PreallocatedLayer(room))

    @classmethod
    def stacked(cls, caches, room: int) -> "PreallocatedCache":
        """One cache of the rows of ``caches`` (passes over left-padded rows of unlike widths),
        aligned right as if one pass had encoded them all (see ``PreallocatedLayer.stacked``)."""
        out = cls(room)
        out.layers = [PreallocatedLayer.stacked(parts, room) for parts in zip(*(cache.layers for cache in caches))]
        return out


def supports_preallocation(config) -> bool:
    """Models whose layers all attend to the whole cache (no sliding windows, no linear
    attention): a ``DynamicCache`` would build plain ``DynamicLayer``\\ s for them too."""
    try:
        types, _ = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
    except (AttributeError, TypeError):  # a configuration transformers cannot read layer types from
        return False
    return all(kind == "full_attention" for kind in types)
