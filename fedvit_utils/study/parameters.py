"""The study notebooks' papermill parameters: one declared set, checked before any work starts.

Every notebook takes the same parameters (`COMMON`), in this order and with these types, and a few
take extras of their own (`EXTRAS`). The runner passes exactly the common set to every notebook, so
papermill never reports an unknown parameter. Types are written as papermill type comments in each
notebook's parameters cell, so ``papermill --help-notebook notebooks/02_federated_training.ipynb``
lists them; tests/test_notebooks.py keeps the cells and this module in step.

`open_run(notebook, globals())` is the first thing a notebook does after its parameters cell: it
refuses a parameter papermill injected that the notebook does not declare (``-p key_kind ...`` would
otherwise be silently ignored), checks the type and range of every declared value, loads the profile
(a typo fails here, naming the choices) and only then opens the run folder, which it does not create.
Each refusal is one line naming the parameter, the bad value and what is accepted.

A parameter marked `variant` only changes what a figure shows (another photograph, block size or demo
seed). Given a value other than its default, the notebook saves its figures under a name that says so
(``figure2--photo_name-coffee.png``), so it never overwrites the run's own figures, and publishing
skips such files. ``progress=None`` (the default) shows progress bars only where a Jupyter front end is
attached (`run.frontend_attached`): plain papermill, nbval and scripts store no widget state.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..data import PHOTOS
from ..profiles import Profile
from .run import VARIANT_MARK, StudyRun


class ParameterError(ValueError):
    """A notebook parameter that is unknown, of the wrong type or out of range."""


def _seed(v: object) -> bool:
    return v is None or (type(v) is int and v >= 0)


def _path(v: object) -> bool:
    return v is None or (isinstance(v, str | os.PathLike) and str(v) != "")


@dataclass(frozen=True)
class Parameter:
    """One papermill parameter: its name, type (as in the notebook's type comment), default and rule."""

    name: str
    type: str  # the type comment in the notebook's parameters cell, e.g. "int|None"
    default: object
    rule: str  # what is accepted, for the error message
    valid: Callable[[object], bool]
    variant: bool = False  # changes only what figures show: non-default values save figures under a suffix


COMMON: tuple[Parameter, ...] = (
    Parameter("profile", "str|None", None, "a profile name or a YAML file, or None for $FEDVIT_PROFILE (else quick)",
              _path),
    Parameter("run_dir", "str|None", None, "a folder path, or None for runs/<profile>", _path),
    Parameter("data_root", "str|None", None, "a folder path, or None for the project's data setting", _path),
    Parameter("partition_seed", "int|None", None, "a whole number >= 0, or None for the profile's", _seed),
    Parameter("training_seed", "int|None", None, "a whole number >= 0, or None for the profile's", _seed),
    Parameter("key_seed", "int|None", None, "a whole number >= 0, or None for the profile's", _seed),
    Parameter("progress", "bool|None", None,
              "True, False, or None (bars only where a Jupyter front end is attached, not under papermill)",
              lambda v: v is None or type(v) is bool),
)

EXTRAS: dict[str, tuple[Parameter, ...]] = {
    "01_data_partitioning": (
        Parameter("dirichlet_alpha", "float", 0.5, "a number > 0 (smaller is more skewed)",
                  lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < float("inf"),
                  variant=True),
    ),
    "04_encrypted_images": (
        Parameter("figure_seed", "int", 0, "a whole number >= 0", lambda v: type(v) is int and v >= 0, variant=True),
        Parameter("photo_name", "str", "astronaut", f"one of {list(PHOTOS)}", lambda v: v in PHOTOS, variant=True),
        Parameter("photo_block", "int", 16,
                  "a block size that divides 224 (1, 2, 4, 7, 8, 14, 16, 28, 32, 56, 112, 224)",
                  lambda v: type(v) is int and 0 < v <= 224 and 224 % v == 0, variant=True),
        Parameter("cifar_index", "int", 0, "a whole number >= 0", lambda v: type(v) is int and v >= 0,
                  variant=True),
    ),
    "07_table1_spread": (
        Parameter("spread_runs", "list|None", None, "a list of run folders of the same profile, or None for this run",
                  lambda v: v is None or (isinstance(v, list) and bool(v) and all(_path(x) and x is not None
                                                                                  for x in v))),
    ),
    "08_cloud_inference": (
        Parameter("server_url", "str|None", None, "None (start a server on loopback) or an address like "
                  "'http://127.0.0.1:8000'", lambda v: v is None or (isinstance(v, str) and
                                                      v.startswith(("http://", "https://")))),
        Parameter("query_images", "int", 16, "a whole number from 1 to 256",
                  lambda v: type(v) is int and 1 <= v <= 256),
    ),
}

NOTEBOOK_NAME = re.compile(r"^\d\d_\w+$")
INJECTED_HEADER = "# Parameters\n"  # papermill's comment on the cell it injects after the parameters cell


def declared(notebook: str) -> tuple[Parameter, ...]:
    """The parameters `notebook` (its file stem, e.g. "02_federated_training") takes, in order."""
    if not NOTEBOOK_NAME.match(notebook):
        raise ParameterError(f"notebook name {notebook!r} is not a study notebook's file stem like "
                             f"'02_federated_training'.")
    return COMMON + EXTRAS.get(notebook, ())


def injected_names(namespace: Mapping[str, object]) -> list[str]:
    """Names assigned by the cell papermill injected (read from IPython's input history `In`), in order."""
    cells = [c for c in namespace.get("In", []) or [] if isinstance(c, str) and c.startswith(INJECTED_HEADER)]
    if not cells:
        return []
    names = []
    for node in ast.parse(cells[-1]).body:
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def check(notebook: str, namespace: Mapping[str, object]) -> dict[str, object]:
    """The values of `notebook`'s parameters in `namespace` (a notebook's globals()), all checked."""
    params = declared(notebook)
    names = [p.name for p in params]
    unknown = [n for n in injected_names(namespace) if n not in names]
    if unknown:
        name = unknown[0]
        hint = ""
        if name in {f.name for f in dataclasses.fields(Profile)}:
            hint = (f" {name} is a profile setting: write it into a YAML profile (base: quick, {name}: ...) and "
                    f"pass that file as -p profile my.yaml.")
        raise ParameterError(f"unknown parameter {name}={namespace.get(name)!r} for notebook {notebook}; it takes "
                             f"{', '.join(names)}.{hint}")
    values = {}
    for p in params:
        if p.name not in namespace:
            raise ParameterError(f"notebook {notebook} does not define its parameter {p.name}: restore its "
                                 f"parameters cell (default {p.default!r}).")
        value = namespace[p.name]
        if not p.valid(value):
            raise ParameterError(f"parameter {p.name}={value!r} is not valid for notebook {notebook}: use {p.rule}.")
        values[p.name] = value
    return values


def variant_suffix(notebook: str, values: Mapping[str, object]) -> str:
    """"--name-value" for each `variant` parameter not at its default ("" when all are): figure names get it."""
    changed = [p for p in declared(notebook) if p.variant and values.get(p.name, p.default) != p.default]
    return "".join(f"{VARIANT_MARK}{p.name}-{re.sub(r'[^A-Za-z0-9.]+', '_', str(values[p.name]))}" for p in changed)


def open_run(notebook: str, namespace: Mapping[str, object]) -> StudyRun:
    """Check every parameter of `notebook` in `namespace`, load the profile, then open the run (creates nothing)."""
    v = check(notebook, namespace)
    run = StudyRun.open(v["profile"], v["run_dir"], v["data_root"], v["partition_seed"], v["training_seed"],
                        v["key_seed"])
    run.variant = variant_suffix(notebook, v)
    return run
