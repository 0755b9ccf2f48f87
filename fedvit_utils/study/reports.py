"""Tables and figures written to a folder: CSV + Markdown for tables, PNG for figures (atomically).

Figures are shown in notebooks as the PNG itself (`InlineFigure`), not through matplotlib's inline
backend: that backend only hooks figures made with pyplot, and not at all when MPLBACKEND=Agg, so a
bare `matplotlib.figure.Figure` would show as "<Figure size 640x360 with 2 Axes>". An `InlineFigure`
shows the same picture in JupyterLab, in papermill's executed notebooks and under nbval.
"""

from __future__ import annotations

import base64
import io
import math
import os
import struct
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


FILE_DPI = 150  # figures written to files
SCREEN_DPI = 100  # the size a notebook shows them at


def png_bytes(fig: Figure, dpi: int = FILE_DPI, name: str = "figure") -> bytes:
    """`fig` rendered as PNG."""
    if not isinstance(fig, Figure):
        raise TypeError(f"figure {name!r} is a {type(fig).__name__}; pass a matplotlib Figure.")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(fig: Figure, folder: str | os.PathLike, name: str, dpi: int = FILE_DPI) -> Path:
    """Write `fig` as `name`.png into `folder`; returns the path."""
    return write_bytes(Path(folder) / f"{name}.png", png_bytes(fig, dpi, name))


class InlineFigure:
    """A figure as a notebook shows it: a PNG rendered at screen resolution (files get `FILE_DPI`).

    Displayed (last expression of a cell, or `display(...)`) it gives an image/png output in every
    front end; `figure` is the matplotlib Figure, `path` the file it was saved to (or None).
    """

    def __init__(self, figure: Figure, png: bytes, dpi: int = FILE_DPI, path: Path | None = None) -> None:
        if png[:8] != b"\x89PNG\r\n\x1a\n":
            raise ValueError("InlineFigure needs PNG bytes.")
        self.figure, self.png, self.dpi, self.path = figure, png, dpi, path
        self.width, self.height = struct.unpack(">II", png[16:24])  # the IHDR chunk

    @classmethod
    def render(cls, fig: Figure, dpi: int = SCREEN_DPI) -> InlineFigure:
        """Show `fig` without saving it (e.g. the frames of an interactive explorer)."""
        return cls(fig, png_bytes(fig, dpi), dpi)

    @classmethod
    def saved(cls, fig: Figure, folder: str | os.PathLike, name: str) -> InlineFigure:
        """Write `fig` to `folder`/`name`.png (at `FILE_DPI`) and show it (at `SCREEN_DPI`: a smaller notebook)."""
        path = save_figure(fig, folder, name)
        return cls(fig, png_bytes(fig, SCREEN_DPI, name), SCREEN_DPI, path)

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> tuple[dict, dict]:
        scale = SCREEN_DPI / self.dpi
        shown = {"width": round(self.width * scale), "height": round(self.height * scale)}
        label = self.path.name if self.path is not None else "figure"
        data = {"image/png": base64.b64encode(self.png).decode("ascii"),
                "text/plain": f"<{label}: {self.width}x{self.height} PNG>"}
        return data, {"image/png": shown}

    def __repr__(self) -> str:
        return f"InlineFigure({self.path or 'unsaved'}, {self.width}x{self.height})"
