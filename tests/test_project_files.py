"""The project's own files a newcomer reads first: the licence, the citation and `make help`."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest
import yaml

from fedvit_utils import paths

ROOT = paths.PROJECT_ROOT


def test_license_is_the_one_the_flower_app_declares():
    declared = tomllib.loads((ROOT / "flower" / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a stub


def test_citation_names_the_paper_and_this_software():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "Apache-2.0"
    paper = cff["preferred-citation"]
    shipped = next(p for p in (ROOT.parent / "shared" / "paper").glob("*.md")) if (
        ROOT.parent / "shared" / "paper").is_dir() else None
    if shipped is not None:  # the title, word for word, of the paper this repository implements
        heading = next(line for line in shipped.read_text().splitlines() if line.startswith("# "))
        assert paper["title"] == heading[2:].strip()
    assert [a["family-names"] for a in paper["authors"]] == ["Nagamori", "Kiya"]
    assert paper["year"] == 2023


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_every_entry_point():
    makefile = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "help"], capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert set(phony) <= listed, f"targets without a '## ' line in the Makefile: {sorted(set(phony) - listed)}"
    # `make` alone prints the same help instead of building anything
    plain = subprocess.run(["make", "-s", "-n", "-C", str(ROOT)], capture_output=True, text=True, check=True).stdout
    assert "grep" in plain and "pip" not in plain


def _pins(text: str) -> dict[str, str]:
    """name -> version of every `name==version` requirement line (markers and hashes ignored)."""
    found = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if m:
            found[m.group(1).lower().replace("_", "-")] = m.group(2)
    return found


def test_every_requirements_file_has_a_current_lock_with_hashes():
    """`make lock` writes requirements-X.lock for each requirements-X.txt; a pin changed without it fails here."""
    base = _pins((ROOT / "requirements.txt").read_text())
    for req in sorted(ROOT.glob("requirements*.txt")):
        lock = req.with_suffix(".lock")
        assert lock.exists(), f"{req.name} has no {lock.name}: run `make lock` and commit it"
        text = lock.read_text()
        locked = _pins(text)
        wanted = {**base, **_pins(req.read_text())}
        stale = {name: version for name, version in wanted.items() if locked.get(name) != version}
        assert not stale, f"{lock.name} does not pin {stale} as {req.name} asks: run `make lock`"
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])  # one entry per package
        assert all("--hash=sha256:" in e for e in entries if "==" in e), f"{lock.name}: a package without hashes"
        assert "torch==2.14.1" in text  # the build the tests ran with (see docs/reproducibility.md)


def test_the_notebook_folder_holds_notebooks_only():
    """JupyterLab opens notebooks/: each notebook once, its paired script in notebook_scripts/."""
    listed = [p.name for p in paths.NOTEBOOKS_DIR.iterdir() if not p.name.startswith(".")]
    assert listed and all(name.endswith(".ipynb") for name in listed), listed
    scripts = sorted(p.stem for p in paths.NOTEBOOK_SCRIPTS_DIR.glob("*.py"))
    assert scripts == sorted(name.removesuffix(".ipynb") for name in listed)
