"""Resumable checkpoints, written so that a kill at any moment leaves a usable one.

Each checkpoint is written in full into a fresh ``step-N`` folder; only then does the
``latest`` file (replaced atomically with ``os.replace``) point at it, and older folders are
removed. A run killed mid-write leaves ``latest`` on the previous checkpoint; the half-written
folder is ignored and cleared on the next save.
"""
import os
import random
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"


def trainable_state(model) -> dict:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(folder: Path, step: int, model, optimizer, scheduler, extra: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"step-{step}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    save_file(trainable_state(model), str(target / "trainable.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(), "extra": extra},
               target / "state.pt")
    pointer = folder / f"{LATEST}.tmp"
    pointer.write_text(target.name, encoding="utf8")
    os.replace(pointer, folder / LATEST)
    for old in folder.glob("step-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(folder: Path) -> Optional[Path]:
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    target = folder / pointer.read_text(encoding="utf8").strip()
    return target if (target / "state.pt").is_file() else None


def load_checkpoint(target: Path, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, schedule and random state; returns the saved state (step, extra)."""
    weights = load_file(str(target / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [name for name in weights if name not in params]
    if missing:
        raise ValueError(f"checkpoint {target} does not fit this model: unknown parameters {missing[:3]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device))
    state = torch.load(target / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    return state
