"""Report rendering: sections of findings and figures -> report.html, report.md and PNGs.

A `Section` is pure content (claims, verdicts, tables, figures); this module lays it out. Before
anything is written, the verdicts of every finding of every section are adjusted together for
multiple comparisons (`adjust_report`, Benjamini-Hochberg), so a report never shows a verdict
decided on an unadjusted p. The claims table lists, for every claim, the effect in the claimed
direction, its 95% interval, raw and adjusted p, n per side and the verdict.
The HTML is self-contained: CSS inline, every figure embedded as a base64 PNG `<img>`, so the
file can be mailed or opened from anywhere. The Markdown links the PNG files written next to it.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from matplotlib.figure import Figure

from normlab.analysis.stats import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict, adjust_verdicts
from normlab.experiments.paths import open_new

__all__ = [
    "Finding",
    "FigureSpec",
    "Section",
    "Report",
    "adjust_report",
    "claims_rows",
    "claims_markdown",
    "verdict_counts",
    "CLAIM_COLUMNS",
    "CLAIMS_CAPTION",
    "write_files",
]


@dataclass
class Finding:
    """One claim of the seed notebook, the verdict the numbers give it and, optionally, what
    published work found on the same question (shown under the verdict, so the reader sees
    where this study agrees and where it does not)."""

    claim: str
    verdict: Verdict
    literature: str = ""


@dataclass
class FigureSpec:
    """A figure, its file stem (e.g. "bn_test_acc") and a one-sentence caption."""

    name: str
    figure: Figure
    caption: str


@dataclass
class Section:
    """One part of the study: what was run, what was measured, the verdicts and the figures."""

    title: str
    setup: str
    findings: list[Finding] = field(default_factory=list)
    measured: list[str] = field(default_factory=list)
    table: object | None = None  # a pandas DataFrame, rendered as a table
    figures: list[FigureSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    """A titled list of sections plus provenance lines (store, versions, machine)."""

    title: str
    summary: str
    sections: list[Section]
    provenance: list[str] = field(default_factory=list)


def adjust_report(report: Report) -> Report:
    """The report with every finding's verdict adjusted across all sections (Benjamini-Hochberg).

    The family is every claim of the report (`adjust_verdicts`); labels and sentences are decided
    again on the adjusted p. Returns a new Report (the given one is left as it was); applying it
    twice gives the same report.
    """
    findings = [f for s in report.sections for f in s.findings]
    adjusted = iter(adjust_verdicts([f.verdict for f in findings]))
    sections = [replace(s, findings=[replace(f, verdict=next(adjusted)) for f in s.findings]) for s in report.sections]
    return replace(report, sections=sections)


def verdict_counts(report: Report) -> str:
    """ "25 claims tested: 9 supported, 4 not supported, 12 inconclusive at the number of seeds run." """
    labels = [f.verdict.label for s in report.sections for f in s.findings]
    claims = f"{len(labels)} claim{'s' * (len(labels) != 1)}"
    return (
        f"{claims} tested: {labels.count(SUPPORTED)} supported, {labels.count(NOT_SUPPORTED)} "
        f"not supported, {labels.count(INCONCLUSIVE)} inconclusive at the number of seeds run."
    )


CLAIM_COLUMNS = ("claim", "part", "effect", "95% CI", "raw p", "adjusted p", "n", "verdict")
CLAIMS_CAPTION = (
    "Effect and 95% CI in the claimed direction (positive = the way the claim says), in the "
    "metric's units; p two-sided; adjusted p: Benjamini-Hochberg over the claims tested in "
    "this report; n: values per side (variant vs baseline), or paired runs."
)
"""The claims table's columns: the effect and its interval are in the claimed direction (positive
= the way the claim says) and in the metric's display units; n is "variant vs baseline" values, or
"k paired" runs."""


def _p(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.2g}"


def _part(section: Section) -> str:
    """ "3" for "3. Learning rate ...", else the whole title."""
    first = section.title.split(" ")[0].rstrip(".")
    return first if first.isdigit() else section.title


def claims_rows(report: Report) -> list[dict[str, str]]:
    """One row per claim of the report, keyed by `CLAIM_COLUMNS`, every cell already text."""
    rows = []
    for section in report.sections:
        for finding in section.findings:
            v = finding.verdict
            has_numbers = bool(v.head)  # built by verdict()/paired_verdict(), not by hand
            rows.append(
                {
                    "claim": finding.claim,
                    "part": _part(section),
                    "effect": v.fmt(v.effect, signed=True) if has_numbers else "-",
                    "95% CI": (
                        f"[{v.fmt(v.ci_low, signed=True)}, {v.fmt(v.ci_high, signed=True)}]"
                        if has_numbers and v.ci_low == v.ci_low
                        else "-"
                    ),
                    "raw p": _p(v.p_value if has_numbers else v.test.p_value),
                    "adjusted p": _p(v.p_adjusted),
                    "n": v.n_text if has_numbers else f"{v.test.n_a} vs {v.test.n_b}",
                    "verdict": v.label,
                }
            )
    return rows


def claims_markdown(report: Report) -> str:
    """The claims table as Markdown (the report's, and for notes such as a results file)."""
    lines = ["| " + " | ".join(CLAIM_COLUMNS) + " |", "|" + "---|" * len(CLAIM_COLUMNS)]
    for row in claims_rows(report):
        lines.append("| " + " | ".join(row[c].replace("|", "/") for c in CLAIM_COLUMNS) + " |")
    return "\n".join(lines)


_VERDICT_CLASS = {"supported": "ok", "not supported": "no", "inconclusive": "maybe"}

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; max-width: 60rem;
       margin: 2rem auto; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { margin-top: 2.5rem; border-bottom: 1px solid #eee; }
.setup { color: #444; }
.finding { margin: .6rem 0; padding: .5rem .8rem; border-left: 4px solid #999; background: #fafafa; }
.finding.ok { border-color: #2e7d32; } .finding.no { border-color: #c62828; }
.finding.maybe { border-color: #ef6c00; }
.label { font-weight: 600; text-transform: uppercase; font-size: .8rem; letter-spacing: .03em; }
.ok .label { color: #2e7d32; } .no .label { color: #c62828; } .maybe .label { color: #ef6c00; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .8rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; }
table.verdicts td, table.verdicts th { text-align: left; }
table.verdicts td.num { text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.provenance { color: #666; font-size: .8rem; }
"""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _png(figure: Figure) -> bytes:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _table_html(table) -> str:
    return table.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}", na_rep="-")


def _table_md(table) -> str:
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.itertuples(index=False):
        cells = [("-" if v != v else f"{v:.4g}") if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def _render_html(report: Report, images: dict[str, bytes]) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
        f"<p><b>{esc(verdict_counts(report))}</b> {esc(report.summary)}</p>",
    ]
    if report.sections:
        parts.append("<ul>")
        parts += [f'<li><a href="#{_slug(s.title)}">{esc(s.title)}</a></li>' for s in report.sections]
        parts.append("</ul>")
    rows = claims_rows(report)
    if rows:
        slugs = {_part(s): _slug(s.title) for s in report.sections}
        parts.append('<table class="verdicts"><tr>' + "".join(f"<th>{esc(c)}</th>" for c in CLAIM_COLUMNS) + "</tr>")
        for row in rows:
            cells = [
                f"<td>{esc(row['claim'])}</td>",
                f'<td><a href="#{slugs[row["part"]]}">{esc(row["part"])}</a></td>',
            ]
            cells += [f'<td class="num">{esc(row[c])}</td>' for c in CLAIM_COLUMNS[2:-1]]
            label = row["verdict"]
            cells.append(f'<td class="{_VERDICT_CLASS[label]}"><span class="label">{esc(label)}</span></td>')
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append(f'</table><p class="setup"><small>{esc(CLAIMS_CAPTION)}</small></p>')
    for section in report.sections:
        parts.append(f'<section id="{_slug(section.title)}"><h2>{esc(section.title)}</h2>')
        parts.append(f'<p class="setup">{esc(section.setup)}</p>')
        for finding in section.findings:
            cls = _VERDICT_CLASS[finding.verdict.label]
            parts.append(
                f'<div class="finding {cls}"><span class="label">{esc(finding.verdict.label)}</span> '
                f"&mdash; <b>Claim:</b> {esc(finding.claim)}<br><b>Measured:</b> "
                f"{esc(finding.verdict.text)}"
                + (f"<br><b>Literature:</b> {esc(finding.literature)}" if finding.literature else "")
                + "</div>"
            )
        if section.measured:
            parts.append("<ul>" + "".join(f"<li>{esc(m)}</li>" for m in section.measured) + "</ul>")
        if section.table is not None and len(section.table):
            parts.append(_table_html(section.table))
        for spec in section.figures:
            data = base64.b64encode(images[spec.name]).decode("ascii")
            parts.append(
                f'<figure><img alt="{esc(spec.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(spec.caption)}</figcaption></figure>"
            )
        parts += [f"<p><i>{esc(n)}</i></p>" for n in section.notes]
        parts.append("</section>")
    if report.provenance:
        parts.append('<h2>Provenance</h2><ul class="provenance">')
        parts += [f"<li>{esc(p)}</li>" for p in report.provenance]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _render_md(report: Report) -> str:
    lines = [f"# {report.title}", "", f"**{verdict_counts(report)}** {report.summary}", ""]
    if claims_rows(report):
        lines += [claims_markdown(report), "", f"*{CLAIMS_CAPTION}*", ""]
    for section in report.sections:
        lines += [f"## {section.title}", "", section.setup, ""]
        for finding in section.findings:
            lines.append(f"- **{finding.verdict.label.upper()}**: {finding.claim}  ")
            lines.append(f"  {finding.verdict.text}" + ("  " if finding.literature else ""))
            if finding.literature:
                lines.append(f"  *Literature:* {finding.literature}")
        if section.findings:
            lines.append("")
        lines += [f"- {m}" for m in section.measured]
        if section.measured:
            lines.append("")
        if section.table is not None and len(section.table):
            lines += [_table_md(section.table), ""]
        for spec in section.figures:
            lines += [f"![{spec.caption}]({spec.name}.png)", "", f"*{spec.caption}*", ""]
        lines += [f"*{n}*" for n in section.notes]
        lines.append("")
    if report.provenance:
        lines += ["## Provenance", ""] + [f"- {p}" for p in report.provenance] + [""]
    return "\n".join(lines)


def write_files(report: Report, out_dir: str | Path) -> Path:
    """Write report.html, report.md and one PNG per figure into `out_dir`; return `out_dir`.

    The verdicts are adjusted across every finding of every section first (`adjust_report`).
    No file is written through a symlink planted at its name (a StoreError names it).
    """
    report = adjust_report(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    for section in report.sections:
        for spec in section.figures:
            if spec.name in images:
                raise ValueError(f"two figures are named {spec.name!r}; figure names must be unique")
            images[spec.name] = _png(spec.figure)
            _write(out / f"{spec.name}.png", images[spec.name])
    _write(out / "report.html", _render_html(report, images).encode("utf-8"))
    _write(out / "report.md", _render_md(report).encode("utf-8"))
    return out


def _write(path: Path, data: bytes) -> None:
    with open_new(path, "wb") as handle:
        handle.write(data)
