"""Resumable checkpoints, written so that a kill, a full disk or a damaged file never loses the
last good one.

Each checkpoint is written in full into a fresh ``step-N`` folder: the trainable weights as
safetensors, the optimizer, schedule and random state as a tensors-and-numbers file that
``torch.load(weights_only=True)`` reads (no pickle: a checkpoint from elsewhere runs no
code), and last a ``checksums.json`` of both, which marks the folder complete. Only then does
``latest`` (replaced atomically with ``os.replace``) point at it, and folders older than the
previous one are removed, so a damaged newest one still leaves one to resume from.

Resuming takes the checkpoint ``latest`` names if its checksums hold, else the newest step
folder whose checksums hold (with a warning); folders that are not complete are never read
and are cleared on the next save.
"""
import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import List, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from wasabi import msg

LATEST = "latest"
CHECKSUMS = "checksums.json"
FILES = ("trainable.safetensors", "state.pt")


class CheckpointError(OSError):
    """A checkpoint could not be written or read; the message names the file and what to do."""


def trainable_state(model) -> dict:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def _digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(folder: Path, step: int, model, optimizer, scheduler, extra: dict) -> Path:
    target = folder / f"step-{step}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        save_file(trainable_state(model), str(target / FILES[0]))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                    "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(), "extra": extra},
                   target / FILES[1])
        (target / CHECKSUMS).write_text(json.dumps({name: _digest(target / name) for name in FILES}),
                                        encoding="utf8")
        pointer = folder / f"{LATEST}.tmp"
        pointer.write_text(target.name, encoding="utf8")
        os.replace(pointer, folder / LATEST)
    except (OSError, RuntimeError, SafetensorError) as err:  # torch and safetensors say "disk full" their own way
        shutil.rmtree(target, ignore_errors=True)
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0]
        raise CheckpointError(f"Could not write the checkpoint {target} ({reason}). The last good "
                              f"checkpoint in {folder} is kept; free some space (or make the folder writable) and "
                              "rerun to resume from it.") from err
    previous = next((path for path in _complete_steps(folder) if _step(path) < step), None)
    for old in folder.glob("step-*"):
        if old not in (target, previous):
            shutil.rmtree(old, ignore_errors=True)
    return target


def _step(path: Path) -> int:
    return int(path.name[len("step-"):])


def _complete_steps(folder: Path) -> List[Path]:
    """Step folders with a checksums file, newest first."""
    steps = [path for path in folder.glob("step-*") if (path / CHECKSUMS).is_file() and path.name[5:].isdigit()]
    return sorted(steps, key=lambda path: -_step(path))


def damage(target: Path) -> Optional[str]:
    """What is wrong with the checkpoint in ``target`` (None when its files match their checksums)."""
    try:
        recorded = json.loads((target / CHECKSUMS).read_text(encoding="utf8"))
    except (OSError, ValueError) as err:
        return f"{target / CHECKSUMS} cannot be read ({err})"
    for name in FILES:
        path = target / name
        if not path.is_file():
            return f"{path} is missing"
        if _digest(path) != recorded.get(name):
            return f"{path} is damaged (it no longer matches the checksum written with it)"
    return None


def latest_checkpoint(folder: Path) -> Optional[Path]:
    """The checkpoint to resume from: the one ``latest`` names, or else the newest sound one."""
    pointer = folder / LATEST
    named = folder / pointer.read_text(encoding="utf8").strip() if pointer.is_file() else None
    if named is not None and named.parent == folder and named.is_dir() and damage(named) is None:
        return named
    for candidate in _complete_steps(folder):
        problem = damage(candidate)
        if problem is None:
            if pointer.is_file():
                msg.warn(f"{pointer} names {named.name if named else 'nothing'}, which is missing or damaged: "
                         f"resuming from {candidate.name}")
            return candidate
        msg.warn(f"Skipping checkpoint {candidate.name}: {problem}")
    if pointer.is_file():
        raise CheckpointError(f"{pointer} names a checkpoint, but no checkpoint in {folder} is sound. Delete "
                              f"{folder} to start this stage over.")
    return None


def _misfit(weights: dict, state: object, model) -> Optional[str]:
    """What keeps a checkpoint's files from restoring ``model`` exactly (None when nothing): each
    trainable parameter must be there with its shape and dtype, and nothing else."""
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    unknown = sorted(set(weights) - set(trainable))
    missing = sorted(set(trainable) - set(weights))
    if unknown or missing:
        return f"unknown parameters {unknown[:3]}" if unknown else f"parameters {missing[:3]} are missing"
    for name, value in weights.items():
        if value.shape != trainable[name].shape or value.dtype != trainable[name].dtype:
            return (f"{name} is {tuple(value.shape)} {value.dtype}, the model's is "
                    f"{tuple(trainable[name].shape)} {trainable[name].dtype}")
    if not isinstance(state, dict) or not {"optimizer", "scheduler", "step", "torch_rng", "python_rng",
                                           "extra"} <= set(state) or not isinstance(state["step"], int):
        return "its state file lacks the optimizer, schedule, step or random state"
    return None


def load_checkpoint(target: Path, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, schedule and random state; returns the saved state (step, extra)."""
    try:
        weights = load_file(str(target / FILES[0]))
        state = torch.load(target / FILES[1], weights_only=True)
    except Exception as err:  # safetensors and torch raise their own kinds for a bad file
        raise CheckpointError(f"Could not read the checkpoint {target} ({type(err).__name__}: {err}). Delete "
                              f"{target} to resume from the checkpoint before it, or its parent folder to start "
                              "this stage over.") from err
    problem = _misfit(weights, state, model)
    if problem:
        raise CheckpointError(f"The checkpoint {target} does not fit this model: {problem}. Delete {target.parent} "
                              "to start this stage over, or train the model the checkpoint was made for.")
    try:  # before any weight is copied: a state that does not fit leaves the model as it was
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
    except (ValueError, TypeError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"The checkpoint {target} does not fit this run's optimizer ({err}). Delete "
                              f"{target.parent} to start this stage over.") from err
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device))
    return state
