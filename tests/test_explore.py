"""The encryption explorer: one output with the live widget and a still PNG; redraws on every control change."""

from __future__ import annotations

import base64

import IPython.display
import pytest

from fedvit_utils.data import photographs
from fedvit_utils.study import explore

WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def shown(monkeypatch):
    """What the explorer passes to IPython's display (outside a kernel nothing is rendered)."""
    calls = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: calls.append((objs, kw)))
    return calls


def _png(output: dict) -> bytes:
    return base64.b64decode(output["data"]["image/png"])


def test_one_output_carries_the_widget_and_a_still_picture(shown):
    images = {"cat": photographs(["chelsea"], size=32)[0], "odd": photographs(["coffee"], size=36)[0]}
    draw, controls = explore.encryption_controls(images, block_sizes=(4, 8), block_size=8, seed=3)
    box = explore.live_figure(draw, controls, "Encryption explorer")
    (bundle,), kw = shown[0]
    assert kw["raw"] and WIDGET in bundle and base64.b64decode(bundle["image/png"])[:4] == b"\x89PNG"
    assert "kind='permutation'" in bundle["text/plain"] and "seed=3" in bundle["text/plain"]
    out = box.children[-1]
    first = _png(out.outputs[0])
    assert first == base64.b64decode(bundle["image/png"]), "the still picture is the widget's first frame"
    controls["kind"].value = "orthogonal"
    assert _png(out.outputs[0]) != first, "changing a control redraws"
    controls["image"].value = "odd"  # 36x36 is not divisible by block size 8: a message, not a traceback
    assert out.outputs[0]["output_type"] == "stream"
    assert "odd, orthogonal key, block 8, seed 3: image size 36x36 is not divisible" in out.outputs[0]["text"]
    controls["block_size"].value = 4
    assert out.outputs[0]["output_type"] == "display_data"


def test_the_explorer_shows_once_and_refuses_bad_choices(shown):
    image = {"cat": photographs(["chelsea"], size=32)[0]}
    assert explore.encryption_explorer(image) is None  # a cell ending with it shows nothing more
    assert len(shown) == 1
    with pytest.raises(ValueError, match=r"kind 'rot13' is not among the choices \['permutation'"):
        explore.encryption_controls(image, kind="rot13")
    with pytest.raises(ValueError, match=r"block_size 5 is not among the choices \[4, 8, 16\]"):
        explore.encryption_controls(image, block_size=5)
