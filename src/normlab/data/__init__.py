"""Datasets and the device-resident batch loader.

`load_dataset(name)` returns a `Dataset` (train/test tensors, class count, channels-first input
shape, per-channel mean/std of the train split); `BatchLoader` iterates over a split on the
target device. `describe_data(name)` reports what is on disk (`normlab data info NAME`).

Every name loads its module (most load torch) on first use, so importing a torch-free module
of this package (`normlab.data.storage`, `normlab.data.cifar`'s file specs) stays cheap.
"""

from typing import TYPE_CHECKING

from normlab._lazy import lazy_exports

_LAZY = {
    "crop_flip": "normlab.data.augment",
    "draw_crop_flip": "normlab.data.augment",
    "INPUT_NORMS": "normlab.data.dataset",
    "Dataset": "normlab.data.dataset",
    "DatasetError": "normlab.data.dataset",
    "channel_stats": "normlab.data.dataset",
    "input_stats": "normlab.data.dataset",
    "BatchLoader": "normlab.data.loader",
    "dataset_names": "normlab.data.registry",
    "describe_data": "normlab.data.registry",
    "load_dataset": "normlab.data.registry",
    "data_root": "normlab.data.storage",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

if TYPE_CHECKING:  # what type checkers and IDEs see; _LAZY is what runs
    from normlab.data.augment import crop_flip, draw_crop_flip
    from normlab.data.dataset import INPUT_NORMS, Dataset, DatasetError, channel_stats, input_stats
    from normlab.data.loader import BatchLoader
    from normlab.data.registry import dataset_names, describe_data, load_dataset
    from normlab.data.storage import data_root

__all__ = [
    "INPUT_NORMS",
    "BatchLoader",
    "Dataset",
    "DatasetError",
    "channel_stats",
    "crop_flip",
    "data_root",
    "dataset_names",
    "describe_data",
    "draw_crop_flip",
    "input_stats",
    "load_dataset",
]
