"""The study report as files: one section per part, every figure embedded in the HTML and
linked from the Markdown, the stage-1 tables; a real browser loads every figure."""

import base64
import re
import shutil
import subprocess

import pytest

from normlab.experiments import runner
from normlab.study import run as study_run
from normlab.study.registry import PARTS
from study.fakes import fake_fit


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    real = runner.run_experiment
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            runner,
            "run_experiment",
            lambda e, o, **kw: real(e, o, **{**kw, "executor": "local", "workers": 1}, run_fn=fake_fit, progress=False),
        )
        return study_run.run_study(quick=True, out=out, tier="full")  # every part's figures


def test_every_figure_is_embedded_and_linked(report_dir):
    html = (report_dir / "report.html").read_text()
    md = (report_dir / "report.md").read_text()
    pngs = sorted(p.name for p in report_dir.glob("*.png"))
    for name in (
        "bn_final_acc",
        "batch_size_equal_epochs",
        "batch_size_equal_steps",
        "small_batch_acc",
        "lr_range",
        "step_time",
        "ioffe2015_holdout_acc",
        "noniid_acc",
        "init_final_acc",
    ):
        assert f"{name}.png" in pngs
    assert html.count("data:image/png;base64,") == len(pngs)
    for png in pngs:
        assert f"]({png})" in md
        assert base64.b64encode((report_dir / png).read_bytes()).decode() in html
    assert len(re.findall(r"^## \d+\. ", md, flags=re.MULTILINE)) == len(PARTS)
    assert "Not run in this tier" not in md
    assert md.count("| selected lr | at edge |") >= 3  # stage 1's table in parts 1, 5, 6 (and 7, 8)


CHECK_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.from(document.images);
  var loaded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var d = document.createElement("div");
  d.id = "normlab-check";
  d.textContent = "images " + loaded + "/" + imgs.length;
  document.body.appendChild(d);
});
</script>
"""


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    page = tmp_path / "report.html"
    page.write_text((report_dir / "report.html").read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
    found = re.search(r'id="normlab-check">images (\d+)/(\d+)<', dom)
    assert found, dom[:500]
    loaded, total = int(found.group(1)), int(found.group(2))
    assert total == len(list(report_dir.glob("*.png"))) > 0 and loaded == total
