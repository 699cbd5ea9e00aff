"""Report rendering: sections of findings and figures -> report.html, report.md and PNGs.

A `Section` is pure content (claims, verdicts, tables, figures); this module only lays it out.
The HTML is self-contained: CSS inline, every figure embedded as a base64 PNG `<img>`, so the
file can be mailed or opened from anywhere. The Markdown links the PNG files written next to it.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from normlab.analysis.stats import Verdict

__all__ = ["Finding", "FigureSpec", "Section", "Report", "write_files"]


@dataclass
class Finding:
    """One claim of the seed notebook and the verdict the numbers give it."""

    claim: str
    verdict: Verdict


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
        f"<p>{esc(report.summary)}</p>",
    ]
    if report.sections:
        parts.append("<ul>")
        parts += [f'<li><a href="#{_slug(s.title)}">{esc(s.title)}</a></li>' for s in report.sections]
        parts.append("</ul>")
    verdicts = [(s, f) for s in report.sections for f in s.findings]
    if verdicts:
        parts.append('<table class="verdicts"><tr><th>claim</th><th>verdict</th><th>part</th></tr>')
        parts += [
            f'<tr><td>{esc(f.claim)}</td><td class="{_VERDICT_CLASS[f.verdict.label]}">'
            f'<span class="label">{esc(f.verdict.label)}</span></td>'
            f'<td><a href="#{_slug(s.title)}">{esc(s.title.split(" ")[0].rstrip("."))}</a></td></tr>'
            for s, f in verdicts
        ]
        parts.append("</table>")
    for section in report.sections:
        parts.append(f'<section id="{_slug(section.title)}"><h2>{esc(section.title)}</h2>')
        parts.append(f'<p class="setup">{esc(section.setup)}</p>')
        for finding in section.findings:
            cls = _VERDICT_CLASS[finding.verdict.label]
            parts.append(
                f'<div class="finding {cls}"><span class="label">{esc(finding.verdict.label)}</span> '
                f"&mdash; <b>Claim:</b> {esc(finding.claim)}<br><b>Measured:</b> "
                f"{esc(finding.verdict.text)}</div>"
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
    lines = [f"# {report.title}", "", report.summary, ""]
    verdicts = [(s, f) for s in report.sections for f in s.findings]
    if verdicts:
        lines += ["| claim | verdict | part |", "|---|---|---|"]
        lines += [f"| {f.claim.replace('|', '/')} | {f.verdict.label} | {s.title.split(' ')[0].rstrip('.')} |"
                  for s, f in verdicts]
        lines.append("")
    for section in report.sections:
        lines += [f"## {section.title}", "", section.setup, ""]
        for finding in section.findings:
            lines.append(f"- **{finding.verdict.label.upper()}**: {finding.claim}  ")
            lines.append(f"  {finding.verdict.text}")
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
    """Write report.html, report.md and one PNG per figure into `out_dir`; return `out_dir`."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    for section in report.sections:
        for spec in section.figures:
            if spec.name in images:
                raise ValueError(f"two figures are named {spec.name!r}; figure names must be unique")
            images[spec.name] = _png(spec.figure)
            (out / f"{spec.name}.png").write_bytes(images[spec.name])
            plt.close(spec.figure)
    (out / "report.html").write_text(_render_html(report, images), encoding="utf-8")
    (out / "report.md").write_text(_render_md(report), encoding="utf-8")
    return out
