"""What a user of a shared machine sees after a run: readable results, private keys, no lock files left,
published figures that a parameter change cannot overwrite, and no progress bars stored in notebooks."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fedvit_utils import paths
from fedvit_utils.files import RunLock, write_json
from fedvit_utils.keys import generate_key
from fedvit_utils.profiles import load_profile
from fedvit_utils.study import parameters, runner
from fedvit_utils.study.run import StudyRun, frontend_attached

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_results_are_readable_by_others_and_keys_by_the_owner_only(tmp_path):
    assert _mode(write_json(tmp_path / "r.json", {"a": 1})) == 0o644
    key = generate_key(32, 8, 3, "gaussian", seed=0)
    assert _mode(key.save(tmp_path / "k.key")) == 0o600


def test_a_released_lock_leaves_no_file_and_a_second_holder_still_waits(tmp_path):
    with RunLock(tmp_path, "study") as lock:
        assert lock.path.exists()
    assert not list(tmp_path.iterdir())
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from fedvit_utils.files import RunLock\n"
        f"with RunLock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from fedvit_utils.files import FolderInUse

        with pytest.raises(FolderInUse, match=f"PID {holder.pid}"):
            RunLock(tmp_path).__enter__()
    finally:
        holder.kill()
        holder.wait()


def test_a_run_leaves_no_lock_files_readable_results_and_says_where_they_are(tmp_path, cifar_root, capsys,
                                                                             monkeypatch):
    monkeypatch.setattr(paths, "FIGURES_DIR", tmp_path / "published")
    run = StudyRun.open(load_profile("smoke"), tmp_path / "run", cifar_root)
    data = run.write_partition("cifar10")  # preflight, partition lock
    run.train(data)  # training locks
    out = runner.run_study("smoke", run.folder, cifar_root, only=["00"])  # the study lock
    assert not [p for p in out.rglob("*.lock")], "lock files left behind"
    results = [p for p in out.rglob("*") if p.is_file() and "keys" not in p.parts]
    assert results and all(_mode(p) == 0o644 for p in results), [(p, oct(_mode(p))) for p in results]
    said = capsys.readouterr().out
    assert f"executed notebooks: {out / 'notebooks'}" in said and f"figures and tables: {out / 'figures'}" in said
    assert "not published" in said and "smoke profile is for tests" in said
    assert not (tmp_path / "published").exists()
    study = json.loads((out / "study.json").read_text())
    assert study["provenance"]["profile"]["name"] == "smoke" and (out / "provenance.json").exists()


def test_a_figure_parameter_change_never_overwrites_the_runs_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDVIT_PROFILE", "smoke")
    ns = {p.name: p.default for p in parameters.declared("04_encrypted_images")}
    ns.update(run_dir=str(tmp_path / "run"), In=['# Parameters\nphoto_name = "coffee"\n'], photo_name="coffee")
    run = parameters.open_run("04_encrypted_images", ns)
    assert run.variant == "--photo_name-coffee"
    from matplotlib.figure import Figure

    default = StudyRun.open("smoke", tmp_path / "run")
    default.save_figure(Figure(), "figure2")
    before = (default.figures / "figure2.png").read_bytes()
    fig = Figure()
    fig.text(0.5, 0.5, "coffee")
    run.save_figure(fig, "figure2")
    assert (run.figures / "figure2.png").read_bytes() == before
    assert (run.figures / "figure2--photo_name-coffee.png").exists()
    ns.update(photo_name="astronaut", photo_block=8, In=["# Parameters\nphoto_block = 8\n"])
    assert parameters.open_run("04_encrypted_images", ns).variant == "--photo_block-8"
    ns.update(photo_block=16)  # back at every default: the run's own names
    assert parameters.open_run("04_encrypted_images", ns).variant == ""


def test_progress_bars_only_where_a_front_end_is_attached(tmp_path, cifar_root, monkeypatch, capsys):
    for name in ("JPY_SESSION_NAME", "VSCODE_PID"):
        monkeypatch.delenv(name, raising=False)
    assert not frontend_attached()
    run = StudyRun.open(load_profile("smoke"), tmp_path / "run", cifar_root)
    run.train(run.write_partition("cifar10"))
    assert "rounds" not in capsys.readouterr().err  # no bar: papermill and nbval store nothing of it
    monkeypatch.setenv("JPY_SESSION_NAME", "/notebooks/02_federated_training.ipynb")  # what Jupyter Server sets
    assert frontend_attached()
    run = StudyRun.open(load_profile("smoke"), tmp_path / "run2", cifar_root)
    run.train(run.write_partition("cifar10"))
    assert "rounds" in capsys.readouterr().err


def test_jupyterlab_override_turns_the_news_pop_up_and_update_check_off(tmp_path):
    """The overrides.json `make venv` installs where JupyterLab reads it (<sys.prefix>/share/jupyter/lab/settings)."""
    from jupyterlab.commands import get_app_dir
    from jupyterlab_server.settings_utils import get_settings

    assert Path(get_app_dir()).resolve() == (Path(sys.prefix) / "share" / "jupyter" / "lab").resolve()
    assert "$(VENV)/share/jupyter/lab/settings/overrides.json" in (paths.PROJECT_ROOT / "Makefile").read_text()
    settings = tmp_path / "app-settings"
    settings.mkdir()
    shutil.copy(paths.PROJECT_ROOT / "jupyter" / "overrides.json", settings / "overrides.json")
    found, warnings = get_settings(str(settings), str(Path(get_app_dir()) / "schemas"), str(tmp_path / "user"),
                                   "@jupyterlab/apputils-extension:notification")
    assert not [w for w in warnings if w]
    defaults = found["schema"]["properties"]  # overrides become the defaults the front end starts from
    assert defaults["fetchNews"]["default"] == "false"  # "Never": no "official Jupyter news?" pop-up
    assert defaults["checkForUpdates"]["default"] is False


def test_kernels_of_the_venv_do_not_print_the_plain_tcp_notice(tmp_path):
    """Plain papermill gives kernels no CurveZMQ keys; the kernel config `make venv` installs drops that notice."""
    from IPython.core.application import ENV_CONFIG_DIRS

    assert str(Path(sys.prefix) / "etc" / "ipython") in ENV_CONFIG_DIRS  # where make venv installs the file
    assert "$(VENV)/etc/ipython/ipython_kernel_config.py" in (paths.PROJECT_ROOT / "Makefile").read_text()
    profile = tmp_path / "ipython" / "profile_default"  # the same file, read from a profile for this test
    profile.mkdir(parents=True)
    shutil.copy(paths.PROJECT_ROOT / "jupyter" / "ipython_kernel_config.py", profile)
    nb = tmp_path / "tiny.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "execution_count": None, "id": "a", "metadata": {},
                                         "outputs": [], "source": "1 + 1"}],
                              "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                                          "display_name": "Python 3"}},
                              "nbformat": 4, "nbformat_minor": 5}))
    seen = {}
    for name, env in (("plain", {}), ("configured", {"IPYTHONDIR": str(tmp_path / "ipython")})):
        done = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(tmp_path / f"{name}.ipynb"),
                               "--no-progress-bar"], capture_output=True, text=True, env={**os.environ, **env},
                              timeout=300)
        assert done.returncode == 0, done.stderr
        seen[name] = "without encryption" in done.stderr
    assert seen == {"plain": not (Path(sys.prefix) / "etc" / "ipython" / "ipython_kernel_config.py").exists(),
                    "configured": False}


def _history(rounds: int):
    import pandas as pd

    rows = [dict(round=r, model="integrated", data="test", scope="all", accuracy=0.1 + 0.2 * r) for r in
            range(1, rounds + 1)]
    return pd.DataFrame(rows)


def test_accuracy_curves_have_round_ticks_a_chance_line_and_the_legend_off_the_data():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from fedvit_utils.study.figures import accuracy_curves

    fig = accuracy_curves(_history(2), None, "t", chance=0.1)
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks  # no 1.2, 1.4, ...
    assert any(list(line.get_ydata()) == [0.1, 0.1] for line in ax.get_lines()), "a chance line at 1 / classes"
    legend = ax.get_legend().get_window_extent()
    assert legend.y1 <= ax.get_window_extent().y0, "the legend sits under the plot, not on the curves"


def test_attack_legends_say_what_each_method_does():
    from fedvit_utils.study.figures import attack_label

    assert attack_label("orthogonal", "gram + lstsq") == ("orthogonal key: match blocks by their inner products "
                                                         "(Gram matrix), then solve for E_a by least squares "
                                                         "(gram + lstsq)")
    for kind, method in (("gaussian", "projector + lstsq"), ("permutation", "multiset + pixels"),
                         ("orthogonal", "gram + procrustes")):
        words = attack_label(kind, method)
        assert words.startswith(f"{kind} key: match blocks by") and ", then " in words, words


def test_parameter_help_points_to_docs_that_exist():
    """Every `docs/<page>.md#<section>` a notebook parameter's help names is a page with that section."""
    import re

    import papermill

    cited = set()
    for nb in sorted(paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        for param in papermill.inspect_notebook(str(nb)).values():
            cited |= set(re.findall(r"(docs/[\w-]+\.md)#([\w-]+)", param["help"]))
            assert "README" not in param["help"], f"{nb.name}: {param['help']}"
    assert ("docs/reproducibility.md", "data") in cited
    for page, section in cited:
        headings = [line.lstrip("#").strip().lower().replace(" ", "-") for line in
                    (paths.PROJECT_ROOT / page).read_text().splitlines() if line.startswith("#")]
        assert section in headings, f"{page} has no section #{section}"
