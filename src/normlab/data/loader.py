"""A device-resident batch iterator: the whole dataset lives on the target device.

Why not `torch.utils.data.DataLoader`: for small datasets (MNIST-1D, CIFAR) the per-sample
Python collation dominates a GPU step. Here the data is moved to the device once, a batch is
one index gather, and the index order for an epoch is computed on the CPU and copied to the
device once per epoch, so a training step never waits on the host.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, Literal

import torch

from normlab.data.augment import crop_flip, draw_crop_flip
from normlab.device import resolve_device


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """An independent CPU generator per (seed, epoch): any epoch can be replayed on resume."""
    digest = hashlib.sha256(f"normlab-loader:{seed}:{epoch}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _grouped_batch_count(chunks: list[int], k: int) -> int:
    """How many groups of `k` distinct classes the chunk counts allow, taking the `k` classes
    with most chunks left each time (which is optimal, so the count never depends on luck)."""
    left = sorted(chunks, reverse=True)
    count = 0
    while len(left) >= k and left[k - 1] > 0:
        left = sorted([c - 1 for c in left[:k]] + left[k:], reverse=True)
        count += 1
    return count


class BatchLoader:
    """Iterate over `(x, y)` in batches kept on `device`, normalized, optionally augmented.

    Each batch is `x_b = (aug(x[idx] / s) - mean) / std` with `s = 255` for uint8 input (else
    1), `mean`/`std` per channel (shape `(C,)`, from `Dataset.mean/std`), and `y_b = y[idx]`.
    Iterating runs one epoch from where the loader stands; the next `iter()` continues with
    the next epoch, whose order comes from a fresh generator seeded by `(seed, epoch)`, so no
    `set_epoch` call is needed and `state_dict()` / `load_state_dict()` resume mid-epoch with
    the identical batch sequence.

    Batching:
        random: a permutation of all samples (or their order if `shuffle=False`), cut into
            batches; every sample appears exactly once per epoch (the last partial batch is
            dropped when `drop_last`).
        class_grouped: non-i.i.d. batches of `classes_per_batch` classes x
            `batch_size / classes_per_batch` examples each (Ioffe 2017, Fig. 3: 64 = 4 x 16),
            with each sample used at most once per epoch; examples that cannot fill a group are
            left out. Always shuffled; requires `drop_last=True`.

    Args:
        x: `(N, *sample_shape)` uint8 or floating tensor, channels first.
        y: `(N,)` integer labels.
        batch_size: samples per batch.
        shuffle: random order each epoch (random batching).
        drop_last: drop the final partial batch (default on: a batch of 1 breaks BN).
        seed: seeds every epoch's order and augmentation.
        device: where the data and the batches live (`"cpu"`, `"cuda"`, `"auto"`, ...).
        mean, std: per-channel normalization, `(C,)`; None leaves values unnormalized.
        augment: random crop (zero padding `crop_padding`) + horizontal flip; 4D images only.
        batching: `"random"` or `"class_grouped"`.
        classes_per_batch: classes per batch for `class_grouped`.
        crop_padding: padding in pixels of the random crop.

    Shapes:
        yields `x_b` `(B, *sample_shape)` float32 and `y_b` `(B,)` int64, both on `device`.

    Example:
        >>> ds = load_dataset("mnist1d")
        >>> loader = BatchLoader(ds.train_x, ds.train_y, 64, mean=ds.mean, std=ds.std)
        >>> len(loader), next(iter(loader))[0].shape
        (62, torch.Size([64, 1, 40]))
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        augment: bool = False,
        batching: Literal["random", "class_grouped"] = "random",
        classes_per_batch: int = 4,
        crop_padding: int = 4,
    ) -> None:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(
                f"x and y must be torch tensors, got {type(x).__name__} and "
                f"{type(y).__name__}; use torch.from_numpy(...) for numpy arrays"
            )
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"expected x (N, C, ...) and y (N,) with the same N, got x {tuple(x.shape)} and y {tuple(y.shape)}"
            )
        if y.is_floating_point() or y.is_complex():
            raise ValueError(
                f"y must hold integer class labels, got {y.dtype}; a float label "
                f"would be truncated silently (use y.long() if they are whole)"
            )
        if not (x.dtype == torch.uint8 or x.is_floating_point()):
            raise ValueError(f"x must be uint8 (images) or floating point, got {x.dtype}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batching not in ("random", "class_grouped"):
            raise ValueError(f"batching must be 'random' or 'class_grouped', got {batching!r}")
        if augment and x.ndim != 4:
            raise ValueError(
                f"augment=True needs image data (N, C, H, W), got x of shape "
                f"{tuple(x.shape)}; set augment=False for this dataset"
            )
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.device = self._resolve_device(device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.augment, self.batching = int(seed), augment, batching
        self.classes_per_batch, self.crop_padding = classes_per_batch, crop_padding
        self.num_samples = len(x)
        self._labels_cpu = y.detach().to("cpu", torch.int64)  # for class_grouped plans
        self._len = self._count_batches()
        if self._len == 0:
            raise ValueError(
                f"no batches: {self.num_samples} samples with batch_size "
                f"{batch_size} and drop_last={drop_last} (or too few examples per "
                f"class for class_grouped); lower batch_size"
            )
        # The whole split is moved once; uint8 stays uint8 (4x less device memory than float).
        self._x = x.to(self.device, torch.float32 if x.dtype == torch.float64 else x.dtype)
        self._y = y.to(self.device, torch.int64)
        # x_b = (x / s - mean) / std folded into one multiply-add: x * scale + shift, with
        # scale = 1 / (s * std) and shift = -mean / std, each (1, C, 1, ...) on the device.
        pixel = 255.0 if x.dtype == torch.uint8 else 1.0
        mean_t, std_t = self._check_norm(mean, std, x)
        if mean_t is None:
            self._scale, self._shift = (1.0 / pixel if pixel != 1.0 else None), None
        else:
            self._scale, self._shift = 1.0 / (pixel * std_t), -mean_t / std_t
        self._epoch, self._batch = 0, 0
        self._plan_epoch: int | None = None
        self._plan: tuple[torch.Tensor, torch.Tensor | None] | None = None

    # -- construction helpers -----------------------------------------------------------------
    @staticmethod
    def _resolve_device(device: str | torch.device) -> torch.device:
        try:
            return resolve_device(device)
        except ValueError as exc:
            raise ValueError(f"device: {exc}") from None

    def _check_norm(self, mean, std, x):
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (per channel) or neither")
        if mean is None:
            return None, None
        channels = x.shape[1]
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.numel() != channels or std.numel() != channels:
            raise ValueError(
                f"mean and std need one value per channel ({channels}), got {mean.numel()} and {std.numel()}"
            )
        if not bool((std > 0).all()):
            raise ValueError(f"std must be > 0 in every channel, got {std.tolist()}")
        view = (1, channels) + (1,) * (x.ndim - 2)  # broadcast over (B, C, ...)
        return mean.view(view).to(self.device), std.view(view).to(self.device)

    def _count_batches(self) -> int:
        if self.batching == "random":
            full, rest = divmod(self.num_samples, self.batch_size)
            return full + (1 if rest and not self.drop_last else 0)
        k = self.classes_per_batch
        if not self.drop_last:
            raise ValueError(
                "class_grouped batching leaves out examples that cannot fill a group, so it needs drop_last=True"
            )
        if k < 1 or self.batch_size % k:
            raise ValueError(
                f"class_grouped needs batch_size divisible by classes_per_batch, got {self.batch_size} and {k}"
            )
        if len(self._labels_cpu) and int(self._labels_cpu.min()) < 0:
            raise ValueError(f"class_grouped needs class labels >= 0, got {int(self._labels_cpu.min())}")
        counts = torch.bincount(self._labels_cpu)
        present = int((counts > 0).sum())
        if k > present:
            raise ValueError(f"classes_per_batch={k} but the labels have only {present} classes")
        per_class = self.batch_size // k
        return _grouped_batch_count([int(c) // per_class for c in counts], k)

    # -- the epoch plan -----------------------------------------------------------------------
    def _grouped_order(self, gen: torch.Generator) -> torch.Tensor:
        """`(len, batch_size)` sample indices, each row from `classes_per_batch` classes."""
        k, per_class = self.classes_per_batch, self.batch_size // self.classes_per_batch
        labels = self._labels_cpu
        num_classes = int(labels.max()) + 1
        chunks, left = [], torch.zeros(num_classes)
        for c in range(num_classes):
            members = torch.nonzero(labels == c).flatten()
            members = members[torch.randperm(len(members), generator=gen)]
            n_chunks = len(members) // per_class
            chunks.append(members[: n_chunks * per_class].view(n_chunks, per_class))
            left[c] = n_chunks
        used = [0] * num_classes
        rows = []
        for _ in range(self._len):
            # k classes with most chunks left; jitter < 0.5 only breaks ties, at random.
            picked = torch.topk(left + 0.5 * torch.rand(num_classes, generator=gen), k).indices
            rows.append(torch.cat([chunks[c][used[c]] for c in picked.tolist()]))
            for c in picked.tolist():
                used[c] += 1
                left[c] -= 1
        order = torch.stack(rows)  # (len, B), classes in contiguous runs of per_class
        # Shuffle batch order, and positions within each batch so that any sub-batch (ghost
        # batch norm) still sees several classes.
        order = order[torch.randperm(len(order), generator=gen)]
        return order[:, torch.randperm(self.batch_size, generator=gen)]

    def _epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Index order (and crop/flip parameters) for `epoch`, on the device; cached."""
        if self._plan_epoch != epoch:
            gen = _epoch_generator(self.seed, epoch)
            if self.batching == "class_grouped":
                order = self._grouped_order(gen).reshape(-1)
            elif self.shuffle:
                order = torch.randperm(self.num_samples, generator=gen)
            else:
                order = torch.arange(self.num_samples)
            params = draw_crop_flip(len(order), self.crop_padding, gen) if self.augment else None
            # One host->device copy per epoch; per step only device-side slicing follows.
            self._plan = (order.to(self.device), None if params is None else params.to(self.device))
            self._plan_epoch = epoch
        return self._plan

    # -- iteration ----------------------------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch."""
        return self._len

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to (0-based)."""
        return self._epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx, params in self.index_batches():
            yield self.make_batch(idx, params)

    def index_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Iterate like the loader, yielding what each batch is made from instead of the batch:
        `(idx, params)`, the sample indices `(B,)` int64 and the crop/flip parameters `(B, 3)`
        (None without augmentation), both device views. `make_batch(idx, params)` gives the
        batch `iter()` would have yielded. A CUDA-graphed step captures `make_batch` too, so
        per step only these two small tensors are copied in."""
        epoch, start = self._epoch, self._batch
        order, params = self._epoch_plan(epoch)
        for b in range(start, self._len):
            # Advance the position before yielding, so a state_dict taken while the batch is
            # being used resumes right after it (the last batch rolls over to the next epoch).
            self._epoch, self._batch = (epoch + 1, 0) if b + 1 == self._len else (epoch, b + 1)
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, len(order))
            yield order[lo:hi], None if params is None else params[lo:hi]

    def make_batch(self, idx: torch.Tensor, params: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalized (and augmented) batch of samples `idx` (see `index_batches`)."""
        x = self._x[idx].float()  # (B, *sample_shape); gather in the stored dtype, then convert
        if params is not None:
            # zero padding in stored units is black (0/255), as torchvision's RandomCrop
            x = crop_flip(x, params, self.crop_padding)
        if self._shift is not None:
            x = torch.addcmul(self._shift, x, self._scale)  # one pass: x * scale + shift
        elif self._scale is not None:
            x.mul_(self._scale)
        return x, self._y[idx]

    # -- resume -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Position (epoch, batch) plus the settings the order depends on (checked on load)."""
        return {"epoch": self._epoch, "batch": self._batch, **self._identity()}

    def _identity(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "batching": self.batching,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "classes_per_batch": self.classes_per_batch,
            "augment": self.augment,
            "crop_padding": self.crop_padding,
        }

    # Settings added after states were first saved, with the value every older state implied.
    _IDENTITY_DEFAULTS = {"crop_padding": 4}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`: the following batches equal the uninterrupted run's."""
        saved = {**self._IDENTITY_DEFAULTS, **state}
        mismatched = {k: (saved.get(k), v) for k, v in self._identity().items() if saved.get(k) != v}
        if mismatched:
            detail = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in mismatched.items())
            raise ValueError(
                f"loader state does not match this loader ({detail}); build the "
                f"loader with the saved settings to resume"
            )
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if epoch < 0 or not 0 <= batch < self._len:
            raise ValueError(
                f"loader state has epoch {epoch}, batch {batch}; expected epoch >= 0 and 0 <= batch < {self._len}"
            )
        self._epoch, self._batch = epoch, batch
