"""Command line: `python -m fedvit_utils train --profile cpu`, `... study`, `... book`, `... provenance --run-dir X`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import paths
from .profiles import DEFAULT_PROFILE, PROFILE_ENV


def _train(args: argparse.Namespace) -> None:
    from . import provenance
    from .study.run import StudyRun

    run = StudyRun.open(args.profile, args.run_dir, args.data)
    run.preflight()
    print(f"[train] provenance -> {provenance.write(run.folder, provenance.collect(run.profile, run.data_root))}")
    for dataset in args.datasets or run.profile.datasets:
        data = run.write_partition(dataset, restart=args.restart)  # notebook 01's writer; kept if recorded alike
        print(f"[train] {run.profile.name}/{dataset}: {data.num_clients} clients, device {run.device}", flush=True)
        out = run.dataset_dir(dataset)
        if not args.baseline_only:
            from .federated.server import run_federated

            run_federated(run.profile, data, out / "federated", run.device, not args.no_progress, not args.restart)
            print(f"[train] federated -> {out / 'federated'}")
        if not args.federated_only:
            from .federated.centralized import run_centralized

            run_centralized(run.profile, data, out / "centralized", run.device, not args.no_progress,
                            not args.restart)
            print(f"[train] baseline -> {out / 'centralized'}")


def _study(args: argparse.Namespace) -> None:
    from .study.runner import NotebookFailed, run_study

    try:
        seeds = {name: getattr(args, name) for name in ("partition_seed", "training_seed", "key_seed")
                 if getattr(args, name) is not None}
        # absolute: the notebook runs with another working directory than the caller of this command
        extra = {"spread_runs": [str(Path(r).resolve()) for r in args.spread_runs]} if args.spread_runs else None
        out = run_study(args.profile, args.run_dir, args.data, publish=args.publish, only=args.only, seeds=seeds,
                        extra=extra)
    except NotebookFailed as exc:
        sys.exit(f"[study] {exc}")
    print(f"[study] done: {out}")


def _book(args: argparse.Namespace) -> None:
    from .study.book import build_book

    try:
        print(f"[book] {build_book(args.profile, args.run_dir, args.out)}")
    except ModuleNotFoundError as exc:  # the book's tools are an extra (requirements-book.txt)
        sys.exit(f"[book] {exc}")


def _provenance(args: argparse.Namespace) -> None:
    from . import provenance
    from .profiles import load_profile
    from .study.runner import attach_provenance

    folder = Path(args.run_dir).resolve()
    study = folder / "study.json"
    if not folder.is_dir():
        raise FileNotFoundError(f"no run folder {folder}: pass the folder a study or training run wrote.")
    name = args.profile or (json.loads(study.read_text())["profile"] if study.exists() else None)
    if name is None:
        raise ValueError(f"{folder} has no study.json naming its profile: pass --profile.")
    record = provenance.collect(load_profile(name), args.data, when="after the run, by `python -m fedvit_utils "
                                "provenance`: the code and packages at that moment")
    print(f"[provenance] {provenance.write(folder, record)}")
    if args.publish:
        dest = paths.FIGURES_DIR / record["profile"]["name"]
        if not dest.is_dir():
            raise FileNotFoundError(f"nothing published in {dest}: run the study with --publish first.")
        print(f"[provenance] attached to {len(attach_provenance(dest, record))} files in {dest}")
    print(json.dumps(provenance.short(record), indent=1))


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen command."""
    ap = argparse.ArgumentParser(prog="python -m fedvit_utils", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    profile_help = (f"smoke | quick | cpu | paper, or a YAML file (base: <profile> plus changes); default "
                    f"${PROFILE_ENV}, else {DEFAULT_PROFILE}")
    t = sub.add_parser("train", help="federated run and centralized baseline for a profile")
    t.add_argument("--profile", default=None, help=profile_help)
    t.add_argument("--run-dir", default=None, help="run folder (default runs/<profile>)")
    t.add_argument("--data", default=None, help=f"data folder (default ${paths.DATA_ENV}, then the project's)")
    t.add_argument("--datasets", nargs="*", help="override the profile's datasets")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--restart", action="store_true", help="ignore existing checkpoints")
    t.add_argument("--federated-only", action="store_true")
    t.add_argument("--baseline-only", action="store_true")
    t.set_defaults(func=_train)
    s = sub.add_parser("study", help="run the notebooks in order with papermill")
    s.add_argument("--profile", default=None, help=profile_help)
    s.add_argument("--run-dir", default=None)
    s.add_argument("--data", default=None)
    s.add_argument("--only", nargs="*", help="run only notebooks whose names start with these")
    s.add_argument("--publish", action=argparse.BooleanOptionalAction, default=None,
                   help="copy figures to figures/<profile>/ (default: yes except for smoke)")
    for name in ("partition", "training", "key"):
        s.add_argument(f"--{name}-seed", type=int, default=None, help=f"override the profile's {name}_seed")
    s.add_argument("--spread-runs", nargs="*", help="run folders for Table 1's spread (notebook 07)")
    s.set_defaults(func=_study)
    b = sub.add_parser("book", help="a static HTML book of a run's executed notebooks and the docs (no execution)")
    b.add_argument("--profile", default=None, help=profile_help)
    b.add_argument("--run-dir", default=None, help="run folder with executed notebooks (default runs/<profile>)")
    b.add_argument("--out", default=None, help="where the HTML goes (default <run folder>/book)")
    b.set_defaults(func=_book)
    p = sub.add_parser("provenance", help="record commit, packages, data fingerprint, profile, hardware of a run")
    p.add_argument("--run-dir", required=True, help="the run folder (its study.json names the profile)")
    p.add_argument("--profile", default=None, help="the run's profile, where the folder has no study.json")
    p.add_argument("--data", default=None, help=f"data folder (default ${paths.DATA_ENV}, then the project's)")
    p.add_argument("--publish", action="store_true",
                   help="also write it into figures/<profile>/ and under each published Markdown table")
    p.set_defaults(func=_provenance)
    args = ap.parse_args(argv)
    from .federated.checkpoints import NothingTrained
    from .files import DamagedFile, FolderInUse

    try:
        args.func(args)
    except (NothingTrained, DamagedFile, FolderInUse, ValueError, OSError) as exc:
        # Expected failures get one line naming the problem and the fix, and a non-zero exit.
        sys.exit(f"[{args.command}] {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
