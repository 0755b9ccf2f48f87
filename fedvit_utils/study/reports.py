"""Tables and figures written to a folder: CSV + Markdown for tables, PNG for figures (atomically)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..files import write_bytes, write_text


def format_value(v: object) -> str:
    """One table cell as text: 3 decimals, counts as integers, tiny and huge numbers in e-notation."""
    if v is None or (isinstance(v, float | np.floating) and math.isnan(v)) or v is pd.NA:
        return "—"
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, float | np.floating):
        v = float(v)
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v.is_integer() and 2 <= abs(v) < 1e6:  # counts (n_test, k) stay integers
            return str(int(v))
        if 0 < abs(v) < 1e-3 or abs(v) >= 1e6:
            return f"{v:.2e}"
        return f"{v:.3f}"
    return str(v).replace("|", "\\|")


def to_markdown(table: pd.DataFrame, caption: str | None = None) -> str:
    """A GitHub Markdown table of `table`, after an optional caption line."""
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(format_value(v) for v in row) + " |" for row in table.itertuples(index=False)]
    body = "\n".join(lines) + "\n"
    return f"{caption}\n\n{body}" if caption else body


def save_table(table: pd.DataFrame, folder: str | os.PathLike, name: str, caption: str | None = None
               ) -> tuple[Path, Path]:
    """Write `name`.csv and `name`.md into `folder`; returns both paths."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table {name!r} is a {type(table).__name__}; pass a pandas DataFrame.")
    folder = Path(folder)
    csv = write_text(folder / f"{name}.csv", table.to_csv(index=False))
    md = write_text(folder / f"{name}.md", to_markdown(table, caption))
    return csv, md


def save_figure(fig: Figure, folder: str | os.PathLike, name: str, dpi: int = 150) -> Path:
    """Write `fig` as `name`.png into `folder`; returns the path."""
    if not isinstance(fig, Figure):
        raise TypeError(f"figure {name!r} is a {type(fig).__name__}; pass a matplotlib Figure.")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return write_bytes(Path(folder) / f"{name}.png", buffer.getvalue())
