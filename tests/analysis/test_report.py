"""The report from a store: sections, verdicts from the numbers, files, and a real browser."""

import base64
import re
import shutil
import subprocess

import numpy as np
import pytest

from normlab.analysis import report
from normlab.experiments.errors import StoreError


@pytest.fixture(scope="module")
def study_report_dir(study_store):
    out, study = study_store
    return report.write_report(out, study)


def test_study_report_files(study_report_dir, study_store):
    out, study = study_store
    assert study_report_dir == out / "reports" / study
    html = (study_report_dir / "report.html").read_text()
    md = (study_report_dir / "report.md").read_text()
    pngs = sorted(p.name for p in study_report_dir.glob("*.png"))
    # Every part contributes figures; every PNG is embedded in the HTML and linked in the MD.
    for name in ("bn_test_acc", "batch_size_acc", "lr_range", "step_time", "ioffe2015_percentiles",
                 "noniid_final_acc", "init_final_acc"):
        assert f"{name}.png" in pngs
    assert html.count("data:image/png;base64,") == len(pngs)
    for png in pngs:
        assert f"]({png})" in md
        data = (study_report_dir / png).read_bytes()
        assert base64.b64encode(data).decode() in html
    for title in ("1. With vs without", "2. Batch size", "3. Learning rate", "4. Costs",
                  "5. The original paper", "6. Non-i.i.d."):
        assert title in html and title in md


def _findings(md):
    """(label, claim, measured) of every finding in report.md."""
    return re.findall(r"- \*\*([A-Z ]+)\*\*: (.*?)  \n  (.*?)\n", md)


def test_planted_effects_are_supported_and_numbers_are_measured(study_report_dir):
    md = (study_report_dir / "report.md").read_text()
    findings = {claim: (label, measured) for label, claim, measured in _findings(md)}
    label, measured = findings["BN makes the network reach a higher test accuracy."]
    assert label == "SUPPORTED"
    # The sentence carries the measured means (planted: 70% vs 60%) and n.
    found = re.search(r"final test accuracy: ([\d.]+)% vs ([\d.]+)% baseline \(n=3 vs n=3 seeds\)", measured)
    assert found, measured
    assert float(found.group(1)) == pytest.approx(70, abs=2) and float(found.group(2)) == pytest.approx(60, abs=2)
    # Planted without noise (every seed's gradient norms are the same constants): a large effect
    # with no spread is not "p = 0, supported" but inconclusive, and the sentence says why.
    label, measured = findings["BN improves gradient flow: the gradient norms of the first (blocks.0.linear) and last "
                               "(head) layers stay closer (absolute log10 of their ratio, median over training)."]
    assert label == "INCONCLUSIVE" and "neither side has any spread" in measured and "p=0 " not in measured
    # Planted: class-grouped batches give BN a train-mode advantage of exactly 5 points every run.
    label, measured = next(v for c, v in findings.items() if c.startswith("With non-i.i.d. training batches"))
    assert label == "INCONCLUSIVE" and "mean change 5%" in measured and "the changes have no spread" in measured
    # Not planted: GroupNorm vs BN at the smallest batch is no better (BN is +10 in the fake).
    group = [l for c, (l, _) in findings.items() if c.startswith("At batch size 2, the group norm")]
    assert group == ["NOT SUPPORTED"]
    # Planted: recalibration adds 3 points to every BN run (paired per run).
    recal = [(l, m) for c, (l, m) in findings.items() if c.startswith("recalibrate_bn")]
    assert len(recal) == 3 and all(l == "SUPPORTED" for l, _ in recal)
    assert all("mean change 3% (n=3 paired runs)" in m for _, m in recal)
    # Every tested claim is adjusted over the same family: the study's claims with a test.
    families = {int(f) for f in re.findall(r"Benjamini-Hochberg, (\d+) claims", md)}
    assert len(families) == 1 and "not adjusted" not in md
    # The headline counts agree with the findings listed.
    labels = [l for l, _, _ in _findings(md)]
    head = re.search(r"(\d+) claims tested: (\d+) supported, (\d+) not supported, (\d+) inconclusive", md)
    assert head.start() < md.index("## 1.")  # the counts come first
    assert [int(x) for x in head.groups()] == [len(labels), labels.count("SUPPORTED"),
                                               labels.count("NOT SUPPORTED"), labels.count("INCONCLUSIVE")]


def test_experiment_report_for_one_part(study_store):
    out, study = study_store
    path = report.write_report(out, f"{study}.bn")
    md = (path / "report.md").read_text()
    assert "batch reaches a higher test accuracy than none." in md
    assert (path / "final_acc.png").exists() and (path / "test_acc.png").exists()


def test_unknown_experiment_is_one_clear_error(study_store, tmp_path):
    out, _ = study_store
    with pytest.raises(StoreError, match="no experiment or study 'nope'.*known experiments: study.bn"):
        report.write_report(out, "nope")
    with pytest.raises(StoreError, match="no results store"):
        report.write_report(tmp_path / "empty", "study")


CHECK_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.from(document.images);
  var loaded = imgs.filter(function (i) {
    return i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0;
  }).length;
  var d = document.createElement("div");
  d.id = "normlab-check";
  d.textContent = "images " + loaded + "/" + imgs.length + " sections " +
      document.querySelectorAll("section h2").length;
  document.body.appendChild(d);
});
</script>
"""


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _render(path):
    """Load `path` in headless Chromium; return (loaded images, images, sections)."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking",
           "--no-first-run", "--virtual-time-budget=10000", "--dump-dom", path.resolve().as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'id="normlab-check">images (\d+)/(\d+) sections (\d+)<', dom)
    assert found, f"the check script did not run; Chromium printed: {dom[:500]!r}"
    return tuple(int(x) for x in found.groups())


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (CI installs Debian's "
                    "`chromium`; here: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(study_report_dir, tmp_path):
    html = (study_report_dir / "report.html").read_text()
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>"))
    loaded, total, sections = _render(page)
    assert total == len(list(study_report_dir.glob("*.png"))) and total > 0
    assert loaded == total
    assert sections == 6  # one per part of the study
    # The check can fail: a page with a broken figure is caught.
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
                      .replace("</body>", CHECK_SCRIPT + "</body>"))
    loaded, total, _ = _render(broken)
    assert loaded == total - 1


def test_claims_table_shows_adjusted_p_for_every_claim(study_report_dir):
    md = (study_report_dir / "report.md").read_text()
    html = (study_report_dir / "report.html").read_text()
    header = "| claim | part | effect | 95% CI | raw p | adjusted p | n | verdict |"
    assert header in md
    table = md[md.index(header):].split("\n\n")[0].splitlines()[2:]
    findings = _findings(md)
    assert len(table) == len(findings) and len(table) > 20
    for row, (label, claim, measured) in zip(table, findings):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == claim.replace("|", "/") and cells[7] == label.lower()
        assert cells[4] != "-" and cells[5] != "-", row  # raw and adjusted p
        assert re.fullmatch(r"\d+ vs \d+|\d+ paired", cells[6]), row
        assert f"adjusted p={cells[5]} " in measured  # the sentence and the table agree
    for column in ("effect", "95% CI", "raw p", "adjusted p", "n", "verdict"):
        assert f"<th>{column}</th>" in html


def test_study_report_object_is_adjusted_and_its_claims_frame(study_store):
    from normlab.experiments.store import Store
    from scipy.stats import false_discovery_control

    out, study = study_store
    with Store.open(out, create=False) as store:
        built = report.study_report(store, study)
    frame = report.claims_frame(built)
    assert len(frame) == sum(len(s.findings) for s in built.sections)
    tested = frame.dropna(subset=["p_value"])
    np.testing.assert_allclose(tested["p_adjusted"], false_discovery_control(tested["p_value"], method="bh"))
    labels = {"supported", "not supported", "inconclusive"}
    assert set(frame["verdict"]) <= labels and (frame["n_a"] >= 2).all()
