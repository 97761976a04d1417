"""Checkpoints from elsewhere run no code; damaged, partial or missing ones never lose the last good one."""
import errno
import os
import pickle

import pytest
import torch

from spacy_seqgpt.training import checkpoints
from spacy_seqgpt.training.checkpoints import (CheckpointError, latest_checkpoint, load_checkpoint,
                                               save_checkpoint)


def trainer(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return model, optimizer, scheduler


def train_and_save(folder, steps):
    model, optimizer, scheduler = trainer()
    for step in range(1, steps + 1):
        model(torch.ones(1, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
        save_checkpoint(folder, step, model, optimizer, scheduler, {"records": 3})
    return model


def test_a_checkpoint_keeps_the_one_before_and_resumes_exactly(tmp_path):
    model = train_and_save(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-2", "step-3"]
    restored, optimizer, scheduler = trainer(seed=1)
    state = load_checkpoint(latest_checkpoint(tmp_path), restored, optimizer, scheduler)
    assert state["step"] == 3 and state["extra"] == {"records": 3}
    torch.testing.assert_close(restored.weight, model.weight)


class _Payload:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_a_crafted_state_file_runs_no_code(tmp_path, monkeypatch):
    train_and_save(tmp_path / "ckpt", 1)
    step = tmp_path / "ckpt" / "step-1"
    (step / "state.pt").write_bytes(pickle.dumps({"step": _Payload()}))
    # Whoever crafts the file can write its checksum too: the reader must still refuse it.
    (step / "checksums.json").write_text(__import__("json").dumps(
        {name: checkpoints._digest(step / name) for name in checkpoints.FILES}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="Could not read the checkpoint"):
        load_checkpoint(latest_checkpoint(tmp_path / "ckpt"), *trainer())
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "delete"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, damage):
    train_and_save(tmp_path, 3)
    weights = tmp_path / "step-3" / ("state.pt" if damage == "empty" else "trainable.safetensors")
    data = weights.read_bytes()
    if damage == "flip":
        weights.write_bytes(data[:-5] + bytes([data[-5] ^ 0x10]) + data[-4:])
    elif damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        weights.write_bytes(b"")
    else:
        weights.unlink()
    assert latest_checkpoint(tmp_path).name == "step-2"
    save_checkpoint(tmp_path, 3, *trainer(), {"records": 3})  # redoing step 3 keeps step 2 until it is sound
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-2", "step-3"]
    assert latest_checkpoint(tmp_path).name == "step-3"


def test_latest_naming_a_missing_folder_resumes_from_the_newest_sound_step_and_keeps_it(tmp_path):
    train_and_save(tmp_path, 2)
    (tmp_path / "latest").write_text("step-7")
    assert latest_checkpoint(tmp_path).name == "step-2"
    save_checkpoint(tmp_path, 3, *trainer(), {"records": 3})
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-2", "step-3"]


def test_no_sound_checkpoint_at_all_is_a_clear_error_not_a_silent_restart(tmp_path):
    train_and_save(tmp_path, 1)
    (tmp_path / "step-1" / "state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no checkpoint in .* is sound. Delete"):
        latest_checkpoint(tmp_path)


def test_a_full_disk_keeps_the_last_good_checkpoint_and_says_what_to_do(tmp_path, monkeypatch):
    train_and_save(tmp_path, 2)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_file", full)
    with pytest.raises(CheckpointError, match="No space left on device.*last good checkpoint .* is kept"):
        save_checkpoint(tmp_path, 3, *trainer(), {"records": 3})
    assert latest_checkpoint(tmp_path).name == "step-2"


@pytest.mark.parametrize("failure", [RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed "
                                                  "writing file data/0: file write failed"),
                                     OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_in_torch_s_own_words_is_a_checkpoint_error(tmp_path, monkeypatch, failure):
    train_and_save(tmp_path, 1)

    def full(*args, **kwargs):
        raise failure

    monkeypatch.setattr(checkpoints.torch, "save", full)
    with pytest.raises(CheckpointError, match="Could not write the checkpoint .*last good checkpoint .* is kept"):
        save_checkpoint(tmp_path, 2, *trainer(), {"records": 3})
    assert latest_checkpoint(tmp_path).name == "step-1" and not (tmp_path / "step-2").exists()


def craft(step, weights):
    """Replace a checkpoint's weights and write checksums that match, as whoever crafts one can."""
    from safetensors.torch import save_file

    save_file(weights, str(step / "trainable.safetensors"))
    (step / "checksums.json").write_text(__import__("json").dumps(
        {name: checkpoints._digest(step / name) for name in checkpoints.FILES}))


@pytest.mark.parametrize("weights, message", [
    ({"weight": torch.ones(1), "bias": torch.zeros(2)}, r"weight is \(1,\) torch.float32, the model's is \(2, 4\)"),
    ({"weight": torch.ones(2, 4)}, r"parameters \['bias'\] are missing"),
    ({"weight": torch.ones(2, 4, dtype=torch.float64), "bias": torch.zeros(2)}, r"weight is \(2, 4\) torch.float64"),
])
def test_a_crafted_checkpoint_that_does_not_fit_the_model_is_refused(tmp_path, weights, message):
    train_and_save(tmp_path, 1)
    craft(tmp_path / "step-1", weights)
    model, optimizer, scheduler = trainer(seed=1)
    before = model.weight.detach().clone()
    with pytest.raises(CheckpointError, match=f"does not fit this model: {message}"):
        load_checkpoint(latest_checkpoint(tmp_path), model, optimizer, scheduler)
    assert torch.equal(model.weight, before)  # nothing was broadcast into the model


def test_a_state_that_does_not_fit_the_optimizer_leaves_the_model_as_it_was(tmp_path):
    train_and_save(tmp_path, 1)
    step = tmp_path / "step-1"
    state = torch.load(step / "state.pt", weights_only=True)
    state["optimizer"]["param_groups"] *= 2  # two groups for an optimizer with one
    torch.save(state, step / "state.pt")
    craft(step, {"weight": torch.full((2, 4), 7.0), "bias": torch.zeros(2)})
    model, optimizer, scheduler = trainer(seed=1)
    before = model.weight.detach().clone()
    with pytest.raises(CheckpointError, match="does not fit this run's optimizer"):
        load_checkpoint(latest_checkpoint(tmp_path), model, optimizer, scheduler)
    assert torch.equal(model.weight, before)
