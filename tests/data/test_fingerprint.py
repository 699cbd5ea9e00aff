import dataclasses

from normlab.data import load_dataset
from normlab.data.fingerprint import fingerprint


def test_equal_data_equal_fingerprint_and_one_changed_value_changes_it():
    data = load_dataset("synthetic", shape=(1, 8), num_classes=3, train_size=60, test_size=20)
    again = load_dataset("synthetic", shape=(1, 8), num_classes=3, train_size=60, test_size=20)
    assert fingerprint(data) == fingerprint(again) and fingerprint(data).startswith("sha256:")
    damaged = data.test_x.clone()
    damaged[3, 0, 5] += 1e-6
    assert fingerprint(dataclasses.replace(data, test_x=damaged)) != fingerprint(data)
    relabeled = data.train_y.clone()
    relabeled[0] = (relabeled[0] + 1) % 3
    assert fingerprint(dataclasses.replace(data, train_y=relabeled)) != fingerprint(data)
