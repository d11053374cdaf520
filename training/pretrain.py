"""Pre-train SuPreME (paper §4.1) on a labelled ECG dataset: one script for one CPU, one GPU, many GPUs or machines.

    accelerate launch training/pretrain.py --config training/configs/single_gpu.yaml [--key value ...]
    accelerate launch --multi_gpu --num_processes 4 training/pretrain.py --config training/configs/paper.yaml
    python training/pretrain.py --config training/configs/cpu_tiny.yaml --data DIR --output_dir runs/tiny

Every config key can be overridden with `--key value` (YAML syntax: `--max_steps 100`, `--val_data "[a, b]"`).
The dataset is a folder written by `builders/` or a Hub repo in the project's schema; its `labels` ClassLabel names
are the query list, embedded once by the frozen text tower and reused every step. ECGs travel as int16 and are
normalised on the device. Early stopping watches the zero-shot AUROC on `val_data` (`evaluate_zeroshot`) when given,
else the loss on the dataset's `val_split`, else the training loss. The best model is written with `save_pretrained`
and its processor to `output_dir/best_model` (AutoModel / AutoProcessor / pipeline with `trust_remote_code=True`);
`output_dir/checkpoints/step_N` hold `accelerator.save_state` (every `checkpoint_every` steps and each epoch) and
`--resume latest` continues from the newest one: step, optimiser, scheduler, RNG and position in the epoch. With a
pretrained `text_encoder` the checkpoints leave its frozen weights out (90 MB of MiniLM, 440 MB of MedCPT, against
~3 MB of trained weights and optimiser state at the small recipe's size): a resumed run loads them from
`text_encoder` again, so resume with the same one.
`output_dir/metrics.jsonl` logs every `log_every` steps and one summary per epoch; TensorBoard logs go to
`output_dir/logs` (`report_to: none` turns them off).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import re
import resource
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python training/pretrain.py` from a checkout

from modeling_supreme.configuration_supreme import SupremeConfig  # noqa: E402
from modeling_supreme.modeling_supreme import SupremeModel  # noqa: E402
from modeling_supreme.processing_supreme import (  # noqa: E402
    SupremeFeatureExtractor,
    SupremeProcessor,
    ecg_from_digital,
)
from training.augmentation import augment, check_augmentations  # noqa: E402
from training.ecg_data import class_names, ecg_dataloader, load_ecg_dataset  # noqa: E402

# Every key a config may set, with its default. Optimiser values follow MERL's published config (same group; SuPreME
# keeps its setup): AdamW lr 1e-3, weight decay 1e-8; cosine restarts every T_0 = 5000 steps down to eta_min.
DEFAULTS = {
    "data": None,  # labelled pre-training dataset: a builders/ folder or a Hub repo id (required)
    "data_config": None,
    "train_split": "train",
    "train_fraction": 1.0,  # train on a seeded random share of the split (data-efficiency studies); not with streaming
    "val_split": "validation",  # loss-based early stopping when val_data is empty; skipped if the split is absent
    "streaming": False,
    "num_workers": 2,  # loader threads per process
    "cache_dir": None,  # datasets cache (default: HF_DATASETS_CACHE)
    "val_data": [],  # zero-shot early stopping: evaluation datasets, DIR or DIR:CONFIG (training/evaluate_zeroshot.py)
    "val_data_split": "validation",
    "text_encoder": "ncbi/MedCPT-Query-Encoder",  # pretrained BERT for the frozen text tower; null: random, from config
    "tokenizer": None,  # default: text_encoder
    "model_config": {},  # SupremeConfig fields, or the path of a config.json / model folder; {}: the paper's
    "normalization": "minmax",
    "global_batch_size": 256,  # = per_device_batch_size x processes x gradient accumulation
    "per_device_batch_size": 64,
    "learning_rate": 1.0e-3,
    "weight_decay": 1.0e-8,
    "adam_betas": [0.9, 0.999],
    "warmup_steps": 0,  # linear warm-up from 0 to learning_rate before the cosine schedule (not in the paper)
    "t_0": 5000,  # cosine annealing with warm restarts: period in optimiser steps after the warm-up; null: the run
    "eta_min": 1.0e-8,
    "max_grad_norm": None,
    "augment": [],  # training-time augmentation of the ECGs (training/augmentation.py): e.g. [time_shift]
    "max_epochs": 50,
    "max_steps": None,  # stop after this many optimiser steps (demo, tests)
    "patience": 10,  # epochs without improvement before stopping
    "mixed_precision": "auto",  # auto: bf16 where the accelerator has it, else fp32; or no / bf16 / fp16
    "compile": False,
    "seed": 42,
    "output_dir": "runs/supreme",
    "checkpoint_every": 1000,  # optimiser steps between save_state (and one at each epoch end)
    "keep_checkpoints": 2,
    "log_every": 20,
    "report_to": "tensorboard",  # an Accelerate tracker, or none
    "log_ids": False,  # each process writes "epoch<TAB>id" of every ECG it trained on to output_dir/ids/rank<N>.txt
    "resume": None,  # "latest" (newest checkpoint in output_dir) or a checkpoint folder
}


class ConfigError(ValueError):
    """A config that cannot train; the message says what to change."""


def parse_config(argv: list[str] | None = None) -> dict:
    """`--config FILE.yaml` then `--key value` overrides (values parsed as YAML) on top of DEFAULTS."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="keys: " + ", ".join(DEFAULTS))
    parser.add_argument("--config", type=Path, help="YAML file of keys (see DEFAULTS in this script)")
    args, rest = parser.parse_known_args(argv)
    config = dict(DEFAULTS)
    if args.config is not None:
        if not args.config.is_file():
            raise ConfigError(f"config file {args.config} not found")
        config.update(_checked_keys(yaml.safe_load(args.config.read_text()) or {}, str(args.config)))
    overrides = {}
    for i in range(0, len(rest), 2):
        key = rest[i]
        if not key.startswith("--") or i + 1 >= len(rest):
            raise ConfigError(f"expected --key value pairs after --config, got {' '.join(rest[i:i + 2])!r}")
        overrides[key[2:].replace("-", "_")] = _override_value(rest[i + 1])
    config.update(_checked_keys(overrides, "the command line"))
    return config


def _override_value(text: str):
    """A command-line value in YAML syntax; YAML 1.1 reads `3e-3` (no dot) as a string, a user means the number."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _checked_keys(values: dict, where: str) -> dict:
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid keys: {', '.join(DEFAULTS)}")
    return values


def gradient_accumulation(config: dict, num_processes: int) -> int:
    """global_batch_size / (per_device_batch_size x processes), which must be a whole number."""
    per_step = config["per_device_batch_size"] * num_processes
    if config["global_batch_size"] % per_step:
        divisors = [b for b in range(1, config["global_batch_size"] + 1)
                    if config["global_batch_size"] % (b * num_processes) == 0]
        raise ConfigError(
            f"global_batch_size {config['global_batch_size']} is not divisible by per_device_batch_size "
            f"{config['per_device_batch_size']} x {num_processes} process(es) = {per_step}: set per_device_batch_size "
            f"to one of {divisors} or change global_batch_size"
        )
    return config["global_batch_size"] // per_step


def fraction_subset(n: int, fraction: float, seed: int) -> list[int]:
    """Sorted indices of a seeded random `fraction` of `n` rows (at least one)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"train_fraction must be in (0, 1], got {fraction}")
    return sorted(random.Random(seed).sample(range(n), max(1, round(fraction * n))))


def model_config(value) -> SupremeConfig:
    if isinstance(value, dict):
        return SupremeConfig(**value)
    return SupremeConfig.from_pretrained(value)


def warmup_cosine_restarts(optimizer, warmup_steps: int, t_0: int, eta_min: float):
    """Linear warm-up over `warmup_steps`, then cosine annealing with warm restarts every `t_0` steps down to
    `eta_min` (`CosineAnnealingWarmRestarts`' schedule, shifted by the warm-up), as one `LambdaLR`."""
    floors = [eta_min / group["lr"] for group in optimizer.param_groups]

    def factor(step: int, floor: float) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        cycle = (step - warmup_steps) % t_0 / t_0
        return floor + (1 - floor) * (1 + math.cos(math.pi * cycle)) / 2

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [lambda step, floor=floor: factor(step, floor) for floor in floors]
    )


def mixed_precision(value: str) -> str:
    if value != "auto":
        return value
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


class TrainState:
    """Where training is, saved with every checkpoint (Accelerate's `register_for_checkpointing`)."""

    def __init__(self):
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.epoch_loss, self.epoch_ecgs = 0.0, 0  # this process's sums over the epoch so far
        self.best, self.bad_epochs = None, 0

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def latest_checkpoint(output_dir: Path) -> Path | None:
    steps = sorted((output_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    return steps[-1] if steps else None


def save_state(accelerator: Accelerator, output_dir: Path, step: int, keep: int) -> None:
    """`accelerator.save_state` into a temporary folder renamed when complete: a killed run never leaves a
    half-written checkpoint for `--resume latest` to pick up."""
    final = output_dir / "checkpoints" / f"step_{step}"
    tmp = final.with_name(f".tmp_step_{step}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(final.parent.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


# A state-dict key of the frozen text tower, also under DDP's `module.` or torch.compile's `_orig_mod.` prefix.
TEXT_TOWER_KEY = re.compile(r"^(?:(?:module|_orig_mod)\.)*text_model\.")


def drop_text_tower(models, weights: list[dict], output_dir) -> None:
    """Accelerate save-state hook: the checkpoint leaves out the frozen pretrained text tower."""
    for state_dict in weights:
        for key in [k for k in state_dict if TEXT_TOWER_KEY.match(k)]:
            del state_dict[key]


def check_checkpoint_weights(models, input_dir) -> None:
    """Accelerate load-state hook, before a non-strict load: the checkpoint must hold every weight of the model but
    the text tower's, in the model's shapes, and nothing else; otherwise ValueError naming the file and the keys."""
    from safetensors import safe_open

    for i, model in enumerate(models):
        path = Path(input_dir) / (f"model_{i}.safetensors" if i else "model.safetensors")
        if not path.is_file():
            raise ValueError(f"{path}: no such checkpoint file")
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        with safe_open(str(path), "pt") as handle:
            stored = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118 (not a dict)
        missing = sorted(k for k in expected.keys() - stored.keys() if not TEXT_TOWER_KEY.match(k))
        unexpected = sorted(stored.keys() - expected.keys())
        reshaped = sorted(k for k in stored.keys() & expected.keys() if stored[k] != expected[k])
        if missing or unexpected or reshaped:
            raise ValueError(f"{path} does not match the model: missing {missing[:3]} ({len(missing)}), unexpected "
                             f"{unexpected[:3]} ({len(unexpected)}), other shape {reshaped[:3]} ({len(reshaped)}); "
                             "resume with the run's model_config")


def dataset_licence(data: str) -> str | None:
    """The licence a local dataset folder's card declares (its YAML front matter), if any."""
    card = Path(data) / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return None
    return (yaml.safe_load(text.split("---", 2)[1]) or {}).get("license")


def save_best_model(model: SupremeModel, processor: SupremeProcessor, output_dir: Path, training: dict) -> None:
    """The deliverable: a folder that AutoModel / AutoProcessor / pipeline load, with a card written from its config
    and `training` (training/checkpoint.py)."""
    from training.checkpoint import save_checkpoint

    tmp, final = output_dir / ".tmp_best_model", output_dir / "best_model"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, processor, tmp, training=training)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


@torch.no_grad()
def validation_loss(model, dataset, query_embeds, config, accelerator) -> float:
    """Mean BCE over the validation split, each process scoring its share."""
    total = torch.zeros(2, device=accelerator.device)
    loader = ecg_dataloader(dataset, config["per_device_batch_size"], shuffle=False, drop_last=False,
                            num_processes=accelerator.num_processes, process_index=accelerator.process_index,
                            num_workers=config["num_workers"])
    for batch in loader:
        values = ecg_from_digital(batch["ecg"].to(accelerator.device, non_blocking=True),
                                  batch["adc_gain"].to(accelerator.device, non_blocking=True), config["normalization"],
                                  model.config.sampling_rate)
        with accelerator.autocast():
            loss = model(input_values=values, query_embeds=query_embeds,
                         labels=batch["labels"].to(accelerator.device, non_blocking=True)).loss
        total += torch.stack([loss.float() * len(values), torch.tensor(len(values), device=accelerator.device)])
    total = accelerator.reduce(total, reduction="sum")
    return (total[0] / total[1]).item()


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB -> GB of resident memory


def main(argv: list[str] | None = None) -> dict:
    config = parse_config(argv)
    output_dir = Path(config["output_dir"])
    if not config["data"]:
        raise ConfigError("no dataset: set `data` to a folder written by builders/ or a Hub dataset repo id")

    # ---- processes, precision, batch arithmetic: checked before anything is loaded -------------------------------
    accelerator = Accelerator(
        cpu=not torch.accelerator.is_available(),  # no GPU: `--multi_gpu` processes still form a gloo group
        mixed_precision=mixed_precision(config["mixed_precision"]),
        log_with=None if config["report_to"] in (None, "none") else config["report_to"],
        project_dir=str(output_dir / "logs"),
    )
    accumulation = gradient_accumulation(config, accelerator.num_processes)
    try:
        augmentations = check_augmentations(config["augment"])
    except ValueError as error:
        raise ConfigError(f"augment: {error}") from error
    set_seed(config["seed"])

    # ---- data: the query list is the dataset's class names -------------------------------------------------------
    with accelerator.main_process_first():  # one process prepares the Arrow cache, the others reuse it
        try:
            train_data = load_ecg_dataset(config["data"], config["data_config"], config["train_split"],
                                          streaming=config["streaming"], cache_dir=config["cache_dir"])
            queries = class_names(train_data)
            if config["train_fraction"] != 1.0:
                train_data = train_data.select(fraction_subset(len(train_data), config["train_fraction"],
                                                               config["seed"]))
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(f"data: {error}") from error
        val_sets, val_data = {}, None
        if config["val_data"] and accelerator.is_main_process:  # zero-shot validation runs on the main process
            from training.evaluate_zeroshot import load_benchmark_sets

            try:
                val_sets = load_benchmark_sets(list(config["val_data"]), config["val_data_split"],
                                               cache_dir=config["cache_dir"])
            except (FileNotFoundError, ValueError) as error:
                raise ConfigError(f"val_data: {error}") from error
        elif not config["val_data"] and config["val_split"]:
            try:
                val_data = load_ecg_dataset(config["data"], config["data_config"], config["val_split"],
                                            streaming=config["streaming"], cache_dir=config["cache_dir"])
            except ValueError as error:  # no such split: the training loss decides
                accelerator.print(f"{error}: early stopping on the training loss")
    if not config["streaming"]:
        steps_per_epoch = len(train_data) // config["global_batch_size"]
        if steps_per_epoch == 0:
            raise ConfigError(f"the {config['train_split']!r} split of {config['data']} has {len(train_data)} ECGs, "
                              f"fewer than one global batch ({config['global_batch_size']}): lower global_batch_size")
    t_0 = config["t_0"]
    if t_0 is None:  # one cosine over the whole run, after the warm-up
        steps = [config["max_steps"]] if config["max_steps"] else []
        if not config["streaming"]:
            steps.append(config["max_epochs"] * steps_per_epoch)
        if not steps:
            raise ConfigError("t_0: null needs the run's length: set max_steps for a streaming dataset")
        t_0 = max(1, min(steps) - config["warmup_steps"])
    checkpoint = None
    if config["resume"]:
        checkpoint = latest_checkpoint(output_dir) if config["resume"] == "latest" else Path(config["resume"])
        if checkpoint is None or not checkpoint.is_dir():
            raise ConfigError(f"resume: no checkpoint {checkpoint or 'in ' + str(output_dir / 'checkpoints')}; "
                              "give a checkpoints/step_N folder or `latest` with the run's output_dir")

    # ---- model: frozen text tower, queries embedded once ------------------------------------------------------------
    from transformers import AutoTokenizer

    tokenizer_path = config["tokenizer"] or config["text_encoder"]
    if not tokenizer_path:
        raise ConfigError("set `tokenizer` (the text encoder's tokenizer) when `text_encoder` is null")
    architecture = model_config(config["model_config"])
    if config["text_encoder"]:
        model = SupremeModel.from_text_encoder(config["text_encoder"], architecture)
    else:
        model = SupremeModel(architecture)
    feature_extractor = SupremeFeatureExtractor(
        sampling_rate=architecture.sampling_rate, num_samples=architecture.num_samples,
        normalization=config["normalization"], min_duration_samples=architecture.patch_size)
    processor = SupremeProcessor(feature_extractor, AutoTokenizer.from_pretrained(tokenizer_path))
    model.to(accelerator.device)
    query_embeds = model.encode_queries(queries, processor.tokenizer)  # (Q, text_hidden_size), fixed for the run

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config["learning_rate"], weight_decay=config["weight_decay"],
                                  betas=tuple(config["adam_betas"]))
    # Stepped once per optimiser step here; Accelerate's prepared scheduler would step once per process.
    scheduler = warmup_cosine_restarts(optimizer, config["warmup_steps"], t_0, config["eta_min"])
    if config["compile"]:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler, state)
    if config["text_encoder"]:  # a random text tower (text_encoder: null) is saved: nothing else could restore it
        accelerator.register_save_state_pre_hook(drop_text_tower)
        accelerator.register_load_state_pre_hook(check_checkpoint_weights)

    if checkpoint is not None:
        accelerator.load_state(str(checkpoint), strict=not config["text_encoder"])
        accelerator.print(f"resumed from {checkpoint}: epoch {state.epoch}, step {state.global_step}")

    if config["report_to"] not in (None, "none"):
        accelerator.init_trackers("supreme_pretrain", {k: v if isinstance(v, int | float | str | bool) else str(v)
                                                       for k, v in config.items()})
    metrics_file = output_dir / "metrics.jsonl"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    ids_file = None
    if config["log_ids"]:
        (output_dir / "ids").mkdir(parents=True, exist_ok=True)
        ids_file = open(output_dir / "ids" / f"rank{accelerator.process_index}.txt", "a")  # noqa: SIM115

    def log(record: dict) -> None:
        if accelerator.is_main_process:
            with open(metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")
        accelerator.log({k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"},
                        step=record["step"])

    accelerator.print(f"{len(queries)} queries, {accelerator.num_processes} process(es) x "
                      f"{config['per_device_batch_size']} x {accumulation} accumulation = {config['global_batch_size']} "
                      f"per step, mixed precision {accelerator.mixed_precision}")

    # ---- training loop ------------------------------------------------------------------------------------------
    max_steps = config["max_steps"] or math.inf
    total_steps = min(max_steps, config["max_epochs"] * steps_per_epoch) if not config["streaming"] else max_steps
    session_start, session_first_step = time.perf_counter(), state.global_step  # for the whole run's time left
    stop = state.global_step >= max_steps or state.bad_epochs >= config["patience"]  # a finished run stays finished
    while state.epoch < config["max_epochs"] and not stop:
        model.train()
        loader = ecg_dataloader(train_data, config["per_device_batch_size"], shuffle=True, seed=config["seed"],
                                epoch=state.epoch, start_batch=state.step_in_epoch * accumulation,
                                num_processes=accelerator.num_processes, process_index=accelerator.process_index,
                                num_workers=config["num_workers"])
        batches = iter(loader)
        total = None if config["streaming"] else steps_per_epoch
        progress = tqdm(total=total, initial=state.step_in_epoch, desc=f"epoch {state.epoch}",
                        disable=None if accelerator.is_local_main_process else True,  # None: off in logs
                        dynamic_ncols=True)
        start, ecgs_before = time.perf_counter(), state.epoch_ecgs
        while state.global_step < max_steps:
            group = list(itertools.islice(batches, accumulation))
            if config["streaming"]:  # shards of unequal size: every process stops when the first runs out
                complete = torch.tensor(float(len(group) == accumulation), device=accelerator.device)
                if accelerator.reduce(complete, reduction="min").item() < 1:
                    break
            elif len(group) < accumulation or state.step_in_epoch >= steps_per_epoch:
                break
            step_loss = 0.0
            for i, batch in enumerate(group):
                values = ecg_from_digital(batch["ecg"].to(accelerator.device, non_blocking=True),
                                          batch["adc_gain"].to(accelerator.device, non_blocking=True),
                                          config["normalization"], architecture.sampling_rate)
                values = augment(values, augmentations)
                labels = batch["labels"].to(accelerator.device, non_blocking=True)
                # gradients are averaged over processes only on the last micro-batch of the step
                with accelerator.no_sync(model) if i < accumulation - 1 else nullcontext():
                    loss = model(input_values=values, query_embeds=query_embeds, labels=labels).loss
                    accelerator.backward(loss / accumulation)
                step_loss += loss.item() / accumulation
                state.epoch_ecgs += len(values)
                if ids_file is not None:
                    ids_file.write("".join(f"{state.epoch}\t{record_id}\n" for record_id in batch["id"]))
            if config["max_grad_norm"]:
                accelerator.clip_grad_norm_(model.parameters(), config["max_grad_norm"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.global_step += 1
            state.step_in_epoch += 1
            state.epoch_loss += step_loss
            progress.update(1)
            if state.global_step % config["log_every"] == 0:
                mean = accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), reduction="mean").item()
                per_step = (time.perf_counter() - session_start) / (state.global_step - session_first_step)
                left = (total_steps - state.global_step) * per_step / 60  # the epoch bar shows the epoch's own
                progress.set_postfix(loss=f"{mean:.4f}", run_left=f"{left:.0f} min" if math.isfinite(left) else "?")
                log({"step": state.global_step, "epoch": state.epoch, "loss": mean, "lr": scheduler.get_last_lr()[0]})
            if state.global_step % config["checkpoint_every"] == 0:
                save_state(accelerator, output_dir, state.global_step, config["keep_checkpoints"])
        progress.close()
        stop = state.global_step >= max_steps
        if state.step_in_epoch == 0:
            accelerator.print(f"epoch {state.epoch} had no complete step: stopping")
            break
        seconds = time.perf_counter() - start

        # ---- end of epoch: validation, early stopping, best model, checkpoint ---------------------------------------
        train_loss = accelerator.reduce(torch.tensor(state.epoch_loss / state.step_in_epoch, device=accelerator.device),
                                        reduction="mean").item()
        model.eval()
        unwrapped = accelerator.unwrap_model(model)
        summary = {"step": state.global_step, "epoch": state.epoch, "train_loss": train_loss}
        if config["val_data"]:
            result = [None]
            if accelerator.is_main_process:
                from training.evaluate_zeroshot import evaluate_zeroshot

                result = [evaluate_zeroshot(unwrapped, processor, val_sets,
                                            batch_size=config["per_device_batch_size"])["mean_auroc"]]
            summary["val_auroc"] = broadcast_object_list(result)[0]
            score = summary["val_auroc"]  # higher is better
        elif val_data is not None:
            summary["val_loss"] = validation_loss(unwrapped, val_data, query_embeds, config, accelerator)
            score = -summary["val_loss"]
        else:
            score = -train_loss
        if math.isnan(score):  # e.g. no scorable class: never better, but the first epoch still leaves a model
            improved, score = state.best is None, -math.inf
        else:
            improved = state.best is None or score > state.best
        if improved:
            state.best, state.bad_epochs = score, 0
            if accelerator.is_main_process:
                save_best_model(unwrapped, processor, output_dir, {
                    "dataset": f"`{config['data']}` ({config['train_split']} split)",
                    "licence": dataset_licence(config["data"]),
                    "records": None if config["streaming"] else len(train_data),
                    "labels": f"the dataset's `labels`, {len(queries)} classes, each a training query",
                    "recipe": f"`training/pretrain.py`; the run's config.yaml: {config['max_epochs']} epochs max, "
                              f"batch {config['global_batch_size']}, learning rate {config['learning_rate']}, "
                              f"normalization {config['normalization']}, seed {config['seed']}",
                    "hardware": f"{accelerator.num_processes} process(es) on {accelerator.device.type}",
                    "time": f"best after epoch {state.epoch + 1}, step {state.global_step}",
                })
        else:
            state.bad_epochs += 1
        summary.update(ecg_per_s=(state.epoch_ecgs - ecgs_before) * accelerator.num_processes / seconds,
                       peak_memory_gb=peak_memory_gb(accelerator.device), best=improved)
        log(summary)
        val = (f"val AUROC {summary['val_auroc']:.4f}" if "val_auroc" in summary else
               f"val loss {summary['val_loss']:.4f}" if "val_loss" in summary else "no validation")
        accelerator.print(f"epoch {state.epoch} | step {state.global_step} | loss {train_loss:.4f} | {val}"
                          f"{' (best)' if improved else ''} | {summary['ecg_per_s']:,.0f} ECG/s | "
                          f"peak memory {summary['peak_memory_gb']:.2f} GB")
        if not stop:
            state.epoch, state.step_in_epoch, state.epoch_loss, state.epoch_ecgs = state.epoch + 1, 0, 0.0, 0
        if state.bad_epochs >= config["patience"]:
            accelerator.print(f"early stopping: no improvement for {state.bad_epochs} epochs")
            stop = True
        save_state(accelerator, output_dir, state.global_step, config["keep_checkpoints"])

    if ids_file is not None:
        ids_file.close()
    accelerator.end_training()
    return {"global_step": state.global_step, "epoch": state.epoch, "best": state.best}


if __name__ == "__main__":
    try:
        main()
    except ConfigError as error:  # a message for the user instead of a traceback
        print(f"pretrain.py: error: {error}", file=sys.stderr)
        sys.exit(2)
