"""`make gpu-check` keeps working although no GPU reaches the test suite: its code runs here on the CPU."""

from __future__ import annotations

import importlib.util
import json

import torch

from fedvit_utils import paths


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", paths.PROJECT_ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_in_one_line_and_exits_0(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _gpu_check().main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no CUDA device" in out


def test_the_paper_slice_runs_end_to_end_on_a_tiny_vit(tmp_path, cifar_root, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    torch.set_num_threads(1)
    assert _gpu_check().main(["--allow-cpu", "--tiny", "--images", "8", "--check-images", "4",
                              "--out", str(tmp_path)]) == 0
    (report,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert report["batch_size"] == 8 and report["clients"] == 2 and report["data"].startswith("ImageFolder")
    assert report["train_images_per_s"] > 0 and report["paper_profile_estimate_hours"]["training"] > 0
    assert report["eq14_holds_in_float32"]
    assert {(r["key_kind"], r["precision"].split(",")[0]) for r in report["eq14"]} == {
        ("orthogonal", "float32"), ("permutation", "float32"), ("orthogonal", "autocast (a no-op on the CPU)"),
        ("permutation", "autocast (a no-op on the CPU)")}
