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
