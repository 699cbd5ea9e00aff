from normlab.train import metrics as M


def test_every_name_is_documented_in_the_table():
    names = [v for k, v in vars(M).items() if k.isupper() and isinstance(v, str)]
    assert len(names) == 19
    for name in names:
        assert f"| {name} " in M.__doc__, f"{name} missing from the metrics table"
    for prefix in ("act/<layer>/mean", "grad_norm/<param>", "weight_norm/<param>", "ics/<k>/l2", "ics/<k>/cos"):
        assert prefix in M.__doc__


def test_probe_keys_round_trip_through_parse_key():
    assert M.parse_key(M.act_unit_key("blocks.1.act", 7, 85)) == {
        "kind": "act",
        "layer": "blocks.1.act",
        "unit": 7,
        "stat": "p85",
    }
    assert M.parse_key(M.act_key("stem.2", "std"))["stat"] == "std"
    assert M.parse_key(M.weight_norm_key("head.bias")) == {
        "kind": "weight_norm",
        "layer": "head.bias",
        "unit": None,
        "stat": None,
    }
    assert M.parse_key(M.TEST_ACC)["kind"] == "test_acc"
