"""Building a run: from a RunConfig and a dataset to the pieces the training loop uses.

`build(config, dataset, ctx)` seeds, builds the model (its norms, its trainable subset, DDP),
*its own* optimizer and schedule, and the loaders (train minus a held-out slice, test, held
out). Nothing here trains; `normlab.train.engine.fit` resumes and runs the loop on a `Built`.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from normlab.data import BatchLoader, Dataset, input_stats, load_dataset
from normlab.device import resolve_device
from normlab.layers import norm_kwargs
from normlab.models import build_model
from normlab.train.bn_only import freeze_to, trainable_subset
from normlab.train.config import RunConfig
from normlab.train.optim import build_optimizer, check_optimizer_owns_model, param_groups
from normlab.train.parallel import ProcessContext, prepare_model, wrap_ddp
from normlab.train.schedule import build_scheduler

HOLDOUT_SEED = 20150211
"""Fixed seed of the held-out slice: every run of a study holds out the same examples."""
EVAL_BATCH_SIZE = 1000
"""Batch size of eval-mode evaluation (no effect on the numbers, only on speed)."""


@dataclass
class Built:
    """The pieces of one run, as `build` made them.

    model: the network (parameters, state_dict, probes); train_model: what the step calls
    (the model, or DDP / torch.compile around it). optimizer and scheduler step `model`'s
    trainable parameters. loader yields global training batches; hold_loader is None without
    a held-out slice. total_steps: optimizer steps of the whole run (epochs, or max_steps).
    num_trainable: scalars the optimizer may change (a partly trained tensor counts its
    trained elements only).
    """

    device: torch.device
    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: BatchLoader
    test_loader: BatchLoader
    hold_loader: BatchLoader | None
    steps_per_epoch: int
    total_steps: int
    num_trainable: int
    autocast: Callable[[], AbstractContextManager]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_device(name: str, ctx: ProcessContext) -> torch.device:
    """The device a run's `device` setting names, here; a bare "cuda" in a data-parallel
    process is that process's own GPU (LOCAL_RANK, as torchrun sets it)."""
    local_rank = None
    if ctx.distributed and torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", ctx.rank % torch.cuda.device_count()))
    try:
        return resolve_device(name, local_rank=local_rank)
    except ValueError as err:
        raise ValueError(f"device: {err}") from None


def check_device_options(config: RunConfig, device: torch.device) -> None:
    """ValueError unless the config's GPU-only options (bf16, compile, cuda_graph) have a GPU."""
    if device.type == "cuda":
        return
    gpu_only = {  # option -> (on?, how to turn it off)
        "precision='bf16' (autocast)": (config.precision == "bf16", "precision='fp32'"),
        "compile=true (torch.compile)": (config.compile, "compile=false"),
        "cuda_graph=true (replay each step as a CUDA graph)": (config.cuda_graph, "cuda_graph=false"),
    }
    asked = {name: off for name, (on, off) in gpu_only.items() if on}
    if asked:
        verb = "is a GPU option" if len(asked) == 1 else "are GPU options"
        raise ValueError(
            f"{' and '.join(asked)} {verb}, but the run is on {device}; set device='cuda' on a "
            f"machine with a GPU, or set {', '.join(asked.values())}"
        )


def check_runnable_here(config: RunConfig) -> None:
    """ValueError unless this machine can run `config`: its device exists here and its
    GPU-only options are on a GPU. The experiment runner calls it before writing anything."""
    check_device_options(config, run_device(config.device, ProcessContext()))


def check_execution(config: RunConfig, device: torch.device, ctx: ProcessContext) -> None:
    """GPU-only options on a GPU, and as many processes as the config says."""
    check_device_options(config, device)
    if config.nproc != ctx.world_size:
        raise ValueError(
            f"nproc={config.nproc} but this process group has {ctx.world_size} process(es); "
            f"launch nproc > 1 runs with normlab.train.distributed, or set nproc={ctx.world_size}"
        )


def model_norm_kwargs(config: RunConfig) -> dict[str, Any]:
    """norm_kwargs plus `impl=config.bn_impl` for norms that take an implementation."""
    kwargs = dict(config.norm_kwargs)
    if config.bn_impl != "auto" and "impl" in norm_kwargs(config.norm):
        kwargs.setdefault("impl", config.bn_impl)
    return kwargs


def split_holdout(n: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held out) of an n-sample train split; the same for every run.

    The held-out indices stay in random order, so its fixed (unshuffled) batches are i.i.d.
    samples even when a split is stored sorted by class.
    """
    k = int(round(n * fraction))
    if fraction > 0 and k == 0:
        k = 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return perm[k:].sort().values, perm[:k]


def check_dataset(config: RunConfig, dataset: Dataset) -> None:
    """ValueError when a dataset passed in is not the one the config (and so the run id) names."""
    if getattr(dataset, "name", config.dataset) != config.dataset:
        raise ValueError(
            f"the dataset passed to fit is {dataset.name!r} but config.dataset is "
            f"{config.dataset!r}; pass the config's dataset (the run id names it) or omit dataset="
        )


def config_model(config: RunConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model `config` describes for inputs of `input_shape` (C, L) / (C, H, W), drawn from
    the current RNG on the current default device (the engine seeds first; the preflight
    builds it on the meta device)."""
    return build_model(
        config.model,
        input_shape,
        num_classes,
        norm=config.norm,
        norm_kwargs=model_norm_kwargs(config),
        norm_position=config.norm_position,
        activation=config.activation,
        hidden=config.hidden,
        init_scale=config.init_scale,
    )


def build_model_for(
    config: RunConfig, dataset: Dataset, ctx: ProcessContext, device: torch.device
) -> tuple[nn.Module, torch.optim.Optimizer, int]:
    """The model on `device` (SyncBatchNorm when asked), frozen to `config.trainable`, and
    *its own* optimizer; returns (model, optimizer, trainable scalar count). Seeds first, so
    the initial weights depend on `config.seed` alone."""
    seed_everything(config.seed)
    model = config_model(config, dataset.input_shape, dataset.num_classes)
    model = prepare_model(model, ctx, config.sync_bn).to(device)
    groups = None
    num_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    subset = trainable_subset(model, config.trainable, config.seed)  # None: "all"
    if subset is not None:
        freeze_to(model, subset)
        groups = subset_groups(model, subset.masks, config)
        num_trainable = subset.count
    optimizer = build_optimizer(model, config, groups=groups)
    check_optimizer_owns_model(model, optimizer)
    return model, optimizer, num_trainable


def subset_groups(model: nn.Module, masks: dict[str, torch.Tensor | None], config: RunConfig) -> list[dict]:
    """Optimizer groups of a frozen model: the usual weight-decay split (`param_groups`) over
    the whole trained tensors, and the partly trained ones (a mask) without weight decay, so
    that no optimizer term moves a frozen element."""
    partly = {id(p) for n, p in model.named_parameters() if masks.get(n) is not None}
    o = config.optim
    groups = [
        {**g, "params": [p for p in g["params"] if id(p) not in partly]}
        for g in param_groups(model, o.weight_decay, o.decay_norm_and_bias)
    ]
    groups.append({"params": [p for p in model.parameters() if id(p) in partly], "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def build(config: RunConfig, dataset: Dataset | None, ctx: ProcessContext) -> Built:
    """Every piece of the run `config` on this process (see `Built`); trains nothing.
    `dataset` None loads `config.dataset`, once the config is known to run here."""
    device = run_device(config.device, ctx)
    check_execution(config, device, ctx)
    ctx.per_process(config.batch_size)  # the global batch must split over the processes
    if dataset is None:
        dataset = load_dataset(config.dataset, root=config.data_root)
    check_dataset(config, dataset)

    model, optimizer, num_trainable = build_model_for(config, dataset, ctx, device)
    train_model = wrap_ddp(model, ctx, device)
    if config.compile:
        train_model = torch.compile(train_model)

    # train minus a held-out slice, test, held out
    train_idx, hold_idx = split_holdout(len(dataset.train_y), config.holdout_fraction)
    mean, std = input_stats(dataset, config.input_norm)
    norm_stats = dict(device=device, mean=mean, std=std)
    loader = BatchLoader(
        dataset.train_x[train_idx],
        dataset.train_y[train_idx],
        config.batch_size,
        shuffle=True,
        drop_last=True,
        seed=config.seed,
        augment=config.augment,
        batching=config.batching,
        classes_per_batch=config.classes_per_batch,
        **norm_stats,
    )
    steps_per_epoch = len(loader)  # >= 1: the loader refuses a batch larger than the split
    test_loader = BatchLoader(
        dataset.test_x, dataset.test_y, EVAL_BATCH_SIZE, shuffle=False, drop_last=False, **norm_stats
    )
    # train-mode accuracy needs training-sized batches (BN uses their statistics); a slice
    # smaller than one batch is one batch, cut to a multiple of the process count
    hold_batch = min(config.batch_size, len(hold_idx) - len(hold_idx) % ctx.world_size)
    hold_loader = None
    if hold_batch > 0:
        hold_loader = BatchLoader(
            dataset.train_x[hold_idx],
            dataset.train_y[hold_idx],
            hold_batch,
            shuffle=False,
            drop_last=True,
            **norm_stats,
        )

    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    scheduler = build_scheduler(optimizer, config.schedule, total_steps, steps_per_epoch)
    return Built(
        device,
        model,
        train_model,
        optimizer,
        scheduler,
        loader,
        test_loader,
        hold_loader,
        steps_per_epoch,
        total_steps,
        num_trainable,
        autocast_for(config),
    )


def autocast_for(config: RunConfig) -> Callable[[], AbstractContextManager]:
    """A fresh autocast context per use: bf16 on CUDA, or nothing (fp32)."""
    if config.precision != "bf16":
        return contextlib.nullcontext
    # autocast's weight-cast cache must be off inside a CUDA graph capture (torch's AMP notes)
    return lambda: torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not config.cuda_graph)
