"""One SeqGPT training stage (pre-training or fine-tuning): the loop.

Runs through ``accelerate``: on one CPU or GPU as it is, and under ``accelerate launch`` as
DDP with no change (each process takes every n-th micro-batch; only the main process writes
logs and checkpoints). bf16 autocast on GPUs that support it. Each optimizer step takes
``accumulate`` micro-batches; the loss is the summed answer-token cross-entropy divided by
the step's answer tokens, so a step's gradient does not depend on how it is split.
"""
import hashlib
import json
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

from wasabi import msg

from ..data.records import answer_problem, read_records
from ..models import HFModel
from ..models.adapters import add_lora, base_model, prepare_for_training
from ..models.saved_weights import model_folder_hash
from ..models.spec import cpu_computes_bf16
from ..models.unmasking import UnsupportedModelError
from ..validation import require
from .batching import BatchStream
from .checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from .encoding import IGNORE, encode_records
from .loss import AnswerLoss
from .schedules import cosine_rate
from .settings import RunSettings
from .threads import ThreadGovernor

LOG_FILE = "log.jsonl"


def stage_records(settings: RunSettings) -> List[dict]:
    """The stage's records; its ``fallback_data`` when ``data`` is missing or empty. None
    (``[]``) when neither exists and the stage is set to ``pass_through_without_data``."""
    train = settings.train
    for source in (train.data, train.fallback_data):
        if source and Path(source).exists():
            records = list(read_records(source))
            for number, record in enumerate(records, 1):
                problem = answer_problem(record["task"], record["labels"], record["answer"])
                if problem:
                    raise ValueError(f"{source}: record {number} ({record['text'][:60]!r}) would teach an answer "
                                     f"that does not read back: {problem}. Leave it out (seqgpt convert lists "
                                     "such examples apart instead of writing them).")
            if records:
                if source != train.data:
                    msg.warn(f"No records at {train.data}: training stage {settings.stage} on {source} instead")
                return records
    if train.pass_through_without_data:
        return []
    raise FileNotFoundError(f"no training records for stage {settings.stage!r} at {train.data!r}"
                            + (f" or {train.fallback_data!r}" if train.fallback_data else ""))


def load_for_training(settings: RunSettings, source: str):
    """Model (LoRA-wrapped and k-bit prepared as set) and tokenizer, ready to train."""
    if settings.quantize and settings.lora is None:
        raise ValueError("quantized training needs LoRA (QLoRA): set [model.lora] or quantize = null")
    # Packed rows go through the kernel with every layer causal: it keeps packed records apart.
    spec = HFModel(name=source, dtype=settings.dtype, quantize=settings.quantize,
                   unmask="0" if settings.packing else None).resolved(trains=True)
    try:
        model, tokenizer = spec.load(task="causal_lm", unmask_mode="full")
    except UnsupportedModelError as err:
        raise ValueError(f"packing needs segment-aware attention, which this model lacks ({err}); "
                         "set [data] packing = false") from None
    model = prepare_for_training(model, quantized=bool(settings.quantize),
                                 gradient_checkpointing=settings.gradient_checkpointing)
    if settings.lora is not None:
        model = add_lora(model, settings.lora, "CAUSAL_LM")
    return model, tokenizer


def run_identity(settings: RunSettings, source: str, encoded) -> dict:
    """What a checkpoint must share with the run that resumes it: the data (a hash of every
    record's tokens) and every setting that changes the weights it trains (logging and
    checkpoint intervals do not)."""
    digest = hashlib.blake2b(digest_size=16)
    for row in encoded:
        digest.update(json.dumps([row.input_ids, row.labels]).encode())
    stage = {key: value for key, value in asdict(settings.train).items()
             if key not in ("data", "fallback_data", "pass_through_without_data", "checkpoint_every", "log_every")}
    run = {"model": source, "model_files": model_files_hash(source), "seed": settings.seed, "dtype": settings.dtype,
           "mixed_precision": settings.mixed_precision, "quantize": settings.quantize,
           "lora": settings.lora, "gradient_checkpointing": settings.gradient_checkpointing,
           "max_length": settings.max_length, "packing": settings.packing, **stage}
    identity = {"records": len(encoded), "data": digest.hexdigest(), "settings": run}
    return json.loads(json.dumps(identity))  # plain types: a checkpoint's state is read with weights_only


def model_files_hash(source: str) -> Optional[str]:
    """A hash of the files of the starting model when it is a folder (None for a hub id): a
    checkpoint of a run that started from other weights under the same name is not resumed."""
    folder = Path(source).expanduser()
    return model_folder_hash(folder) if folder.is_dir() else None


def changes(saved: dict, now: dict) -> list:
    """What differs between a checkpoint's run and this one, in words."""
    found = []
    if saved.get("data") != now["data"]:
        found.append(f"the data ({saved.get('records')} records then, {now['records']} now, other contents)"
                     if saved.get("records") != now["records"] else "the data (as many records, other contents)")
    for key, value in now["settings"].items():
        before = (saved.get("settings") or {}).get(key)
        if before != value:
            found.append(f"{key} ({before!r} then, {value!r} now)")
    return found


def _apply_stage_settings(optimizer, scheduler, train, step: int) -> None:
    """The new run's rate, schedule and weight decay on an optimizer restored from a checkpoint
    (whose saved groups and schedule would otherwise override them)."""
    scheduler.base_lrs = [train.learning_rate] * len(optimizer.param_groups)
    for group, rate in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = train.learning_rate
        group["weight_decay"] = train.weight_decay
        group["lr"] = train.learning_rate * rate(step)


def train_stage(settings: RunSettings, init_from: Optional[str] = None, *, stop_after: Optional[int] = None,
                resume_changed: bool = False) -> Path:
    """Train one stage into ``output/<stage>``; resumes from its checkpoint when there is one.
    Returns the folder of the final model. ``stop_after``: end after this step (tests).

    A checkpoint of other data or settings is refused, naming what changed, unless
    ``resume_changed``: then its weights and optimizer state go on under this run's data and
    settings."""
    import torch
    from tqdm import tqdm

    require("accelerate", "seqgpt train", "train")
    from accelerate import Accelerator

    train = settings.train
    folder = settings.output / settings.stage
    checkpoints = folder / "checkpoints"
    torch.manual_seed(settings.seed)
    # cpu=True without a GPU: launched processes then join as gloo DDP (accelerate's MULTI_CPU)
    accelerator = Accelerator(mixed_precision=mixed_precision(settings.mixed_precision),
                              cpu=not torch.cuda.is_available())
    model, tokenizer = load_for_training(settings, init_from or settings.base_model)
    records = stage_records(settings)
    final = folder / "final"
    if not records:  # a stage without data of its own (pre-training without synthesis)
        if accelerator.is_main_process:
            save_final(model, tokenizer, final, quantized=bool(settings.quantize))
            msg.warn(f"No records at {train.data}: stage {settings.stage} passes its model through to {final}")
        return final
    encoded = encode_records(tokenizer, records, settings.max_length)
    identity = run_identity(settings, init_from or settings.base_model, encoded)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.learning_rate, weight_decay=train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_rate(
        step, 1.0, train.steps, train.warmup_steps, train.min_learning_rate / train.learning_rate))
    loss_model, optimizer = accelerator.prepare(AnswerLoss(model, settings.packing), optimizer)
    step = 0
    resumed = latest_checkpoint(checkpoints)
    if resumed is not None:
        state = load_checkpoint(resumed, model, optimizer, scheduler)
        step = state["step"]
        changed = changes(state["extra"], identity)
        if changed and not resume_changed:
            raise ValueError(f"{resumed} was trained with other data or settings: {'; '.join(changed)}. Delete "
                             f"{folder} to start over, set another --paths.output, or pass --resume-changed to go "
                             "on from its weights under the new ones.")
        if changed:
            _apply_stage_settings(optimizer, scheduler, train, step)
            msg.warn(f"Resuming stage {settings.stage} from {resumed} (step {step}) with changes: {'; '.join(changed)}")
        else:
            msg.info(f"Resuming stage {settings.stage} from {resumed} (step {step})")
    log = _Log(folder / LOG_FILE, step, accelerator.is_main_process)
    stream = BatchStream(encoded, seed=settings.seed, rows_per_batch=train.batch_size, max_length=settings.max_length,
                         packing=settings.packing, pad_id=tokenizer.pad_token_id)
    loss_model.train()
    started = time.time()
    progress = tqdm(total=train.steps, initial=step, desc=f"seqgpt {settings.stage}", unit="step",
                    disable=not accelerator.is_local_main_process)
    # on a CPU, the thread count follows the machine's load (a busy core would stall every step)
    threads = ThreadGovernor(torch.get_num_threads() if accelerator.device.type == "cpu" else 1)
    while step < train.steps:
        first = (step * train.accumulate) * accelerator.num_processes + accelerator.process_index
        batches = [stream[first + m * accelerator.num_processes] for m in range(train.accumulate)]
        step_started = time.perf_counter()
        total, answer_tokens = optimizer_step(accelerator, loss_model, optimizer, params, batches, train.max_grad_norm)
        threads.step_done(time.perf_counter() - step_started)
        scheduler.step()
        step += 1
        progress.update(1)
        mean_loss = total / max(answer_tokens, 1)
        progress.set_postfix(loss=f"{mean_loss:.4f}")
        if step % train.log_every == 0 or step == train.steps:
            log.write({"stage": settings.stage, "step": step, "loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                       "answer_tokens": answer_tokens, "seconds": round(time.time() - started, 2),
                       "threads": threads.current})
        if accelerator.is_main_process and (step % train.checkpoint_every == 0 or step == train.steps):
            save_checkpoint(checkpoints, step, model, optimizer, scheduler, identity)
        accelerator.wait_for_everyone()
        if stop_after is not None and step >= stop_after:
            break
    progress.close()
    if step >= train.steps and accelerator.is_main_process:
        save_final(model, tokenizer, final, quantized=bool(settings.quantize))
        msg.good(f"Stage {settings.stage} done: {step} steps, model in {final}")
    return final


def mixed_precision(setting: str) -> str:
    """accelerate's mixed precision for a config's ``mixed_precision`` (see settings)."""
    import torch

    if setting == "auto":
        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "no"
        return "bf16" if cpu_computes_bf16() else "no"
    return setting


def optimizer_step(accelerator, loss_model, optimizer, params, batches, max_grad_norm: float):
    """One optimizer step over the micro-batches ``batches``; returns the summed answer-token loss
    and the number of answer tokens (over all processes). The learning rate's schedule is the
    caller's to step."""
    import torch

    # The loss is a mean over the answer tokens of the step's batches on *all* processes: DDP
    # averages gradients over processes, so each scales by their number over the global count,
    # and N processes give the gradient one process gives with N times the accumulation.
    answer_tokens = int(accelerator.reduce(torch.tensor(
        sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches), device=accelerator.device), "sum"))
    scale = accelerator.num_processes / max(answer_tokens, 1)
    total = torch.zeros((), device=accelerator.device)
    for m, batch in enumerate(batches):
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        sync = accelerator.no_sync(loss_model) if m < len(batches) - 1 else nullcontext()
        with sync, accelerator.autocast():
            loss = loss_model(**batch)
            accelerator.backward(loss * scale)
        total += loss.detach().float()
    if max_grad_norm:
        accelerator.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(accelerator.reduce(total, "sum")), answer_tokens


def save_final(model, tokenizer, folder: Path, *, quantized: bool) -> None:
    """The trained model in Hugging Face format: LoRA merged into the weights, except on a
    quantized base (4-bit weights take no exact merge), where the adapter is saved."""
    from ..models.unmasking import ATTENTION_NAME

    if hasattr(model, "merge_and_unload") and not quantized:
        model = model.merge_and_unload()
    base = base_model(model)
    if getattr(base.config, "_attn_implementation", None) == ATTENTION_NAME:
        base.config._attn_implementation = "eager"  # the packing kernel is a training detail
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


class _Log:
    """The JSONL loss log; on resume, entries after the checkpoint's step are dropped (they are redone)."""

    def __init__(self, path: Path, step: int, active: bool):
        self.path, self.active = path, active
        if not active:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text(encoding="utf8").splitlines() if path.exists() else []
        kept = [line for line in lines if _logged_step(line) <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf8")

    def write(self, entry: dict) -> None:
        if self.active:
            with self.path.open("a", encoding="utf8") as stream:
                stream.write(json.dumps(entry) + "\n")


def _logged_step(line: str) -> float:
    """The step of a log line; infinity for a line cut short by a kill (so it is dropped)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")
