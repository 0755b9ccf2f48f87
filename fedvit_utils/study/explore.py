"""Interactive exploration in notebooks (ipywidgets), with a static picture wherever no widget can run.

`encryption_explorer` draws an image, its encryption with a demo key and the decryption, and redraws
when the key kind, block size, image or seed changes. It is displayed as ONE output that carries both
the live widget and a PNG of its first frame: JupyterLab shows the live widget (the widget view
outranks image/png), while papermill's executed notebooks, nbval, nbconvert and any viewer without a
kernel show the PNG. The frames are drawn straight into the widget's Output state (not through
message routing), so the first frame is drawn once and is also what an executed notebook restores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from ..keys import KEY_KINDS
from . import figures
from .reports import InlineFigure

Frame = InlineFigure | str  # a picture, or a one-line message (e.g. a key draw that was refused)


def _output(frame: Frame) -> dict:
    """`frame` as one notebook output (nbformat), for an Output widget's state."""
    if isinstance(frame, str):
        return {"output_type": "stream", "name": "stdout", "text": frame + "\n"}
    data, metadata = frame._repr_mimebundle_()
    return {"output_type": "display_data", "data": data, "metadata": metadata}


def live_figure(draw: Callable[..., Frame], controls: Mapping[str, object], description: str) -> object:
    """Display `controls` (name -> ipywidget) and the frame `draw(**values)`, redrawn on every change.

    Returns the widget. The cell output also holds a PNG of the first frame (see the module doc).
    """
    import ipywidgets as widgets
    from IPython.display import display

    out = widgets.Output()

    def redraw(_change: object = None) -> Frame:
        frame = draw(**{name: c.value for name, c in controls.items()})
        out.outputs = (_output(frame),)
        return frame

    first = redraw()
    for control in controls.values():
        control.observe(redraw, names="value")
    box = widgets.VBox([widgets.HBox(list(controls.values())[:2]), widgets.HBox(list(controls.values())[2:]), out])
    bundle = dict(box._repr_mimebundle_())  # application/vnd.jupyter.widget-view+json, text/plain
    metadata = {}
    values = ", ".join(f"{name}={c.value!r}" for name, c in controls.items())
    bundle["text/plain"] = f"{description} ({values}); live controls need a running kernel and ipywidgets"
    if isinstance(first, InlineFigure):
        data, metadata = first._repr_mimebundle_()
        bundle["image/png"] = data["image/png"]
    display(bundle, raw=True, metadata=metadata)
    return box


def encryption_explorer(images: Mapping[str, torch.Tensor], kinds: Sequence[str] = KEY_KINDS,
                        block_sizes: Sequence[int] = (4, 8, 16), kind: str = "permutation", block_size: int = 8,
                        seed: int = 0, label: str = "") -> None:
    """Display controls for key kind, block size, image and demo-key seed, and the plain, encrypted and
    decrypted image. `images` maps a name to a uint8 image (C, H, W). Demo keys come from the seed shown.

    Returns None, so that a cell ending with this call shows the explorer once.
    """
    draw, controls = encryption_controls(images, kinds, block_sizes, kind, block_size, seed, label)
    live_figure(draw, controls, "Encryption explorer")


def encryption_controls(images: Mapping[str, torch.Tensor], kinds: Sequence[str] = KEY_KINDS,
                        block_sizes: Sequence[int] = (4, 8, 16), kind: str = "permutation", block_size: int = 8,
                        seed: int = 0, label: str = "") -> tuple[Callable[..., Frame], dict]:
    """The explorer's drawing function and its controls (image, kind, block_size, seed), not displayed."""
    import ipywidgets as widgets

    if not images:
        raise ValueError("encryption_explorer needs at least one image (name -> uint8 (C, H, W) tensor).")
    if kind not in kinds:
        raise ValueError(f"kind {kind!r} is not among the choices {list(kinds)}.")
    if block_size not in block_sizes:
        raise ValueError(f"block_size {block_size} is not among the choices {list(block_sizes)}.")

    def draw(image: str, kind: str, block_size: int, seed: int) -> Frame:
        try:
            fig = figures.encryption_roundtrip(images[image], kind, block_size, seed, label)
        except ValueError as exc:  # a block size that does not divide the image, a refused gaussian draw
            return f"{image}, {kind} key, block {block_size}, seed {seed}: {exc}"
        return InlineFigure.render(fig)

    controls = {
        "image": widgets.Dropdown(options=list(images), description="image"),
        "kind": widgets.ToggleButtons(options=list(kinds), value=kind, description="key kind"),
        "block_size": widgets.Dropdown(options=list(block_sizes), value=block_size, description="block size"),
        "seed": widgets.IntSlider(value=seed, min=0, max=max(20, seed), description="demo seed",
                                  continuous_update=False),
    }
    return draw, controls
