"""run_study end to end with a stand-in engine (no training): both stages of every part, the
selection from held-out data, recalibration skipped without checkpoints, the report; a rerun
trains nothing; missing data is one error."""

import pytest

from normlab.experiments import runner
from normlab.experiments.errors import ConfigError, StoreError
from normlab.study import run as study_run
from normlab.study.report import stored_study, write_study_report
from study.fakes import fake_fit


@pytest.fixture
def local_fake(monkeypatch):
    real = runner.run_experiment
    trained = []

    def counting(config, **kw):
        trained.append(config.run_id)
        return fake_fit(config, **kw)

    def run_experiment(experiment, out, **kw):
        kw.update(executor="local", workers=1)
        return real(experiment, out, run_fn=counting, progress=False, **kw)

    monkeypatch.setattr(runner, "run_experiment", run_experiment)
    return trained


def test_run_study_runs_both_stages_and_writes_the_report(tmp_path, local_fake):
    report_dir = study_run.run_study(quick=True, out=tmp_path)
    assert report_dir == tmp_path / "reports" / "study-quick"
    md = (report_dir / "report.md").read_text()
    for title in (
        "1. With vs without",
        "2. Batch size",
        "3. Learning rate",
        "4. Costs",
        "5. Internal",
        "6. Non-i.i.d.",
    ):
        assert f"## {title}" in md
    assert "BN makes the network reach a higher test accuracy" in md
    assert "| variant | 1e-03 | 3e-03 | 1e-02 | selected lr | at edge |" in md
    assert "| batch | 67.6 | 70.0 | 67.4 | 3e-03 |  |" in md  # the held-out peak is at 3e-3
    assert (report_dir / "report.html").stat().st_size > 10_000
    # every claim has its literature line, with whether this run agrees
    claims = sum(
        line.startswith(("- **SUPPORTED**", "- **NOT SUPPORTED**", "- **INCONCLUSIVE**")) for line in md.splitlines()
    )
    assert claims > 15 and md.count("  *Literature:* ") == claims
    assert stored_study(tmp_path, "study-quick") and not stored_study(tmp_path, "study")
    first = len(local_fake)
    study_run.run_study(quick=True, out=tmp_path)
    assert len(local_fake) == first  # a rerun trains nothing


def test_default_tier_lists_the_full_tier_and_full_reuses_its_runs(tmp_path, local_fake, monkeypatch):
    from normlab.study import part8_ics
    from normlab.study.registry import read_spec

    monkeypatch.setattr(part8_ics, "TIER", "full", raising=False)  # stand-in for a full-tier part
    md = (study_run.run_study(quick=True, out=tmp_path) / "report.md").read_text()
    title = read_spec(part8_ics)["title"]
    assert f"## {title}" not in md
    assert "## Not run in this tier" in md and title in md and "normlab study --tier full" in md
    assert "`normlab report study-quick-full`" in md
    default_runs = set(local_fake)
    full_dir = study_run.run_study(quick=True, out=tmp_path, tier="full")
    assert full_dir == tmp_path / "reports" / "study-quick-full"
    full_md = (full_dir / "report.md").read_text()
    assert f"## {title}" in full_md and "Not run in this tier" not in full_md
    new = set(local_fake[len(default_runs) :])
    assert new and not new & default_runs  # only part 8's own runs trained; shared ones reused
    assert len(local_fake) == len(set(local_fake))  # nothing trained twice


def test_report_of_a_missing_study_is_one_clear_error(tmp_path, local_fake):
    study_run.run_study(quick=True, out=tmp_path)
    with pytest.raises(StoreError, match="no study 'nope'.*study-quick.eval"):
        write_study_report(tmp_path, "nope")


def test_missing_data_is_one_clear_error(tmp_path, monkeypatch, local_fake):
    import normlab.data

    def missing(name, root=None, **kw):
        raise ValueError(f"{name}: put cifar-10-binary.tar.gz in {tmp_path}")  # as DatasetError does

    monkeypatch.setattr(normlab.data, "load_dataset", missing)
    with pytest.raises(ConfigError, match="--dataset cifar10: "):
        study_run.run_study(dataset="cifar10", quick=True, out=tmp_path / "out")
    assert local_fake == []  # nothing ran
