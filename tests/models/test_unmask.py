"""``spacy_seqgpt.unmask`` on tiny Llama and BLOOM models made by ``init-tiny``."""
import pytest
import torch
from hypothesis import given, strategies as st
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from spacy_seqgpt import unmask
from spacy_seqgpt.models.unmasking import layer_groups, layer_selection

from conftest import KERNEL_DEVICE

ARCHS = ["llama", "bloom"]


@pytest.fixture(scope="module")
def paths(tiny_llama, tiny_bloom):
    return {"llama": tiny_llama, "bloom": tiny_bloom}


def load(paths, arch):
    return AutoModelForCausalLM.from_pretrained(paths[arch]).eval()


def logits(model, ids, mask=None, **batch):
    with torch.no_grad():
        return model(ids, attention_mask=mask, **batch).logits


IDS = torch.randint(5, 700, (2, 11), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ARCHS)
def test_no_unmasked_group_gives_the_stock_model(paths, arch):
    stock, model = load(paths, arch), unmask(load(paths, arch), "0000")
    mask = torch.ones_like(IDS)
    mask[1, :3] = 0
    torch.testing.assert_close(logits(model, IDS), logits(stock, IDS), atol=1e-5, rtol=1e-5)
    real = mask.bool()
    torch.testing.assert_close(logits(model, IDS, mask)[real], logits(stock, IDS, mask)[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_unmasked_layers_let_the_first_token_see_the_last(paths, arch):
    model = load(paths, arch)
    changed = IDS.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 700
    unmask(model, "0000")
    assert torch.equal(logits(model, IDS)[:, 0], logits(model, changed)[:, 0])
    for code in ("1000", "0100", "0010", "0001", "0110"):
        unmask(model, code)
        assert (logits(model, IDS)[:, 0] - logits(model, changed)[:, 0]).abs().max() > 1e-4, code


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("code,mode", [("0000", "full"), ("0110", "full"), ("1111", "full"), ("0110", "prompt")])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_never_changes_the_outputs_at_real_tokens(paths, arch, code, mode, side):
    model = unmask(load(paths, arch), code, mode=mode)
    row, pad = IDS[:1, :8], torch.zeros(1, 3, dtype=torch.long)
    alone = logits(model, row, **({"prompt_lengths": torch.tensor([5])} if mode == "prompt" else {}))[0]
    ids = torch.cat([torch.cat([pad, row], 1) if side == "left" else torch.cat([row, pad], 1), IDS[1:]])
    mask = torch.ones_like(ids)
    mask[0, :3] = 0 if side == "left" else 1
    mask[0, 8:] = 0 if side == "right" else 1
    batch = {"prompt_lengths": torch.tensor([5, 5])} if mode == "prompt" else {}
    padded = logits(model, ids, mask, **batch)[0][mask[0].bool()]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_mode_is_bidirectional_over_the_prompt_only_and_the_kv_cache_is_exact(paths, arch):
    model = unmask(load(paths, arch), "1111", mode="prompt")
    batch = {"prompt_lengths": torch.tensor([6, 6])}
    in_prompt, after_prompt = IDS.clone(), IDS.clone()
    in_prompt[:, 5] = (in_prompt[:, 5] + 1) % 700
    after_prompt[:, 8] = (after_prompt[:, 8] + 1) % 700
    first = logits(model, IDS, **batch)[:, 0]
    assert (logits(model, in_prompt, **batch)[:, 0] - first).abs().max() > 1e-4
    assert torch.equal(logits(model, after_prompt, **batch)[:, 0], first)

    mask = torch.ones_like(IDS)
    mask[1, :2] = 0
    prompt_lengths = torch.tensor([7, 4])
    out = model.generate(IDS, attention_mask=mask, prompt_lengths=prompt_lengths, max_new_tokens=5,
                         do_sample=False, output_scores=True, return_dict_in_generate=True)
    full_mask = torch.cat([mask, torch.ones(2, 5, dtype=torch.long)], 1)
    recomputed = logits(model, out.sequences, full_mask, prompt_lengths=prompt_lengths)
    for step, scores in enumerate(out.scores):
        torch.testing.assert_close(scores, recomputed[:, IDS.shape[1] + step - 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_triton_kernels_inside_the_model(paths, arch):
    """HF hands the kernels strided q/k/v views: same logits and gradients as the reference."""
    ids = IDS.to(KERNEL_DEVICE)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    results = []
    for backend in ("torch", "triton"):
        model = unmask(load(paths, arch).to(KERNEL_DEVICE), "0110", mode="prompt", backend=backend).train()
        out = model(ids, attention_mask=mask, prompt_lengths=torch.tensor([5, 7])).logits
        out[mask.bool()].square().mean().backward()
        grads = [p.grad for name, p in model.named_parameters() if "layers.1." in name or "h.1." in name]
        results.append((out.detach(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-4, rtol=1e-4)
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_training_a_lora_wrapped_model(paths, arch):
    from peft import LoraConfig, get_peft_model

    targets = ["query_key_value"] if arch == "bloom" else ["q_proj", "v_proj"]
    model = get_peft_model(load(paths, arch), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    unmask(model, "0110")
    model.train()
    loss = model(IDS, labels=IDS).loss
    loss.backward()
    lora = [p for name, p in model.named_parameters() if "lora_B" in name]  # (A starts with zero grad)
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)


@given(st.integers(1, 96).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))))
def test_layer_groups_are_contiguous_and_differ_by_at_most_one_layer_the_first_ones_larger(layers_and_groups):
    n_layers, n_groups = layers_and_groups
    groups = layer_groups(n_layers, n_groups)
    assert len(groups) == n_groups
    assert [i for group in groups for i in group] == list(range(n_layers))
    sizes = [len(group) for group in groups]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] - sizes[-1] <= 1 and min(sizes) >= 1


def test_layer_codes_and_bad_input(paths):
    assert layer_selection("0110", 4) == [1, 2]
    assert layer_selection("01", 24) == list(range(12, 24))
    assert layer_selection("0110", 30) == list(range(8, 23))  # groups of 8, 8, 7, 7 layers
    assert layer_selection("011", 4) == [2, 3]  # groups of 2, 1, 1 layers
    assert layer_selection([3, 0, 3], 4) == [0, 3]
    for bad, message in (("012", "0s and 1s"), ("01101", "at most 4 digits"), ("", "0s and 1s"), ([4], r"\[0, 4\)")):
        with pytest.raises(ValueError, match=message):
            layer_selection(bad, 4)
    model = load(paths, "llama")
    with pytest.raises(ValueError, match="mode must be one of"):
        unmask(model, "0110", mode="both")
    unmask(model, "0110", mode="prompt")
    with pytest.raises(ValueError, match="prompt_lengths"):
        model(IDS)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match="unmask supports llama, mistral, qwen2, bloom"):
        unmask(gpt2, "01")


@pytest.mark.slow  # whole models through the Triton interpreter
@pytest.mark.parametrize("arch", ARCHS)
def test_the_kernel_layout_is_built_once_per_model_call_not_per_layer(paths, arch, monkeypatch):
    from spacy_seqgpt.kernels.attention import AttentionLayout

    builds = []
    build = AttentionLayout._build_forward
    monkeypatch.setattr(
        AttentionLayout, "_build_forward", lambda self, device: builds.append(self) or build(self, device)
    )
    model = unmask(load(paths, arch).to(KERNEL_DEVICE), "1111", mode="prompt", backend="triton")
    assert len([m for m in model.modules() if type(m).__name__.endswith("Attention")]) == 4  # layers
    ids = IDS.to(KERNEL_DEVICE)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    prompt_lengths = torch.tensor([7, 4])
    logits(model, ids, mask, prompt_lengths=prompt_lengths)
    assert len(builds) == 1
    unmask(model, "0110", mode="prompt", backend="triton")  # two modes: causal and prefix-LM
    logits(model, ids, mask, prompt_lengths=prompt_lengths)
    assert len(builds) == 3 and {layout.flags["HAS_BID"] for layout in builds[1:]} == {True, False}
    # Decoding: one build per step (both modes), each only for the step's new query row.
    del builds[:]
    model.generate(ids, attention_mask=mask, prompt_lengths=prompt_lengths, max_new_tokens=3, do_sample=False)
    assert len(builds) == 2 * 3
    assert [layout.lq for layout in builds] == [IDS.shape[1]] * 2 + [1] * 4
    assert all(len(built.forward_arrays("cpu")["key_lo"][0]) == built.lq for built in builds)
