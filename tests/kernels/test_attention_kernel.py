"""The Triton attention kernels (in the interpreter on CPU) against the PyTorch reference."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spacy_seqgpt.kernels.attention import (alibi_positions, partial_attention, reference_attention,
                                            visibility)

from conftest import INTERPRETED, ROOT
from conftest import KERNEL_DEVICE as DEVICE

needs_kernels = pytest.mark.skipif(DEVICE == "cpu" and not INTERPRETED,
                                   reason="Triton kernels need CUDA or TRITON_INTERPRET=1")
TOLERANCE = {torch.float32: 2e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def padding(batch, length, side, generator):
    """A key padding mask with a different number of pads per row, on the given side."""
    mask = torch.ones(batch, length, dtype=torch.bool)
    for b in range(batch):
        n_pad = int(torch.randint(0, length // 2, (1,), generator=generator))
        if side == "left":
            mask[b, :n_pad] = False
        else:
            mask[b, length - n_pad:] = False
    return mask


def make_case(name, dtype, dim=32, seed=0, heads=4, kv_heads=2):
    generator = torch.Generator().manual_seed(seed)
    batch, lq, lk = 2, 37, 37
    options = {}
    if name == "decode":  # fewer queries than keys, as with a KV cache
        lq, lk = 5, 40
    if name in ("bidirectional", "left-pad", "no-visible-key"):
        options["key_padding_mask"] = padding(batch, lk, "left", generator)
    if name == "right-pad":
        options["key_padding_mask"] = padding(batch, lk, "right", generator)
    if name == "bidirectional":
        options["causal"] = False
    if name == "no-visible-key":  # query 0 of row 0 is itself padding, so sees nothing
        options["key_padding_mask"][0, :3] = False
    if name in ("packed", "packed-alibi"):
        options["segment_ids"] = torch.tensor([[0] * 10 + [1] * 20 + [2] * 7, [0] * 30 + [1] * 7])
    if name == "long-packed-alibi":  # segments long enough for full 16 x 16 tiles, padding inside one
        lq = lk = 64
        options["segment_ids"] = torch.tensor([[0] * 40 + [1] * 24, [0] * 16 + [1] * 48])
        options["key_padding_mask"] = torch.ones(batch, lk, dtype=torch.bool)
        options["key_padding_mask"][1, -5:] = False
    if name in ("prefix", "decode", "prefix-alibi"):
        prompt = torch.tensor([[16, 20], [25, 30]])[0 if name != "decode" else 1]
        options["bidirectional_ids"] = torch.stack([torch.where(torch.arange(lk) < p, 0, -1) for p in prompt])
        options["key_padding_mask"] = padding(batch, lk, "left", generator)
        options["key_padding_mask"][:, -lq:] = True
    if name in ("alibi", "packed-alibi", "prefix-alibi", "long-packed-alibi"):
        options["alibi_slopes"] = 0.5 ** torch.arange(1, heads + 1, dtype=torch.float32)
    q = torch.randn(batch, heads, lq, dim, generator=generator).to(dtype)
    k = torch.randn(batch, kv_heads, lk, dim, generator=generator).to(dtype)
    v = torch.randn(batch, kv_heads, lk, dim, generator=generator).to(dtype)
    return q, k, v, options


def to_device(options):
    return {key: value.to(DEVICE) if torch.is_tensor(value) else value for key, value in options.items()}


def run(backend, q, k, v, options, grad_out):
    q, k, v = (t.detach().to(DEVICE).requires_grad_() for t in (q, k, v))
    out = partial_attention(q, k, v, backend=backend, **to_device(options))
    out.backward(grad_out.to(DEVICE))
    return [t.detach().cpu().float() for t in (out, q.grad, k.grad, v.grad)]


CASES = ["causal", "bidirectional", "left-pad", "right-pad", "packed", "prefix", "alibi", "packed-alibi",
         "prefix-alibi", "long-packed-alibi", "decode", "no-visible-key"]


@needs_kernels
# fp16 in the interpreter is the same code at another precision: the full suite runs it
@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.float16, marks=pytest.mark.slow)],
                         ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", CASES)
def test_kernel_equals_reference_forward_and_backward(name, dtype):
    q, k, v, options = make_case(name, dtype)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    expected = run("torch", q.float(), k.float(), v.float(), options, grad_out.float())
    got = run("triton", q, k, v, options, grad_out)
    for label, a, b in zip(("out", "dq", "dk", "dv"), got, expected):
        assert torch.isfinite(a).all(), label
        torch.testing.assert_close(a, b, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype], msg=label)


@needs_kernels
@pytest.mark.slow  # long runs of the Triton interpreter
@pytest.mark.parametrize("name", ["causal", "bidirectional", "prefix", "packed"])
def test_kernel_on_smollm2s_shape(name):
    """SmolLM2-135M's attention: 9 query heads sharing 3 key-value heads, head dim 64."""
    q, k, v, options = make_case(name, torch.float32, dim=64, heads=9, kv_heads=3)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    for a, b in zip(run("triton", q, k, v, options, grad_out), run("torch", q, k, v, options, grad_out)):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


@needs_kernels
@pytest.mark.slow  # long runs of the Triton interpreter
@pytest.mark.parametrize("dim", [64, 128])
def test_kernel_head_dims(dim):
    q, k, v, options = make_case("prefix-alibi", torch.float32, dim=dim)
    grad_out = torch.randn(q.shape)
    for a, b in zip(run("triton", q, k, v, options, grad_out), run("torch", q, k, v, options, grad_out)):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


@needs_kernels
def test_rows_with_no_visible_key_give_zeros_and_zero_gradients():
    q, k, v, options = make_case("no-visible-key", torch.float32)
    out, dq, _, _ = run("triton", q, k, v, options, torch.ones(q.shape))
    assert out[0, :, :3].abs().max() == 0 and dq[0, :, :3].abs().max() == 0
    assert out[0, :, 3:].abs().max() > 0


@st.composite
def random_masks(draw):
    batch, lk = draw(st.integers(1, 2)), draw(st.integers(1, 40))
    lq = draw(st.integers(1, lk))
    ids = st.lists(st.integers(-1, 2), min_size=lk, max_size=lk)
    options = {"causal": draw(st.booleans())}
    if draw(st.booleans()):
        options["key_padding_mask"] = torch.tensor([draw(st.lists(st.booleans(), min_size=lk, max_size=lk))
                                                    for _ in range(batch)])
    if draw(st.booleans()):
        options["segment_ids"] = torch.tensor([sorted(draw(ids)) for _ in range(batch)])
    if draw(st.booleans()):
        options["bidirectional_ids"] = torch.tensor([draw(ids) for _ in range(batch)])
    if draw(st.booleans()):
        options["alibi_slopes"] = torch.tensor([0.5, 0.03])
    return batch, lq, lk, options


def random_inputs(case, seed):
    """(q, k, v, options, grad_out) of a ``random_masks`` case: 2 query heads sharing 1 key-value head."""
    batch, lq, lk, options = case
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, 2, lq, 16, generator=generator)
    k, v = torch.randn(2, batch, 1, lk, 16, generator=generator)
    return q, k, v, options, torch.randn(q.shape, generator=generator)


@needs_kernels
@settings(deadline=None, max_examples=25)
@given(case=random_masks(), seed=st.integers(0, 2 ** 16))
@pytest.mark.slow  # long runs of the Triton interpreter
def test_kernel_equals_reference_on_random_masks(case, seed):
    q, k, v, options, grad_out = random_inputs(case, seed)
    for a, b in zip(run("triton", q, k, v, options, grad_out), run("torch", q, k, v, options, grad_out)):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


def cpu_path_and_reference(q, k, v, options, grad_out):
    """(out, dq, dk, dv) of the CPU path (backend "auto" on CPU tensors: fused attention with the
    layout's dense mask) and of the reference, on the same inputs."""
    def run_on_cpu(backend):
        inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out = partial_attention(*inputs, backend=backend, **options)
        out.backward(grad_out)
        return [out.detach()] + [t.grad for t in inputs]

    return run_on_cpu("auto"), run_on_cpu("torch")


@pytest.mark.parametrize("name", CASES)
def test_the_cpu_path_equals_the_reference_forward_and_backward(name):
    q, k, v, options = make_case(name, torch.float32)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    for label, a, b in zip(("out", "dq", "dk", "dv"), *cpu_path_and_reference(q, k, v, options, grad_out)):
        assert torch.isfinite(a).all(), label
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5, msg=label)


@settings(deadline=None, max_examples=40)
@given(case=random_masks(), seed=st.integers(0, 2 ** 16))
def test_the_cpu_path_equals_the_reference_on_random_masks(case, seed):
    for a, b in zip(*cpu_path_and_reference(*random_inputs(case, seed))):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


@settings(deadline=None, max_examples=60)
@given(case=random_masks())
def test_reference_visibility_and_alibi_positions_follow_the_contract(case):
    """The dense reference mask, element by element against the contract's three rules (kernels/attention.py)."""
    batch, lq, lk, options = case
    pad, seg, bid = options.get("key_padding_mask"), options.get("segment_ids"), options.get("bidirectional_ids")
    visible = visibility(batch, lq, lk, "cpu", pad, seg, bid, options["causal"])
    pos = alibi_positions(pad, seg, batch, lk, "cpu")
    for b in range(batch):
        for i in range(lq):
            p = lk - lq + i
            for j in range(lk):
                rule1 = pad is None or bool(pad[b, j])
                rule2 = seg is None or seg[b, j] == seg[b, p]
                rule3 = j <= p or not options["causal"] or (bid is not None and bid[b, p] >= 0
                                                            and bid[b, j] == bid[b, p])
                assert bool(visible[b, i, j]) == bool(rule1 and rule2 and rule3)
        for j in range(lk):
            same = [t for t in range(j) if (seg is None or seg[b, t] == seg[b, j]) and (pad is None or pad[b, t])]
            assert pos[b, j] == len(same)


def test_reference_reproduces_standard_causal_attention():
    q, k, v = torch.randn(3, 2, 4, 9, 16)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(reference_attention(q, k, v), expected, atol=1e-5, rtol=1e-5)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(partial_attention(q, k, v, causal=False), expected, atol=1e-5, rtol=1e-5)


def test_bad_input_is_named():
    q, k = torch.randn(1, 4, 8, 16), torch.randn(1, 3, 8, 16)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        partial_attention(q, k, k)
    with pytest.raises(ValueError, match="more queries than keys"):
        partial_attention(q, q[:, :, :4], q[:, :, :4])
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        partial_attention(q, q, q, key_padding_mask=torch.ones(1, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="backend must be one of"):
        partial_attention(q, q, q, backend="cuda")
    with pytest.raises(RuntimeError, match="head dim"):
        partial_attention(torch.randn(1, 1, 4, 24), *torch.randn(2, 1, 1, 4, 24), backend="triton")


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_kernels)])
def test_padding_keys_take_no_part_whatever_they_hold(backend):
    q, k, v, options = make_case("left-pad", torch.float32)
    pad = options["key_padding_mask"]
    poisoned_k, poisoned_v = k.clone(), v.clone()
    poisoned_k.masked_fill_(~pad[:, None, :, None], float("nan"))
    poisoned_v.masked_fill_(~pad[:, None, :, None], float("inf"))
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(2))
    clean = run(backend, q, k, v, options, grad_out)
    poisoned = run(backend, q, poisoned_k, poisoned_v, options, grad_out)
    for label, a, b in zip(("out", "dq", "dk", "dv"), poisoned, clean):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=label)
    assert poisoned[2][~pad[:, None, :, None].expand_as(poisoned[2])].abs().max() == 0  # no gradient to padding


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_kernels)])
@pytest.mark.parametrize("shape", [(0, 2, 3, 16), (2, 2, 0, 16)], ids=["no-batch", "no-queries"])
def test_empty_inputs_give_empty_outputs(backend, shape):
    batch, heads, lq, dim = shape
    q = torch.randn(batch, heads, lq, dim, device=DEVICE, requires_grad=True)
    k = torch.randn(batch, 1, lq, dim, device=DEVICE, requires_grad=True)
    pad = torch.ones(batch, lq, dtype=torch.bool, device=DEVICE)
    out = partial_attention(q, k, k, key_padding_mask=pad, segment_ids=pad.long(), backend=backend)
    assert out.shape == q.shape
    out.sum().backward()
    assert q.grad.shape == q.shape


def test_masks_that_are_not_boolean_or_heads_below_one_are_refused():
    q, k = torch.randn(1, 2, 5, 16), torch.randn(1, 1, 5, 16)
    with pytest.raises(ValueError, match="key_padding_mask must be boolean"):
        partial_attention(q, k, k, key_padding_mask=torch.full((1, 5), 0.5))
    with pytest.raises(ValueError, match="segment_ids must be integer"):
        partial_attention(q, k, k, segment_ids=torch.zeros(1, 5))
    with pytest.raises(ValueError, match="heads must be at least 1"):
        partial_attention(q, k[:, :0], k[:, :0])
    with pytest.raises(ValueError, match="heads must be at least 1"):
        partial_attention(q[:, :0], k, k)
    integer = torch.tensor([[0, 1, 1, 1, 1]])  # integers: nonzero is real, as a boolean mask says
    torch.testing.assert_close(partial_attention(q, k, k, key_padding_mask=integer),
                               partial_attention(q, k, k, key_padding_mask=integer.bool()))


def test_one_layout_serves_several_calls_and_must_match_them():
    from spacy_seqgpt.kernels.attention import AttentionLayout

    q, k, v, options = make_case("prefix", torch.float32)
    q, k, v, options = q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), to_device(options)
    layout = AttentionLayout(q.shape[0], q.shape[2], k.shape[2], **options)
    backend = "triton" if INTERPRETED or DEVICE == "cuda" else "torch"
    expected = reference_attention(q, k, v, **options)
    for _ in range(2):  # as the layers of one forward pass share it
        torch.testing.assert_close(partial_attention(q, k, v, layout=layout, backend=backend), expected,
                                   atol=2e-4, rtol=2e-4)
    with pytest.raises(ValueError, match="not both"):
        partial_attention(q, k, v, layout=layout, segment_ids=options["bidirectional_ids"])
    with pytest.raises(ValueError, match="built for"):
        partial_attention(q[:, :, :3], k, v, layout=layout)


def tile_reduce(dense, row_block, column_block):
    """Per (row tile, column tile) of a (B, rows, columns) mask: whether any pair is set, and
    whether every existing row of the tile that sees anything sees the whole tile, the tile
    inside the columns (rows that see nothing are zeroed by the kernels, whatever their tiles)."""
    from math import ceil

    batch, rows, columns = dense.shape
    n_rows, n_columns = ceil(rows / row_block), ceil(columns / column_block)
    pad = lambda t, rows_value: torch.nn.functional.pad(  # noqa: E731
        torch.nn.functional.pad(t, (0, n_columns * column_block - columns), value=False),
        (0, 0, 0, n_rows * row_block - rows), value=rows_value)
    tiles = lambda t: t.view(batch, n_rows, row_block, n_columns, column_block)  # noqa: E731
    whole = dense | ~dense.any(-1, keepdim=True)
    return tiles(pad(dense, False)).any(-1).any(2), tiles(pad(whole, True)).all(-1).all(2)


@settings(deadline=None, max_examples=150)
@given(case=random_masks(),
       blocks=st.tuples(st.sampled_from([1, 2, 3, 4, 8, 16]), st.sampled_from([1, 2, 4, 5, 8, 16])))
def test_tile_classes_follow_the_dense_mask(case, blocks):
    """A full tile is visible whole (rows past the end and rows that see nothing aside), and every
    visible pair lies in a tile the kernel visits: forward and dQ by query tiles, dK/dV by key tiles."""
    from spacy_seqgpt.kernels.attention import TILE_FULL, TILE_SKIPPED, AttentionLayout, tile_classes

    batch, lq, lk, options = case
    layout = AttentionLayout(batch, lq, lk, **options)
    visible = visibility(batch, lq, lk, "cpu", options.get("key_padding_mask"), options.get("segment_ids"),
                         options.get("bidirectional_ids"), options["causal"])
    block_m, block_n = blocks
    for kernel, dense, row_block, column_block in (("forward", visible, block_m, block_n),
                                                   ("dkdv", visible.transpose(1, 2), block_n, block_m)):
        classes = tile_classes(layout, block_m, block_n, kernel)
        any_visible, all_visible = tile_reduce(dense, row_block, column_block)
        assert classes.shape == any_visible.shape
        assert not (classes == TILE_FULL)[~all_visible].any(), kernel
        assert not (classes == TILE_SKIPPED)[any_visible].any(), kernel


@pytest.mark.parametrize("name", ["causal", "bidirectional", "right-pad", "prefix", "alibi", "prefix-alibi",
                                  "long-packed-alibi"])
def test_the_kernel_tests_walk_full_tiles(name):
    """The interpreter's 16 x 16 tiles hold full tiles for every kernel in these cases (padding,
    segments, prefix-LM spans and ALiBi among them): the element-for-element tests check the
    mask-free path too."""
    from spacy_seqgpt.kernels.attention import TILE_FULL, TILE_PARTIAL, AttentionLayout, tile_classes

    q, k, _, options = make_case(name, torch.float32)
    layout = AttentionLayout(q.shape[0], q.shape[2], k.shape[2], **options)
    for kernel in ("forward", "dkdv"):
        classes = tile_classes(layout, 16, 16, kernel)
        assert (classes == TILE_FULL).any() and (classes == TILE_PARTIAL).any(), kernel


def test_the_layout_is_built_on_the_device_with_no_host_synchronisation(monkeypatch):
    """No call that copies a value to the host or gives a shape that depends on the data."""
    from spacy_seqgpt.kernels.attention import AttentionLayout

    calls = []

    def counted(original, name):
        def call(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)
        return call

    layouts = [AttentionLayout(q.shape[0], q.shape[2], k.shape[2], **options)
               for q, k, _, options in (make_case(name, torch.float32) for name in CASES)]
    for owner, names in ((torch, ("unique", "unique_consecutive", "nonzero", "masked_select", "argwhere")),
                         (torch.Tensor, ("item", "tolist", "unique", "nonzero", "__int__", "__bool__", "__float__",
                                         "__index__", "masked_select"))):
        for name in names:
            monkeypatch.setattr(owner, name, counted(getattr(owner, name), name))
    for layout in layouts:
        layout.forward_arrays("cpu"), layout.backward_arrays("cpu")
    monkeypatch.undo()
    assert calls == []


def test_the_tile_report_counts_the_callers_layouts_and_reads_loops_from_sass():
    """``benchmarks/tile_report.py``: prefix-LM at L=2048 with 128x64 tiles keeps partial tiles under
    10% of those visited (the diagonal, span and padding boundaries only), and its SASS reader
    finds each loop as a branch back to an earlier address."""
    import importlib.util

    path = ROOT / "benchmarks" / "tile_report.py"
    spec = importlib.util.spec_from_file_location("tile_report", path)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    rows = {(layout.split(" (")[0], kernel): share for layout, kernel, *_, share in report.tile_shares(seed=0)}
    assert rows["prefix-LM prompts", "forward"] < 0.10 and rows["prefix-LM prompts", "dq"] < 0.10
    assert rows["tagger, bidirectional", "dkdv"] < rows["tagger, bidirectional", "forward"]
    text = "\n".join(f"        /*{address:04x}*/  {instruction} ;" for address, instruction in [
        (0x00, "MOV R1, c[0x0][0x28]"), (0x10, "IADD3 R2, R2, 0x1, RZ"), (0x20, "@P0 BRA 0x10"),
        (0x30, "FADD R3, R3, R4"), (0x40, "FMUL R3, R3, R5"), (0x50, "@!P1 BRA 0x30"), (0x60, "EXIT")])
    assert report.loop_sizes(text) == [2, 3]
