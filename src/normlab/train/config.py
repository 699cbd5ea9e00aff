"""The run config: everything that determines one training run, typed and validated.

A run is identified by the hash of its resolved config (seed included), so every field that
changes the numbers lives here, and nothing else does. The keys users type most are short and
top-level (`dataset`, `model`, `norm`, `batch_size`, `epochs`, `seed`, `lr`, `optimizer`,
`device`); the rest are grouped in nested sections. Defaults are the seed notebook's setting
(its MLP, Adam, lr 1e-3, batch size 64) on the embedded MNIST-1D dataset.

This module lives in `train` because the engine consumes it; `normlab.experiments.config`
re-exports it and adds experiment files, sweeps and overrides on top.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from normlab._deprecated import warn_renamed


class _Section(BaseModel):
    # forbid: an unknown key is an error that names the key, never silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class OptimConfig(_Section):
    """Optimizer details beyond `optimizer` and `lr` (which are top-level)."""

    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum (SGD only)")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD only)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam/AdamW betas")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 (SGD, Adam) or decoupled (AdamW)")
    decay_norm_and_bias: bool = Field(False, description="apply weight decay to norm gamma/beta and biases too")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(None, gt=0.0, description="clip total grad norm to this")


class ScheduleConfig(_Section):
    """Learning-rate schedule, stepped once per optimizer step."""

    name: Literal["constant", "cosine", "warmup_linear", "onecycle", "exponential"] = "constant"
    warmup_steps: int = Field(0, ge=0, description="warm-up steps: warmup_linear, cosine, onecycle")
    final_lr_fraction: float = Field(0.0, ge=0.0, le=1.0, description="lr at the end / lr")
    # exponential: lr multiplied by this factor every epoch (the learning-rate range test).
    gamma_per_epoch: float = Field(10.0, gt=0.0)

    @model_validator(mode="after")
    def _warmup_needs_a_schedule_that_uses_it(self) -> ScheduleConfig:
        # constant and exponential ignore warmup_steps: refuse it rather than drop it silently.
        if self.warmup_steps and self.name in ("constant", "exponential"):
            raise ValueError(
                f"warmup_steps={self.warmup_steps} has no effect with schedule {self.name!r}; "
                f"use schedule warmup_linear, cosine or onecycle, or set warmup_steps=0"
            )
        return self


class ProbeConfig(_Section):
    """Optional measurements during training; each costs nothing when off."""

    activations: bool = Field(False, description="pre-activation mean/std/percentiles per layer")
    grad_norms: bool = Field(False, description="per-layer gradient norms")
    weight_norms: bool = Field(False, description="per-layer weight norms")
    step_time: bool = Field(True, description="wall time per optimizer step (ms)")
    every_steps: int = Field(50, ge=1, description="probe period in optimizer steps")
    units: int = Field(3, ge=1, description="units per layer tracked for percentiles")
    # Measured on copies of the model and the optimizer: training is bit-identical with it on
    # or off (normlab.train.ics_probe). E > 0: at step 0, every E epochs and at the last epoch.
    ics_every_epochs: int = Field(
        0, ge=0, description="ICS and loss-landscape probe every N epochs, at init and at the end (0: off)"
    )


class RunConfig(_Section):
    """One training run. Validated on construction; `run_id` hashes the resolved values."""

    # --- what to train on -------------------------------------------------------------------
    dataset: str = Field("mnist1d", description="a registered dataset name")
    data_root: str | None = Field(None, description="data directory (default $NORMLAB_DATA)")
    augment: bool = Field(False, description="random crop + flip on image datasets")
    batching: Literal["random", "class_grouped"] = Field(
        "random", description="class_grouped: non-i.i.d. batches of few classes (Ioffe 2017)"
    )
    classes_per_batch: int = Field(4, ge=1, description="classes per batch (class_grouped)")
    # per-channel input normalization (normlab.data.input_stats): the training split's mean and
    # std, or the seed notebook's fixed 0.5 and 0.5
    input_norm: Literal["train_split", "half"] = Field(
        "train_split", description="train_split (its per-channel mean/std) or half (mean 0.5, std 0.5)"
    )
    holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="train slice held out for the train/eval-mode gap")
    # --- the model ----------------------------------------------------------------------------
    model: str = Field("mlp", description="a registered model name")
    hidden: list[int] | None = Field(None, description="hidden widths (MLP); None: model default")
    norm: str = Field("batch", description="a registered norm name (see create_norm)")
    norm_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra norm arguments")
    norm_position: Literal["before_act", "after_act"] = "before_act"
    activation: Literal["relu", "sigmoid", "gelu"] = "relu"
    init_scale: float = Field(1.0, gt=0.0, description="multiply initial weights by this")
    bn_impl: Literal["auto", "reference", "torch", "triton"] = Field(
        "auto", description="which implementation computes batch norm (normlab.layers.implementations)"
    )
    # --- optimization -------------------------------------------------------------------------
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0, description="peak learning rate")
    batch_size: int = Field(64, ge=1, description="global batch size (samples per step)")
    epochs: int = Field(10, ge=1, description="passes over the training split")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    # which parameters train; the others stay bit-identical to their initial values
    # (normlab.train.bn_only). bn_only: the batch norms' gamma and beta only (Frankle et al.
    # 2021, "Training BatchNorm and Only BatchNorm"); random_matched: as many scalars drawn at
    # random from the other parameters (the control; drawn with a generator seeded by `seed`).
    trainable: Literal["all", "bn_only", "random_matched"] = Field(
        "all", description="all, bn_only (BN gamma/beta) or random_matched (as many random scalars)"
    )
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    # --- execution ----------------------------------------------------------------------------
    seed: int = Field(0, ge=0)
    device: str = Field("cpu", description="cpu, cuda, cuda:N or auto")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: autocast (GPU)")
    compile: bool = Field(False, description="torch.compile the model (GPU)")
    cuda_graph: bool = Field(False, description="replay each training step as one CUDA graph (GPU; see train.graphed)")
    nproc: int = Field(1, ge=1, description="data-parallel processes (torchrun)")
    sync_bn: bool = Field(False, description="SyncBatchNorm across processes (nproc > 1)")
    eval_every_epochs: int = Field(1, ge=1)
    checkpoint_every_epochs: int = Field(1, ge=0, description="0: no checkpoints")
    probes: ProbeConfig = Field(default_factory=ProbeConfig)

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, values: Any) -> Any:
        """Accept a key's old name (RENAMED_KEYS), with a DeprecationWarning."""
        if isinstance(values, dict) and any(old in values for old in RENAMED_KEYS):
            values = dict(values)
            for old, new in RENAMED_KEYS.items():
                if old in values:
                    warn_renamed(f"config key `{old}`", f"`{new}`", stacklevel=2)
                    values.setdefault(new, values.pop(old))
        return values

    @field_validator("dataset", "model", "norm")
    @classmethod
    def _lowercase(cls, value: str) -> str:
        return value.strip().lower()

    @model_validator(mode="after")
    def _check_combinations(self) -> RunConfig:
        if self.hidden is not None and any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {self.hidden}")
        if self.sync_bn and self.nproc == 1:
            raise ValueError("sync_bn=true needs nproc > 1 (it synchronizes across processes)")
        if self.cuda_graph:
            self._check_cuda_graph()
        if self.probes.ics_every_epochs and self.nproc > 1:
            raise ValueError(
                f"probes.ics_every_epochs={self.probes.ics_every_epochs} measures one process's "
                f"model, but nproc={self.nproc}; set nproc=1 or probes.ics_every_epochs=0"
            )
        return self

    def _check_cuda_graph(self) -> None:
        """cuda_graph replays one captured step: what changes per step must live on the device."""
        # compile=true is allowed: Inductor's kernels (compiled during the eager warm-up steps)
        # are captured like any others, and fusing the step's ~40 small kernels shortens the graph
        clashes = []
        if self.nproc > 1:
            clashes.append(f"nproc={self.nproc} (DDP's gradient buckets are not captured)")
        if self.probes.activations or self.probes.grad_norms:
            clashes.append("probes.activations/grad_norms (their hooks run on the host mid-step)")
        if self.probes.ics_every_epochs:
            clashes.append(
                "probes.ics_every_epochs (its trial steps copy the optimizer state the captured step updates in place)"
            )
        if clashes:
            raise ValueError(
                "cuda_graph=true cannot be combined with "
                + "; ".join(clashes)
                + "; turn those off or set cuda_graph=false"
            )

    def resolved(self) -> dict[str, Any]:
        """Every field with its value, JSON-ready (what is stored)."""
        return self.model_dump(mode="json")

    @property
    def run_id(self) -> str:
        """Stable 16-hex-digit id: sha256 of the resolved config as canonical JSON, without
        the fields of HASHED_WHEN_SET that hold their default (so adding such a field kept
        every existing run's id)."""
        hashed = self.resolved()
        for dotted, default in HASHED_WHEN_SET.items():
            *path, key = dotted.split(".")
            section = hashed
            for part in path:
                section = section[part]
            if section[key] == default:
                del section[key]
        hashed = {HASHED_AS.get(k, k): v for k, v in hashed.items()}
        return hashlib.sha256(canonical_json(hashed).encode()).hexdigest()[:16]


HASHED_WHEN_SET = {"trainable": "all", "input_norm": "train_split", "probes.ics_every_epochs": 0}
"""Fields added after runs were stored ("section.field" for a nested one), with the default
that leaves them out of the run id."""

RENAMED_KEYS = {"bn_backend": "bn_impl"}
"""Old key -> its new name. The old one is still accepted (configs, overrides, stored runs)."""

HASHED_AS = {new: old for old, new in RENAMED_KEYS.items()}
"""A renamed field enters the run id under its old name, so every stored run keeps its id."""


def canonical_json(values: dict[str, Any]) -> str:
    """One text per config: keys sorted, no spaces (what run ids hash and the store keeps)."""
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def with_current_keys(values: dict[str, Any]) -> dict[str, Any]:
    """A resolved config (a stored run's, say) with renamed keys under their current names,
    so runs stored before and after a rename read alike."""
    return {RENAMED_KEYS.get(k, k): v for k, v in values.items()}
