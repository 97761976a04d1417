"""The training config: one ``.cfg`` file per preset, with a section per stage.

    [paths]       base model, pre-training and fine-tuning data, output folder
    [model]       dtype, mixed precision, quantize, lora (null: full fine-tuning), gradient checkpointing
    [data]        max_length, packing
    [pt] / [ft]   data, steps, batch size, accumulation, learning rate, schedule, checkpoints

Values can be overridden on the command line as in spaCy (``--pt.steps 20``).
"""
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, Optional

from thinc.api import Config

from ..validation import check_positive_int

STAGES = ("pt", "ft")
# auto: bf16 autocast where the device computes bf16 natively (a CUDA GPU that has it, a CPU with
# AVX512-BF16 or AMX: models.spec.cpu_computes_bf16), none elsewhere.
MIXED_PRECISION = ("auto", "bf16", "no")


@dataclass(frozen=True)
class StageSettings:
    data: str
    steps: int
    batch_size: int  # rows per micro-batch (packed rows hold several records)
    accumulate: int
    learning_rate: float
    warmup_steps: int
    min_learning_rate: float
    weight_decay: float
    max_grad_norm: float
    checkpoint_every: int
    log_every: int
    fallback_data: Optional[str] = None  # used when ``data`` is missing or empty (no synthesis run)
    pass_through_without_data: bool = False  # no data and no fallback: the model passes through unchanged

    def __post_init__(self):
        for key in ("steps", "batch_size", "accumulate", "checkpoint_every", "log_every"):
            check_positive_int(getattr(self, key), key, "training setting")
        if not self.learning_rate > 0 or self.warmup_steps < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("learning_rate must be positive; warmup_steps, weight_decay and max_grad_norm >= 0")


@dataclass(frozen=True)
class RunSettings:
    stage: str
    base_model: str
    output: Path
    seed: int
    dtype: str
    mixed_precision: str
    quantize: Optional[str]
    lora: Optional[Dict[str, Any]]
    gradient_checkpointing: bool
    max_length: int
    packing: bool
    train: StageSettings


def load_settings(path, stage: str, overrides: Optional[Dict[str, Any]] = None) -> RunSettings:
    if stage not in STAGES:
        raise ValueError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training config at {str(path)!r}")
    config = Config().from_disk(path, overrides=overrides or {}, interpolate=True)
    for section in ("paths", "model", "data", stage):
        if section not in config:
            raise ValueError(f"{path}: missing section [{section}]")
    known = {f.name for f in fields(StageSettings)}
    unknown = set(config[stage]) - known
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) in [{stage}]: {', '.join(sorted(unknown))}")
    model, data, paths = config["model"], config["data"], config["paths"]
    mixed_precision = model.get("mixed_precision", "auto")
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"{path}: [model] mixed_precision must be one of {', '.join(MIXED_PRECISION)}, "
                         f"got {mixed_precision!r}")
    return RunSettings(
        stage=stage,
        base_model=str(paths["base_model"]),
        output=Path(paths["output"]),
        seed=int(paths.get("seed", 0)),
        dtype=model.get("dtype", "auto"),
        mixed_precision=mixed_precision,
        quantize=model.get("quantize"),
        lora=model.get("lora"),
        gradient_checkpointing=bool(model.get("gradient_checkpointing", False)),
        max_length=int(data["max_length"]),
        packing=bool(data.get("packing", True)),
        train=StageSettings(**config[stage]),
    )
