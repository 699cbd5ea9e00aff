"""One colour per variant, the same in every figure of every report.

A reader who learnt "blue is BN" in the first figure must be able to trust it in the last, so a
variant's colour depends on its name only, never on which other variants a figure happens to
draw. The registered norms have fixed colours (the Okabe-Ito colour-blind-safe set, BN's relatives
in blues); a label that names a norm ("batch, class_grouped", "batch bs 4", "norm=group, batch_size=8") takes
that norm's colour, and variants of one norm in one figure differ by line style instead; any
other name gets a colour picked from its CRC-32, so it is the same in every process and run.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

__all__ = ["NORM_COLORS", "variant_color", "variant_norm", "line_styles"]

NORM_COLORS: dict[str, str] = {
    "none": "#4d4d4d",  # dark grey: the baseline
    "batch": "#0072b2",  # blue
    "ghost_batch": "#56b4e9",  # sky blue (a BN variant)
    "batch_renorm": "#7b3fa0",  # violet (a BN variant)
    "group": "#009e73",  # bluish green
    "layer": "#e69f00",  # orange
    "instance": "#cc79a7",  # reddish purple
    "rms": "#d55e00",  # vermillion
    "noisy_batch": "#9ecae1",  # pale blue (BN with injected noise)
}

# For names that are no norm (e.g. "lr=0.01"): distinct from the norms' colours.
_OTHER_COLORS = ("#8c564b", "#bcbd22", "#17becf", "#a6761d", "#e7298a", "#666666", "#1b9e77", "#7570b3")

_LINE_STYLES = ("-", "--", ":", "-.")


def variant_norm(name: str) -> str | None:
    """The registered norm a variant label names, if any: its first word ("batch, bs 64",
    "batch bs 4" -> "batch") or a "norm=" key anywhere ("lr=0.1, norm=group" -> "group", the
    labels of `normlab.analysis.frames.label_runs`)."""
    words = [w for w in re.split(r"[,\s]+", str(name)) if w]
    for word in words:
        key, _, value = word.partition("=")
        if key == "norm" and value in NORM_COLORS:
            return value
    return words[0] if words and words[0] in NORM_COLORS else None


def variant_color(name: str) -> str:
    """The colour of a variant, as "#rrggbb": its norm's, else one fixed by the name's CRC-32."""
    norm = variant_norm(name)
    if norm is not None:
        return NORM_COLORS[norm]
    return _OTHER_COLORS[zlib.crc32(str(name).encode("utf-8")) % len(_OTHER_COLORS)]


def line_styles(names: Sequence[str]) -> dict[str, str]:
    """A line style per name, so that names sharing a colour in one figure stay apart.

    The first name (in sorted order) of each colour is solid; the others dashed, dotted, ...
    """
    styles, seen = {}, {}
    for name in sorted(set(map(str, names))):
        color = variant_color(name)
        styles[name] = _LINE_STYLES[seen.get(color, 0) % len(_LINE_STYLES)]
        seen[color] = seen.get(color, 0) + 1
    return styles
