"""Nothing silently wrong, nothing lost: checked files, never-replaced keys, rebuilt records, locks, exit codes.

Each test reproduces one way a run used to go wrong without a word (smoke sizes, seconds each).
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import signal
import subprocess
import sys
import time
import warnings

import pandas as pd
import pytest
import torch

from fedvit_utils.__main__ import main
from fedvit_utils.data import DataError, DataNotFound, load_dataset
from fedvit_utils.federated import checkpoints
from fedvit_utils.federated.client import LocalTraining
from fedvit_utils.federated.server import run_federated
from fedvit_utils.files import DamagedFile, FolderInUse, RunLock, atomic_write, content_digest, load_checked
from fedvit_utils.profiles import ProfileError, load_profile
from fedvit_utils.study.run import StudyRun

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _study(tmp_path, cifar_root, name="run", **overrides) -> StudyRun:
    return StudyRun.open(load_profile("smoke", **overrides), tmp_path / name, cifar_root)


def _train(run: StudyRun, **kwargs):
    data = run.write_partition("cifar10")
    return run_federated(run.profile, data, run.dataset_dir("cifar10") / "federated", run.device, progress=False,
                         **kwargs)


# -- 1. checked checkpoints and partition -----------------------------------------------------------
def test_no_bit_flip_in_a_checkpoint_loads_silently(tmp_path, cifar_root):
    out = _train(_study(tmp_path, cifar_root), stop_after=1)
    raw = (out / checkpoints.CHECKPOINT).read_bytes()
    truth = content_digest(load_checked(out / checkpoints.CHECKPOINT, "fix"))
    rng = random.Random(0)
    caught = 0
    for trial in range(60):
        flipped = bytearray(raw)
        bit = rng.randrange(len(raw) * 8)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path = tmp_path / f"flip{trial}.pt"
        path.write_bytes(bytes(flipped))
        try:
            content = load_checked(path, "fix")
        except DamagedFile as exc:
            assert str(path) in str(exc)
            caught += 1
        else:  # a flip in zip padding may change nothing; what loads must then be exactly the original
            assert content_digest(content) == truth, f"bit {bit} changed the checkpoint without a word"
    assert caught >= 50


@pytest.mark.slow
def test_a_damaged_checkpoint_stops_the_resume_and_says_what_to_do(tmp_path, cifar_root):
    run = _study(tmp_path, cifar_root)
    out = _train(run, stop_after=1)
    ckpt = out / checkpoints.CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[:-100])  # torn
    with pytest.raises(DamagedFile, match=r"checkpoint\.pt.*--restart"):
        _train(run)
    _train(run, resume=False)  # --restart recovers
    assert (out / checkpoints.MODEL).exists()


@pytest.mark.slow
def test_an_edited_partition_is_caught_and_restart_recovers(tmp_path, cifar_root):
    run = _study(tmp_path, cifar_root)
    run.write_partition("cifar10")
    path = run.dataset_dir("cifar10") / "partition.json"
    text = path.read_text()
    first = next(i for i in range(text.index('"indices"'), len(text)) if text[i].isdigit())
    path.write_text(text[:first] + ("1" if text[first] != "1" else "2") + text[first + 1 :])  # one index changed
    with pytest.raises(DamagedFile, match="partition.json.*notebook 01"):
        run.load_data("cifar10")
    path.write_text(text[: len(text) // 2])  # torn
    with pytest.raises(DamagedFile, match="partition.json"):
        run.load_data("cifar10")
    main(["train", "--profile", "smoke", "--run-dir", str(run.folder), "--data", str(cifar_root), "--no-progress",
          "--restart", "--federated-only"])
    assert run.load_data("cifar10").splits.settings["partition_seed"] == 0


def test_checkpoints_load_with_weights_only_and_a_crafted_one_runs_nothing(tmp_path, cifar_root):
    out = _train(_study(tmp_path, cifar_root), stop_after=1)
    torch.load(out / checkpoints.CHECKPOINT, weights_only=True)  # plain tensors, lists and numbers only
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    crafted = pickle.dumps({"format": "fedvit-checked-1", "content": Payload()}, protocol=2)
    (out / checkpoints.CHECKPOINT).write_bytes(crafted)
    with pytest.raises(DamagedFile):
        load_checked(out / checkpoints.CHECKPOINT, "fix")
    assert not marker.exists()


# -- 2. keys are never replaced --------------------------------------------------------------------
def test_key_files_are_never_replaced(tmp_path, cifar_root):
    run = _study(tmp_path, cifar_root)
    _train(run)
    model = run.trained_model("cifar10")
    keys = run.create_keys("cifar10", model)
    files = sorted((run.folder / "keys" / "cifar10").glob("*.key"))
    before = {f: f.read_bytes() for f in files}
    assert run.create_keys("cifar10", model) == keys  # a rerun of notebook 03 loads them
    files[3].unlink()
    with pytest.raises(ValueError, match="1 of 10 key files are missing.*never replaced"):
        run.create_keys("cifar10", model)
    files[3].write_bytes(before[files[3]])
    os.chmod(files[3], 0o600)
    other = StudyRun.open(load_profile("smoke", key_kind="permutation"), run.folder, cifar_root)
    with pytest.raises(ValueError, match="never replaced"):
        other.create_keys("cifar10", model)
    assert {f: f.read_bytes() for f in files} == before


@pytest.mark.slow
# -- 3. records are atomic and rebuilt ------------------------------------------------------------
def test_lost_or_torn_records_are_rebuilt_from_the_checkpoint(tmp_path, cifar_root):
    run = _study(tmp_path, cifar_root)
    out = _train(run)
    history, metrics = (out / checkpoints.HISTORY).read_text(), (out / checkpoints.METRICS).read_text()
    (out / checkpoints.HISTORY).unlink()
    (out / checkpoints.METRICS).write_text(metrics[:50])  # torn
    (out / ".history.csv.abc.tmp").write_text("half a file")  # what a kill mid-write leaves
    with pytest.raises(FileNotFoundError, match="rebuilds the records"):
        checkpoints.load_history(out)
    _train(run)  # the finished run trains nothing more, but repairs its records
    assert (out / checkpoints.HISTORY).read_text() == history
    assert (out / checkpoints.METRICS).read_text() == metrics
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
# -- 4. one run per folder -------------------------------------------------------------------------
def test_a_second_run_into_a_busy_folder_is_refused_with_the_pid(tmp_path, cifar_root):
    run = _study(tmp_path, cifar_root)
    folder = run.dataset_dir("cifar10") / "federated"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from fedvit_utils.files import RunLock\n"
        f"with RunLock({str(folder)!r}, 'train'):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUse, match=f"PID {holder.pid}"):
            _train(run)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    _train(run)  # the killed holder leaves no stale lock behind
    assert (folder / checkpoints.MODEL).exists()


def test_an_unwritable_run_folder_is_found_before_training(tmp_path, cifar_root, monkeypatch):
    # Tests run as root, for whom chmod does not make a folder read-only; the open that fails is simulated.
    run = _study(tmp_path, cifar_root)
    data = run.write_partition("cifar10")
    trained = []
    monkeypatch.setattr(LocalTraining, "fit", lambda *a: trained.append(1))
    real_open = open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(".train.lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only)
    with pytest.raises(PermissionError, match="federated is not writable"):
        run_federated(run.profile, data, run.dataset_dir("cifar10") / "federated", run.device, progress=False)
    assert not trained


# -- 5. nothing trained is a failure ---------------------------------------------------------------
@pytest.mark.parametrize("setting", [dict(batch_size=0), dict(lr=float("nan")), dict(rounds=0),
                                     dict(key_kind="orthogonl"), dict(momentum=1.5)])
def test_settings_that_cannot_train_are_refused_up_front(setting):
    name = next(iter(setting))
    with pytest.raises(ProfileError, match=name):
        load_profile("smoke", **setting)


def test_a_run_where_every_client_failed_exits_non_zero_without_a_model(tmp_path, cifar_root, monkeypatch):
    def broken(*args):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(LocalTraining, "fit", broken)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as exit_:
        warnings.simplefilter("always")
        main(["train", "--profile", "smoke", "--run-dir", str(tmp_path / "r"), "--data", str(cifar_root),
              "--no-progress", "--federated-only"])
    assert sum("every client failed" in str(w.message) for w in caught) == 2  # one per round
    assert "NothingTrained" in str(exit_.value.code)
    assert not (tmp_path / "r" / "cifar10" / "federated" / checkpoints.MODEL).exists()


# -- 6. class lists -------------------------------------------------------------------------------
def _imagefolder(root, layout: dict[str, list[str]], names=("0001.jpg",)):
    from PIL import Image

    for split, classes in layout.items():
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for n in names:
                Image.new("RGB", (32, 32), (10, 20, 30)).save(root / split / c / n)


def test_train_and_test_class_lists_must_match(tmp_path):
    _imagefolder(tmp_path, {"train": [f"c{i}" for i in range(10)], "test": [f"c{i}" for i in range(9)] + ["x9"]},
                 names=[f"{i:04d}.jpg" for i in range(4)])
    run = StudyRun.open(load_profile("smoke", train_per_client=1, test_per_client=1), tmp_path / "run", tmp_path)
    with pytest.raises(DataError, match=r"only in train: \['c9'\], only in test: \['x9'\]"):
        run.write_partition("cifar10")


# -- 8. errors name the file ----------------------------------------------------------------------
def test_data_errors_name_the_file_and_hidden_files_are_skipped(tmp_path):
    classes = [f"c{i}" for i in range(10)]
    _imagefolder(tmp_path, {"train": classes, "test": classes})
    (tmp_path / "train" / "c0" / "._0001.jpg").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (tmp_path / "train" / ".DS_Store").write_bytes(b"junk")
    assert len(load_dataset("cifar10", "train", tmp_path)) == 10
    bad = tmp_path / "train" / "c3" / "0002.jpg"
    bad.write_bytes((tmp_path / "train" / "c3" / "0001.jpg").read_bytes()[:200])  # truncated JPEG
    with pytest.raises(DataError, match=str(bad)):
        load_dataset("cifar10", "train", tmp_path)
    for f in (tmp_path / "test").rglob("*.jpg"):
        f.unlink()
    for d in sorted((tmp_path / "test").iterdir()):
        d.rmdir()
    with pytest.raises(DataNotFound, match="none under test/"):
        load_dataset("cifar10", "test", tmp_path)


def test_partition_size_error_names_the_profile_settings(tmp_path, cifar_root):
    run = _study(tmp_path, cifar_root, train_per_client=30)  # smoke loads 20 images per class: 200 < 10 x 30
    with pytest.raises(ValueError, match=r"num_clients=10 x train_per_client=30 .*\(max_per_class=20\)"):
        run.write_partition("cifar10")


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"previous")

    def fill(fh):
        fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=f"disk full while writing {path}"):
        atomic_write(path, fill)
    assert path.read_bytes() == b"previous" and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
# -- 11. resume is not refused for settings that cannot change the weights -----------------------
def test_resume_accepts_another_device_or_eval_batch_size(tmp_path, cifar_root):
    _train(_study(tmp_path, cifar_root), stop_after=1)
    out = _train(_study(tmp_path, cifar_root, eval_batch_size=7, device="cpu"))
    assert pd.read_csv(out / checkpoints.HISTORY)["round"].max() == 2


def test_lock_is_released_when_the_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from fedvit_utils.files import RunLock\n"
        f"with RunLock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderInUse):
        RunLock(tmp_path).__enter__()
    holder.kill()
    holder.wait()
    time.sleep(0.1)
    with RunLock(tmp_path):
        pass
