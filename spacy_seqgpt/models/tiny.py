"""Tiny random-weight causal LMs in Hugging Face format, for tests and offline quickstarts.

The tokenizer is byte-level BPE (every Unicode string round-trips through its 256 byte
symbols), trained on a small built-in corpus that covers the SeqGPT prompt words, so
prompts tokenize into a realistic number of pieces. Four layers and head dimension 32
keep layer-group codes such as ``"0110"`` and the attention kernels meaningful. Same seed,
same files.
"""
from pathlib import Path
from typing import Union

from ..atomic import own_folder

ARCHITECTURES = ("bloom", "llama")
MAX_VOCAB_SIZE = 1024  # the BPE trainer stops earlier when the corpus has no more merges
SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}

# Written for this project: the prompt template, common label words and a little ordinary text.
_CORPUS = """\
输入: 输出: [GEN] 抽取: 分类: person，organization，location，miscellaneous，date，time，event，product
person: None organization: None location: None sports，politics，business，technology，science，health
Tim Cook met Olaf Scholz in Berlin on Monday to talk about trade and technology.
The company opened a new office in Paris, and its chief executive said sales were strong.
Apple, Google and Microsoft reported results after the market closed in New York.
The minister told reporters in London that the government would present a budget next week.
She won the final in straight sets and lifted the trophy in front of a home crowd.
The team scored twice in the second half to win the championship match.
Researchers at the university published a study on climate, health and energy.
Shares of the bank fell after the central bank raised interest rates again.
A storm hit the coast of Florida, and thousands of people lost power.
The president of France visited Germany, Italy and Spain during a tour of Europe.
北京 上海 中国 公司 人物 地点 组织 体育 政治 经济 新闻 今天 我们 他们 在 的 是 了 和
"""


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=MAX_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.splitlines(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, clean_up_tokenization_spaces=False, **SPECIAL_TOKENS)


def _config(arch: str, tokenizer):
    from transformers import BloomConfig, LlamaConfig

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    if arch == "bloom":
        return BloomConfig(vocab_size=len(tokenizer), hidden_size=128, n_layer=4, n_head=4, **ids)
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, **ids)


def write_tiny_model(out: Union[str, Path], arch: str = "bloom", seed: int = 0) -> Path:
    """Write a tiny ``arch`` model and its tokenizer to ``out``; returns the folder."""
    import torch
    from transformers import AutoModelForCausalLM

    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}: choose one of {', '.join(ARCHITECTURES)}.")
    out = Path(out)
    with own_folder(out, "init-tiny", {"tiny": arch, "seed": seed}) as draft:  # new, empty or its own folder
        tokenizer = _train_tokenizer()
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(_config(arch, tokenizer), dtype=torch.float32)
        model.generation_config.max_length = None  # callers set max_new_tokens
        model.save_pretrained(draft)
        tokenizer.save_pretrained(draft)
    return out
