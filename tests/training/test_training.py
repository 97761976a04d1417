"""SeqGPT training: answer-only loss, packing with segment-aware attention, resumable checkpoints."""
import json
import shutil

import pytest
import srsly
import torch
from conftest import TINY_TRAINING_CONFIG

from spacy_seqgpt.data.records import make_record
from spacy_seqgpt.training.batching import BatchStream, collate, group_rows
from spacy_seqgpt.training.checkpoints import latest_checkpoint
from spacy_seqgpt.training.encoding import IGNORE, encode_record
from spacy_seqgpt.training.loss import AnswerLoss
from spacy_seqgpt.training.settings import load_settings
from spacy_seqgpt.training.trainer import load_for_training, train_stage

RECORDS = [
    make_record("extract", "Anna met Ben in Rome.", ["person", "city"], {"person": ["Anna", "Ben"], "city": ["Rome"]},
                "t", "en"),
    make_record("classify", "The team won the final.", ["sports", "politics"], ["sports"], "t", "en"),
    make_record("extract", "Apple opened an office.", ["company"], {"company": ["Apple"]}, "t", "en"),
    make_record("classify", "Rates rose again today.", ["business", "sports", "health"], ["business"], "t", "en"),
]


def settings_for(tmp_path, model_dir, stage="pt", **overrides):
    data = tmp_path / "records.jsonl"
    tmp_path.mkdir(parents=True, exist_ok=True)
    srsly.write_jsonl(data, RECORDS)
    base = {"paths.base_model": str(model_dir), "paths.output": str(tmp_path / "out"),
            "paths.pretrain_data": str(data), "paths.finetune_data": str(data)}
    return load_settings(TINY_TRAINING_CONFIG, stage, {**base, **overrides})


def test_loss_only_on_answer_tokens_and_left_truncation(tiny_bloom):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bloom)
    item = encode_record(tokenizer, RECORDS[0], max_length=256)
    answer = [t for t, label in zip(item.input_ids, item.labels) if label != IGNORE]
    assert tokenizer.decode(answer) == "person: Anna, Ben\ncity: Rome" + tokenizer.eos_token
    assert item.labels[: len(item) - len(answer)] == [IGNORE] * (len(item) - len(answer))
    short = encode_record(tokenizer, RECORDS[0], max_length=len(answer) + 3)
    assert len(short) == len(answer) + 3 and short.input_ids[-len(answer):] == answer
    assert short.input_ids[:3] == item.input_ids[-len(answer) - 3: -len(answer)]  # the prompt's start is dropped


@pytest.mark.parametrize("arch", ["tiny_bloom", "tiny_llama"])
def test_packed_rows_give_the_same_loss_as_separate_rows(arch, request, tmp_path):
    model_dir = request.getfixturevalue(arch)
    settings = settings_for(tmp_path, model_dir)
    model, tokenizer = load_for_training(settings, str(model_dir))  # packing: the kernel keeps records apart
    model.eval()
    encoded = [encode_record(tokenizer, r, 256) for r in RECORDS]
    loss = AnswerLoss(model, packed=True)
    with torch.no_grad():
        separate = sum(float(loss(**collate(encoded, [[i]], 0))) for i in range(len(encoded)))
        rows = group_rows(encoded, range(len(encoded)), max_length=256, packing=True)
        assert len(rows) < len(encoded)  # several records share a row
        packed = float(loss(**collate(encoded, rows, 0)))
        # without segment ids, records would see each other and the loss would change
        leaking = collate(encoded, rows, 0)
        leaking["segment_ids"] = leaking["segment_ids"].clamp(max=0)
        leaked = float(loss(**leaking))
    assert packed == pytest.approx(separate, rel=1e-5)
    assert abs(leaked - separate) > 1e-3


def test_batch_stream_is_seeded_and_covers_every_record_each_epoch(tiny_bloom):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bloom)
    encoded = [encode_record(tokenizer, r, 64) for r in RECORDS * 3]
    stream = BatchStream(encoded, seed=1, rows_per_batch=2, max_length=64, packing=False, pad_id=0)
    again = BatchStream(encoded, seed=1, rows_per_batch=2, max_length=64, packing=False, pad_id=0)
    for index in (0, 5, 7, 12, 3):  # any order of access: the same batches
        assert torch.equal(stream[index]["input_ids"], again[index]["input_ids"])
    epoch = torch.cat([stream[i]["input_ids"][:, :4] for i in range(6)])
    assert sorted(map(tuple, epoch.tolist())) == sorted(tuple(e.input_ids[:4]) for e in encoded)


def read_log(folder):
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def test_resumed_training_matches_an_uninterrupted_run(tiny_bloom, tmp_path):
    options = {"pt.steps": 6, "pt.checkpoint_every": 3, "pt.log_every": 1, "pt.batch_size": 2}
    straight = settings_for(tmp_path / "a", tiny_bloom, **options)
    train_stage(straight)
    interrupted = settings_for(tmp_path / "b", tiny_bloom, **options)
    train_stage(interrupted, stop_after=4)  # "killed" after step 4: the checkpoint is step 3's
    folder = interrupted.output / "pt"
    assert latest_checkpoint(folder / "checkpoints").name == "step-3"
    assert not (folder / "final").exists()
    (folder / "checkpoints" / "step-9").mkdir()  # a half-written checkpoint is never read
    train_stage(interrupted)
    first, second = read_log(straight.output / "pt"), read_log(folder)
    assert [e["step"] for e in second] == [1, 2, 3, 4, 5, 6]  # step 4 redone once, not logged twice
    assert [e["loss"] for e in second] == pytest.approx([e["loss"] for e in first], rel=1e-6)
    assert second[-1]["loss"] < second[0]["loss"]
    a = torch.load(latest_checkpoint(straight.output / "pt" / "checkpoints") / "state.pt", weights_only=True)
    assert a["step"] == 6 and not (folder / "checkpoints" / "step-9").exists()
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(folder / "final")
    other = AutoModelForCausalLM.from_pretrained(straight.output / "pt" / "final")
    for (name, p), q in zip(reloaded.named_parameters(), other.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_lora_stage_trains_the_adapter_and_saves_a_merged_model(tiny_llama, tmp_path):
    settings = settings_for(
        tmp_path, tiny_llama, "ft", **{"pt.steps": 1, "ft.steps": 2, "model.lora": {"r": 4, "alpha": 8}}
    )
    final = train_stage(settings)
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(final)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    changed = [n for (n, p), q in zip(merged.named_parameters(), base.parameters()) if not torch.equal(p, q)]
    assert changed and all("q_proj" in n or "v_proj" in n for n in changed)


def test_config_errors_are_named(tmp_path, tiny_bloom):
    with pytest.raises(ValueError, match="--stage"):
        load_settings(TINY_TRAINING_CONFIG, "xx")
    with pytest.raises(ValueError, match="unknown setting"):
        settings_for(tmp_path, tiny_bloom, **{"pt.stepz": 3})
    with pytest.raises(ValueError, match="'steps' must be a positive integer"):
        settings_for(tmp_path, tiny_bloom, **{"pt.steps": 0})
    settings = settings_for(tmp_path, tiny_bloom, **{"pt.data": str(tmp_path / "none.jsonl"), "pt.fallback_data": None})
    with pytest.raises(FileNotFoundError, match="no training records"):
        train_stage(settings)


def test_a_stage_without_data_passes_its_model_through_only_when_told(tmp_path, tiny_bloom):
    missing = {"pt.data": str(tmp_path / "synthesized.jsonl"), "pt.fallback_data": None}
    with pytest.raises(FileNotFoundError, match="no training records"):
        train_stage(settings_for(tmp_path / "a", tiny_bloom, **missing))
    settings = settings_for(tmp_path / "b", tiny_bloom, **missing, **{"pt.pass_through_without_data": True})
    final = train_stage(settings)
    assert not (final.parent / "checkpoints").exists()
    from transformers import AutoModelForCausalLM

    passed, base = AutoModelForCausalLM.from_pretrained(final), AutoModelForCausalLM.from_pretrained(tiny_bloom)
    assert all(torch.equal(p, q) for p, q in zip(passed.parameters(), base.parameters()))
    # with data it trains as any stage does
    trained = train_stage(
        settings_for(tmp_path / "c", tiny_bloom, **{"pt.steps": 2, "pt.pass_through_without_data": True})
    )
    again = AutoModelForCausalLM.from_pretrained(trained)
    assert not all(torch.equal(p, q) for p, q in zip(again.parameters(), base.parameters()))


def test_bf16_mixed_precision_trains_on_the_cpu_through_the_kernel(tmp_path, tiny_llama):
    """bf16 autocast on a CPU (packed rows: the attention kernel's CPU path gets q, k in float32
    and v in bf16 from the model, and must take them) gives finite, falling losses."""
    with pytest.raises(ValueError, match="mixed_precision must be one of auto, bf16, no"):
        settings_for(tmp_path, tiny_llama, **{"model.mixed_precision": "fp8"})
    settings = settings_for(tmp_path, tiny_llama, **{"model.mixed_precision": "bf16", "pt.steps": 6, "pt.log_every": 1,
                                                      "pt.batch_size": 2})
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # accelerate keeps one precision per process: the other tests' is "no"
    try:
        train_stage(settings)
    finally:
        AcceleratorState._reset_state(True)
    losses = [entry["loss"] for entry in read_log(settings.output / "pt")]
    assert len(losses) == 6 and all(loss == loss and loss < 100 for loss in losses)
    assert min(losses[3:]) < losses[0]


def test_records_that_would_teach_an_answer_that_does_not_read_back_are_refused(tmp_path, tiny_bloom):
    settings = settings_for(tmp_path, tiny_bloom)
    split = make_record("extract", "Goldman , Sachs rose.", ["company"], {"company": ["Goldman , Sachs"]}, "t", "en")
    srsly.write_jsonl(tmp_path / "records.jsonl", [*RECORDS, split])
    with pytest.raises(ValueError, match=r"record 5 .*\['Goldman , Sachs'\] read back .* as \['Goldman', 'Sachs'\]"):
        train_stage(settings)


def test_packing_a_model_the_kernel_does_not_know_says_to_turn_packing_off(tmp_path, tiny_bloom):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"
    shutil.copytree(tiny_bloom, gpt2)  # the tokenizer; the weights are replaced
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=1024)).save_pretrained(gpt2)
    with pytest.raises(ValueError, match="packing needs segment-aware attention.*packing = false"):
        load_for_training(settings_for(tmp_path, gpt2), str(gpt2))
    model, _ = load_for_training(settings_for(tmp_path, gpt2, **{"data.packing": False}), str(gpt2))
    assert model.config.model_type == "gpt2"


def test_a_checkpoint_of_a_starting_model_replaced_since_is_not_resumed(tmp_path):
    from spacy_seqgpt.models.tiny import write_tiny_model

    start = write_tiny_model(tmp_path / "pt-final", arch="bloom", seed=0)
    settings = settings_for(tmp_path, start, stage="ft", **{"ft.steps": 3, "ft.checkpoint_every": 1})
    train_stage(settings, str(start), stop_after=1)
    shutil.rmtree(start)
    write_tiny_model(start, arch="bloom", seed=1)  # the same name, other weights (the stage before ran again)
    with pytest.raises(ValueError, match=r"model_files \('[0-9a-f]+' then, '[0-9a-f]+' now\)"):
        train_stage(settings, str(start))


@pytest.mark.slow  # training in other processes
def test_training_killed_by_sigkill_resumes_to_the_same_losses(tiny_bloom, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    def command(folder):
        data = folder / "records.jsonl"
        folder.mkdir(parents=True, exist_ok=True)
        srsly.write_jsonl(data, RECORDS * 4)
        return [sys.executable, "-m", "spacy", "seqgpt", "train", str(TINY_TRAINING_CONFIG), "--stage", "pt",
                "--paths.base_model", str(tiny_bloom), "--paths.output", str(folder / "out"),
                "--paths.pretrain_data", str(data), "--pt.steps", "40", "--pt.checkpoint_every", "2",
                "--pt.log_every", "1", "--pt.batch_size", "1"]

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    subprocess.run(command(tmp_path / "a"), check=True, env=env, capture_output=True)
    killed = tmp_path / "b"
    process = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "out" / "pt" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 7):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(read_log(killed / "out" / "pt")) < 40, "the kill should land mid-run"
    subprocess.run(command(killed), check=True, env=env, capture_output=True)
    first, second = read_log(tmp_path / "a" / "out" / "pt"), read_log(killed / "out" / "pt")
    assert [e["step"] for e in second] == list(range(1, 41))
    assert [e["loss"] for e in second] == pytest.approx([e["loss"] for e in first], rel=1e-6)


def test_a_checkpoint_of_other_data_or_settings_is_not_resumed_unless_told(tiny_bloom, tmp_path):
    settings = settings_for(tmp_path, tiny_bloom, **{"pt.steps": 4, "pt.checkpoint_every": 1, "pt.log_every": 1})
    train_stage(settings, stop_after=1)
    srsly.write_jsonl(tmp_path / "records.jsonl", RECORDS[:2])
    with pytest.raises(ValueError, match=r"the data \(4 records then, 2 now"):
        train_stage(settings)
    edited = [dict(RECORDS[0], text="Anna met Ben in Oslo.", answer={"person": ["Anna", "Ben"], "city": ["Oslo"]}),
              *RECORDS[1:]]
    srsly.write_jsonl(tmp_path / "records.jsonl", edited)  # as many records, other texts
    with pytest.raises(ValueError, match=r"the data \(as many records, other contents\)"):
        train_stage(settings)
    srsly.write_jsonl(tmp_path / "records.jsonl", RECORDS)
    faster = settings_for(tmp_path, tiny_bloom, **{"pt.steps": 4, "pt.checkpoint_every": 1, "pt.log_every": 1,
                                                   "pt.learning_rate": 0.5, "pt.warmup_steps": 0})
    with pytest.raises(ValueError, match=r"learning_rate \(0\.\d+ then, 0\.5 now\).*--resume-changed"):
        train_stage(faster)
    train_stage(faster, resume_changed=True)  # the new rate and schedule apply from the resumed step
    from spacy_seqgpt.training.schedules import cosine_rate

    log = read_log(tmp_path / "out" / "pt")
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    train = faster.train
    assert [e["lr"] for e in log[1:]] == pytest.approx(
        [0.5 * cosine_rate(step, 1.0, 4, 0, train.min_learning_rate / 0.5) for step in (2, 3, 4)]
    )


@pytest.mark.slow  # training in other processes
def test_two_processes_give_the_loss_curve_of_one_with_the_same_global_batch(tiny_bloom, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo DDP): each takes every other micro-batch and
    accumulates 2 (no_sync on the first), against one process accumulating 4; then the 2-process
    run resumes from its step-3 checkpoint to the same losses and weights."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    data = tmp_path / "records.jsonl"
    srsly.write_jsonl(data, RECORDS * 4)
    train = ["-m", "spacy", "seqgpt", "train", str(TINY_TRAINING_CONFIG), "--stage", "pt",
             "--paths.base_model", str(tiny_bloom),
             "--paths.pretrain_data", str(data), "--pt.steps", "6", "--pt.checkpoint_every", "3", "--pt.log_every", "1",
             "--pt.batch_size", "1"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")

    def run(command):
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return " ".join((result.stdout + result.stderr).split())  # wasabi wraps its lines

    run([sys.executable, *train, "--paths.output", str(tmp_path / "one"), "--pt.accumulate", "4"])
    run([*launch, *train, "--paths.output", str(tmp_path / "two"), "--pt.accumulate", "2"])
    one, two = read_log(tmp_path / "one" / "pt"), read_log(tmp_path / "two" / "pt")
    assert [e["step"] for e in two] == list(range(1, 7))  # one log, written by the main process only
    assert [e["answer_tokens"] for e in two] == [e["answer_tokens"] for e in one]  # the same global batches
    assert [e["loss"] for e in two] == pytest.approx([e["loss"] for e in one], rel=1e-5)
    shutil.rmtree(tmp_path / "two" / "pt" / "checkpoints" / "step-6")
    shutil.rmtree(tmp_path / "two" / "pt" / "final")
    assert "step-3 (step 3)" in run([*launch, *train, "--paths.output", str(tmp_path / "two"), "--pt.accumulate", "2"])
    assert [e["loss"] for e in read_log(tmp_path / "two" / "pt")] == pytest.approx([e["loss"] for e in one], rel=1e-5)
    weights = [load_file(str(tmp_path / run_dir / "pt" / "final" / "model.safetensors")) for run_dir in ("one", "two")]
    assert all(torch.allclose(weights[0][name], weights[1][name], atol=1e-5) for name in weights[0])
