"""Datasets and the device-resident batch loader.

`load_dataset(name)` returns a `Dataset` (train/test tensors, class count, channels-first input
shape, per-channel mean/std of the train split); `BatchLoader` iterates over a split on the
target device. `describe_data(name)` reports what is on disk (`normlab data info NAME`).
"""

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
