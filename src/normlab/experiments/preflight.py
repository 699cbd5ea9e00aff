"""What can be checked about a sweep's runs before anything is written.

`check_runs` loads each dataset the runs ask for (once per dataset and root), then for every
distinct setting checks what would otherwise fail mid-run, after the store recorded it:

- the data: the held-out slice leaves training data, a batch fits in the training split, the
  class-grouped batching is possible (the engine's own split and `BatchLoader` checks);
- the model: it builds with its norm arguments (on torch's `meta` device: no memory used),
  and its parameters, gradients and optimizer state fit in this machine's memory.

It returns each run's data fingerprint (`normlab.data.fingerprint`), which the store keeps.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from normlab.experiments.errors import ConfigError, ResourceError

BYTES_PER_PARAM = 4 * 4
"""float32 weights + gradients + two optimizer moments (Adam); activations come on top."""


def memory_bytes(device: str) -> int | None:
    """Total memory of the device a run trains on (None when unknown)."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            return None
        index = int(device.split(":")[1]) if ":" in device else 0
        return torch.cuda.get_device_properties(index).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_batches(config: Any, data: Any) -> None:
    from normlab.data import BatchLoader
    from normlab.train.engine import split_holdout

    train_idx, _ = split_holdout(len(data.train_y), config.holdout_fraction)
    if len(train_idx) == 0:
        raise ConfigError(
            f"`holdout_fraction`: {config.holdout_fraction} holds out all "
            f"{len(data.train_y)} training examples of {config.dataset!r}; lower it"
        )
    try:
        BatchLoader(
            data.train_x[train_idx],
            data.train_y[train_idx],
            config.batch_size,
            shuffle=True,
            drop_last=True,
            seed=config.seed,
            augment=config.augment,
            batching=config.batching,
            classes_per_batch=config.classes_per_batch,
            device="cpu",
            mean=data.mean,
            std=data.std,
        )
    except ValueError as err:
        raise ConfigError(
            f"{config.dataset!r} with batch_size={config.batch_size}, "
            f"holdout_fraction={config.holdout_fraction}, batching={config.batching!r}: "
            f"{err}"
        ) from None


def _check_model(config: Any, data: Any) -> None:
    import torch

    from normlab.train.build import config_model

    try:
        with torch.device("meta"):  # shapes only: a huge model costs nothing here
            model = config_model(config, data.input_shape, data.num_classes)
    except (ValueError, TypeError, RuntimeError) as err:
        raise ConfigError(
            f"model {config.model!r} with norm {config.norm!r} and norm_kwargs "
            f"{config.norm_kwargs}: cannot be built ({' '.join(str(err).split())})"
        ) from None
    params = sum(p.numel() for p in model.parameters())
    need, have = params * BYTES_PER_PARAM, memory_bytes(config.device)
    if have is not None and need > have:
        raise ResourceError(
            f"model {config.model!r} (hidden={config.hidden}) has {params:,} parameters, which "
            f"need at least {need / 2**30:.1f} GiB to train (weights, gradients, optimizer state) "
            f"but {config.device} has {have / 2**30:.1f} GiB; choose smaller `hidden` widths"
        )


def check_runs(configs: Sequence[Any], *, data_only: bool = False) -> dict[str, str]:
    """ConfigError / ResourceError (naming the run) for the first run that cannot train;
    else run_id -> the fingerprint of the data it will train on. `data_only`: load and
    fingerprint the data, skip the batch and model checks (and skip data that is missing)."""
    from normlab.data import load_dataset
    from normlab.data.fingerprint import fingerprint

    datasets: dict[tuple, Any] = {}
    prints: dict[tuple, str] = {}
    checked: set[tuple] = set()
    out = {}
    for config in configs:
        source = (config.dataset, config.data_root)
        if source not in datasets:
            try:
                datasets[source] = load_dataset(config.dataset, root=config.data_root)
            except ValueError as err:  # DatasetError: missing or damaged files, said how to fix
                if data_only:
                    datasets[source] = None
                    continue
                raise ConfigError(f"run {config.run_id}: {err}") from None
            prints[source] = fingerprint(datasets[source])
        data = datasets[source]
        if data is None:
            continue
        if data_only:
            out[config.run_id] = prints[source]
            continue
        batches = (
            source,
            config.holdout_fraction,
            config.batch_size,
            config.batching,
            config.classes_per_batch,
            config.augment,
        )
        model = (
            source,
            config.model,
            config.norm,
            repr(config.norm_kwargs),
            config.norm_position,
            config.activation,
            repr(config.hidden),
            config.init_scale,
            config.bn_impl,
            config.device,
        )
        try:
            if batches not in checked:
                _check_batches(config, data)
                checked.add(batches)
            if model not in checked:
                _check_model(config, data)
                checked.add(model)
        except (ConfigError, ResourceError) as err:
            raise type(err)(f"run {config.run_id}: {err}") from None
        out[config.run_id] = prints[source]
    return out


__all__ = ["check_runs", "memory_bytes"]
