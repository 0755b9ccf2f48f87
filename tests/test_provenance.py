"""Provenance: every run records the code, packages, data, profile and machine behind it; published results say so."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from importlib import metadata

import pytest
import torch

from fedvit_utils import paths, provenance
from fedvit_utils.__main__ import main
from fedvit_utils.profiles import load_profile
from fedvit_utils.study import runner


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_state_names_the_commit_and_flips_dirty_when_a_file_changes(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    clean = provenance.git_state(repo)
    assert clean == {"commit": head, "dirty": False, "changed_files": 0}
    (repo / "a.py").write_text("x = 2\n")
    assert provenance.git_state(repo)["dirty"] is True
    (repo / "a.py").write_text("x = 1\n")
    (repo / "new.py").write_text("")  # an untracked file the run could import also makes the tree dirty
    assert provenance.git_state(repo) == {"commit": head, "dirty": True, "changed_files": 1}


def test_without_git_the_record_says_so(tmp_path, monkeypatch):
    state = provenance.git_state(tmp_path)  # not a checkout
    assert state["commit"] is None and state["dirty"] is None and "not a git checkout" in state["note"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no git binary at all
    assert "git is not installed" in provenance.git_state(paths.PROJECT_ROOT)["note"]


def test_packages_are_the_installed_versions_and_their_digest_covers_all():
    pkgs = provenance.packages()
    assert pkgs["key"]["torch"] == metadata.version("torch") and pkgs["torch_build"] == torch.__version__
    assert pkgs["key"]["numpy"] == metadata.version("numpy")
    assert pkgs["count"] == len(pkgs["all"]) > 20
    assert f"timm=={metadata.version('timm')}" in pkgs["all"]
    assert pkgs["all_sha256"] == hashlib.sha256("\n".join(sorted(pkgs["all"])).encode()).hexdigest()


def _data(tmp_path):
    root = tmp_path / "data"
    for i, rel in enumerate(["train/a/1.jpg", "train/b/2.jpg", "test/a/3.jpg"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(bytes([i]) * 10)
    (root / ".DS_Store").write_bytes(b"junk")
    return root


def test_data_fingerprint_changes_with_any_byte_and_is_cached_by_listing(tmp_path):
    root = _data(tmp_path)
    first = provenance.data_fingerprint(root)
    assert first["files"] == 3 and not first["cached"] and len(first["sha256"]) == 64
    again = provenance.data_fingerprint(root)
    assert again["cached"] and again["sha256"] == first["sha256"]
    (root / ".DS_Store").write_bytes(b"other junk")  # hidden files are not data
    assert provenance.data_fingerprint(root)["sha256"] == first["sha256"]
    f = root / "train" / "a" / "1.jpg"
    stat = f.stat()
    f.write_bytes(b"\x07" * 10)  # same size; a new mtime makes a new cache key, so the bytes are read again
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = provenance.data_fingerprint(root)
    assert not changed["cached"] and changed["sha256"] != first["sha256"]
    (root / "test" / "a" / "3.jpg").rename(root / "test" / "a" / "4.jpg")  # a renamed file counts too
    assert provenance.data_fingerprint(root)["sha256"] != changed["sha256"]


def test_a_study_run_records_everything_and_publishes_it_with_a_footer(tmp_path, monkeypatch, cifar_root):
    profile = load_profile("smoke")
    record = provenance.collect(profile, cifar_root)
    assert set(record) >= {"git", "packages", "data", "profile", "seeds", "hardware"}
    assert record["seeds"] == {"partition_seed": profile.partition_seed, "training_seed": profile.training_seed,
                               "key_seed": profile.key_seed}
    assert record["profile"]["name"] == "smoke" and record["data"]["cifar10"]["folder"] == str(cifar_root.resolve())
    assert record["hardware"]["cores"] == os.cpu_count() and record["hardware"]["torch_threads"] >= 1
    json.dumps(record)  # it is a plain JSON record
    # publishing: provenance.json beside the figures, a footer under every table, variants left out
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / "figures" / "table1.md").write_text("| a |\n|---|\n| 1 |\n")
    (run / "figures" / "figure2.png").write_bytes(b"png")
    (run / "figures" / "figure2--photo_name-coffee.png").write_bytes(b"variant")
    (run / "study.json").write_text("{}")
    monkeypatch.setattr(paths, "FIGURES_DIR", tmp_path / "figures")
    runner.publish_results(run, "smoke", record)
    runner.publish_results(run, "smoke", record)  # twice: still one footer
    dest = tmp_path / "figures" / "smoke"
    assert sorted(p.name for p in dest.iterdir()) == ["figure2.png", "provenance.json", "study.json", "table1.md"]
    table = (dest / "table1.md").read_text()
    assert table.count("Provenance: profile smoke") == 1
    assert record["data"]["cifar10"]["sha256"][:16] in table and (record["git"]["commit"] or "unknown")[:12] in table
    assert json.loads((dest / "provenance.json").read_text())["packages"]["all_sha256"] == \
        record["packages"]["all_sha256"]


def test_publishing_keeps_the_published_spread_and_other_runs_tables_as_they_are(tmp_path, monkeypatch):
    """A plain study's Table 1 spread covers its own run only: publishing it would replace the several-seed
    table `make table1-spread` published. And a footer names the run that wrote a table, so a table already
    in figures/<profile>/ from another run keeps its own."""
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    for name in ("table1", "table1_spread"):
        (run / "figures" / f"{name}.md").write_text(f"| {name} of this run |\n|---|\n| 1 |\n")
    (run / "table1_spread.json").write_text(json.dumps({"rows": [{"dataset": "cifar10", "runs": 1}]}))
    (run / "study.json").write_text("{}")
    dest = tmp_path / "figures" / "smoke"
    dest.mkdir(parents=True)
    spread = "| over 3 runs |\n|---|\n| 3 |\n\nProvenance: profile smoke · an earlier run\n"
    (dest / "table1_spread.md").write_text(spread)
    (dest / "security_other.md").write_text("| another run's table |\n|---|\n| 2 |\n")
    monkeypatch.setattr(paths, "FIGURES_DIR", tmp_path / "figures")
    record = provenance.collect(load_profile("smoke"), tmp_path / "no-data")
    copied = runner.publish_results(run, "smoke", record)
    assert (dest / "table1_spread.md").read_text() == spread and dest / "table1_spread.md" not in copied
    assert "Provenance: " not in (dest / "security_other.md").read_text()
    assert (dest / "table1.md").read_text().count("Provenance: profile smoke") == 1
    (run / "table1_spread.json").write_text(json.dumps({"rows": [{"dataset": "cifar10", "runs": 3}]}))
    runner.publish_results(run, "smoke", record)  # a spread over several runs is published
    assert "of this run" in (dest / "table1_spread.md").read_text()


def test_the_command_attaches_provenance_to_a_run_another_process_made(tmp_path, monkeypatch, cifar_root, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "study.json").write_text(json.dumps({"profile": "smoke"}))
    monkeypatch.setattr(paths, "FIGURES_DIR", tmp_path / "figures")
    (tmp_path / "figures" / "smoke").mkdir(parents=True)
    (tmp_path / "figures" / "smoke" / "table1.md").write_text("| a |\n|---|\n| 1 |\n")
    main(["provenance", "--run-dir", str(run), "--data", str(cifar_root), "--publish"])
    record = json.loads((run / "provenance.json").read_text())
    assert record["profile"]["name"] == "smoke" and "after the run" in record["collected"]
    assert "Provenance: profile smoke" in (tmp_path / "figures" / "smoke" / "table1.md").read_text()
    assert (tmp_path / "figures" / "smoke" / "provenance.json").exists()
    assert '"commit"' in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no study.json naming its profile: pass --profile"):
        main(["provenance", "--run-dir", str(tmp_path)])


def test_a_missing_dataset_is_recorded_with_the_reason(tmp_path):
    record = provenance.collect(load_profile("smoke"), tmp_path / "nowhere")
    assert record["data"]["cifar10"]["sha256"] is None and "no cifar10 data" in record["data"]["cifar10"]["note"]
    assert "data sha256 cifar10 none" in provenance.footer(record)
