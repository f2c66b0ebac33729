"""LaTeX cells and booktabs tables: escaping, significant figures, intervals.

Shared by the study's tables (`tables`) and the findings table (`findings`).
"""

from __future__ import annotations

import math

import pandas as pd

ESTIMATE_MARK = "†"  # dagger after a value: energy estimated, not measured by a sensor
_LATEX_SPECIALS = {
    ESTIMATE_MARK: r"\textsuperscript{\dag}",
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def escape(text: object) -> str:
    """`text` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIALS.get(char, char) for char in str(text))


def number(value: object, digits: int = 3) -> str:
    """`value` to `digits` significant figures; an en dash when empty."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "--"
    if not math.isfinite(value):
        return "--"
    return f"{value:.{digits}g}"


def with_interval(value: object, low: object, high: object, digits: int = 3) -> str:
    """``value [low, high]``; the value alone when the interval is empty."""
    if number(low, digits) == "--":
        return number(value, digits)
    return f"{number(value, digits)} [{number(low, digits)}, {number(high, digits)}]"


def booktabs(frame: pd.DataFrame, caption: str, label: str, note: str = "") -> str:
    """A complete ``table`` environment for `frame`, every cell escaped."""
    align = "".join("r" if _numeric_column(frame[c]) else "l" for c in frame.columns)
    lines = [
        r"\begin{table}[tbp]",
        r"\centering",
        r"\small",
        rf"\caption{{{escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(escape(c) for c in frame.columns) + r" \\",
        r"\midrule",
        *(" & ".join(escape(v) for v in row) + r" \\" for row in frame.itertuples(index=False)),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    if note:
        lines.append(rf"\par\smallskip{{\footnotesize {escape(note)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _numeric_column(series: pd.Series) -> bool:
    """Right-align a column whose cells all start with a number."""
    cells = [str(v).split(" ")[0] for v in series if str(v) not in ("--", "")]

    def is_number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    return bool(cells) and all(is_number(c) for c in cells)
