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
def report_dir(sweep_store):
    out, experiment = sweep_store
    return report.write_report(out, experiment)


def test_report_files(report_dir, sweep_store):
    out, experiment = sweep_store
    assert report_dir == out / "reports" / experiment
    html = (report_dir / "report.html").read_text()
    md = (report_dir / "report.md").read_text()
    pngs = sorted(p.name for p in report_dir.glob("*.png"))
    # every PNG is embedded in the HTML and linked in the MD
    assert {"final_acc.png", "test_acc.png", "train_loss.png"} <= set(pngs)
    assert html.count("data:image/png;base64,") == len(pngs)
    for png in pngs:
        assert f"]({png})" in md
        data = (report_dir / png).read_bytes()
        assert base64.b64encode(data).decode() in html


def _findings(md):
    """(label, claim, measured) of every finding in report.md."""
    return re.findall(r"- \*\*([A-Z ]+)\*\*: (.*?)  \n  (.*?)\n", md)


def test_planted_effects_are_supported_and_numbers_are_measured(report_dir):
    md = (report_dir / "report.md").read_text()
    findings = {claim: (label, measured) for label, claim, measured in _findings(md)}
    label, measured = findings["batch reaches a higher test accuracy than none."]
    assert label == "SUPPORTED"
    # The sentence carries the measured means (planted: 70% vs 60%) and n.
    found = re.search(r"final test accuracy: ([\d.]+)% vs ([\d.]+)% baseline \(n=3 vs n=3 seeds\)", measured)
    assert found, measured
    assert float(found.group(1)) == pytest.approx(70, abs=2) and float(found.group(2)) == pytest.approx(60, abs=2)
    # Not planted: GroupNorm and LayerNorm are no better than no norm.
    for other in ("group", "layer"):
        assert findings[f"{other} reaches a higher test accuracy than none."][0] != "SUPPORTED"
    # Every tested claim is adjusted over the same family.
    families = {int(f) for f in re.findall(r"Benjamini-Hochberg, (\d+) claims", md)}
    assert families == {3} and "not adjusted" not in md
    # The headline counts agree with the findings listed, and come first.
    labels = [l for l, _, _ in _findings(md)]
    head = re.search(r"(\d+) claims tested: (\d+) supported, (\d+) not supported, (\d+) inconclusive", md)
    assert head.start() < md.index("## ")
    assert [int(x) for x in head.groups()] == [
        len(labels),
        labels.count("SUPPORTED"),
        labels.count("NOT SUPPORTED"),
        labels.count("INCONCLUSIVE"),
    ]


def test_unknown_experiment_is_one_clear_error(sweep_store, tmp_path):
    out, _ = sweep_store
    with pytest.raises(StoreError, match="no experiment or study 'nope'.*known experiments: planted"):
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
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        "--virtual-time-budget=10000",
        "--dump-dom",
        path.resolve().as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'id="normlab-check">images (\d+)/(\d+) sections (\d+)<', dom)
    assert found, f"the check script did not run; Chromium printed: {dom[:500]!r}"
    return tuple(int(x) for x in found.groups())


@pytest.mark.skipif(
    _chromium() is None,
    reason="Chromium is not installed (CI installs Debian's `chromium`; here: apt-get install -y chromium)",
)
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    html = (report_dir / "report.html").read_text()
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>"))
    loaded, total, sections = _render(page)
    assert total == len(list(report_dir.glob("*.png"))) and total > 0
    assert loaded == total
    assert sections == 1
    # The check can fail: a page with a broken figure is caught.
    broken = tmp_path / "broken.html"
    broken.write_text(
        html.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1).replace(
            "</body>", CHECK_SCRIPT + "</body>"
        )
    )
    loaded, total, _ = _render(broken)
    assert loaded == total - 1


def test_claims_table_shows_adjusted_p_for_every_claim(report_dir):
    md = (report_dir / "report.md").read_text()
    html = (report_dir / "report.html").read_text()
    header = "| claim | part | effect | 95% CI | raw p | adjusted p | n | verdict |"
    assert header in md
    table = md[md.index(header) :].split("\n\n")[0].splitlines()[2:]
    findings = _findings(md)
    assert len(table) == len(findings) == 3
    for row, (label, claim, measured) in zip(table, findings):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == claim.replace("|", "/") and cells[7] == label.lower()
        assert cells[4] != "-" and cells[5] != "-", row  # raw and adjusted p
        assert re.fullmatch(r"\d+ vs \d+|\d+ paired", cells[6]), row
        assert f"adjusted p={cells[5]} " in measured  # the sentence and the table agree
    for column in ("effect", "95% CI", "raw p", "adjusted p", "n", "verdict"):
        assert f"<th>{column}</th>" in html


def test_report_object_is_adjusted_and_its_claims_frame(sweep_store):
    from scipy.stats import false_discovery_control

    from normlab.experiments.store import Store

    out, experiment = sweep_store
    with Store.open(out, create=False) as store:
        built = report.experiment_report(store, experiment)
    frame = report.claims_frame(built)
    assert len(frame) == sum(len(s.findings) for s in built.sections)
    tested = frame.dropna(subset=["p_value"])
    np.testing.assert_allclose(tested["p_adjusted"], false_discovery_control(tested["p_value"], method="bh"))
    labels = {"supported", "not supported", "inconclusive"}
    assert set(frame["verdict"]) <= labels and (frame["n_a"] >= 2).all()


def test_report_never_writes_through_a_planted_symlink(sweep_store, tmp_path):
    # a results folder from someone else may hold links that point outside it
    out, experiment = sweep_store
    copy = tmp_path / "results"
    shutil.copytree(out, copy)
    outside = tmp_path / "outside"
    outside.mkdir()
    reports = copy / "reports"
    shutil.rmtree(reports, ignore_errors=True)
    reports.symlink_to(outside, target_is_directory=True)  # the folder itself
    with pytest.raises(StoreError, match="is a symlink"):
        report.write_report(copy, experiment)
    reports.unlink()
    (reports / experiment).mkdir(parents=True)
    victim = outside / "victim.html"
    victim.write_text("keep me")
    (reports / experiment / "report.html").symlink_to(victim)  # one file of it
    with pytest.raises(StoreError, match="is a symlink"):
        report.write_report(copy, experiment)
    assert victim.read_text() == "keep me" and list(outside.iterdir()) == [victim]
