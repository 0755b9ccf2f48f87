"""Command line of the Flower app: one command per way to run (docs/flower.md).

    python -m fedvit_flower simulate --profile quick          # Flower's simulation engine, one client per partition
    python -m fedvit_flower deploy --profile smoke --clients 2 # SuperLink + N SuperNodes as processes on loopback

`simulate` and `deploy` start a SuperLink (and the SuperNodes) themselves, run `flwr run --stream`, check
the run's status (Flower exits 0 even for a failed run), say where the records are and stop every process
they started; they exit non-zero when the run failed or trained nothing. A client machine of a real federation
runs Flower's own `flower-supernode` (docs/flower.md). `deploy --fast-nodes` opts into fedvit_flower.fast_nodes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fedvit_flower import launch
from fedvit_flower.config import Settings, read_settings


def _run_config(args: argparse.Namespace) -> dict:
    from fedvit_utils.profiles import default_profile

    overrides = " ".join(x for x in (args.overrides, f"num_clients={args.clients}" if args.clients else "",
                                     f"rounds={args.rounds}" if args.rounds else "") if x)
    cfg = {"profile": args.profile or default_profile(), "overrides": overrides, "restart": args.restart,
           "torch-threads": args.torch_threads}
    if args.run_dir:
        cfg["run-dir"] = str(Path(args.run_dir).resolve())
    if args.key_seed is not None:
        cfg["key-seed"] = args.key_seed
    return cfg


def _records(settings: Settings) -> str:
    folder = settings.run_dir / settings.dataset
    return f"[flower] records: {folder}/federated/history.csv, metrics.json; {folder}/encryption_check.json"


def simulate(args: argparse.Namespace) -> None:
    """Flower's simulation engine (Ray): one simulated SuperNode per partition of the profile."""
    cfg = _run_config(args)
    settings = read_settings(cfg)
    cpus = f"{args.cpus_per_client:g}"  # Flower takes 2, not 2.0
    with launch.Cluster(settings.run_dir / "flower") as cluster:
        cluster.superlink(simulation=True)
        tic = time.perf_counter()
        cluster.run(cfg, f"num-supernodes={settings.profile.num_clients} client-resources-num-cpus={cpus}")
        print(f"[flower] simulation finished in {time.perf_counter() - tic:.0f} s", flush=True)
    print(_records(settings))


def deploy(args: argparse.Namespace) -> None:
    """A SuperLink and one SuperNode per partition as separate processes on this machine."""
    cfg = _run_config(args)
    settings = read_settings(cfg)
    with launch.Cluster(settings.run_dir / "flower", args.fast_nodes, args.idle_poll) as cluster:
        cluster.superlink()
        for i in range(settings.profile.num_clients):
            keys = str(settings.run_dir / "client-keys" / f"client{i:02d}") if args.keep_keys else None
            cluster.supernode(i, args.data, keys)
        tic = time.perf_counter()
        cluster.run(cfg)
        print(f"[flower] deployment finished in {time.perf_counter() - tic:.0f} s", flush=True)
    print(_records(settings))


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen command; a failed run exits non-zero with one line why."""
    ap = argparse.ArgumentParser(prog="python -m fedvit_flower", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, func in (("simulate", simulate), ("deploy", deploy)):
        p = sub.add_parser(name, help=func.__doc__)
        p.add_argument("--profile", default=None,
                       help="smoke | quick | cpu | paper, or a YAML profile; default $FEDVIT_PROFILE, else quick")
        p.add_argument("--clients", type=int, default=None, help="number of clients (default: the profile's)")
        p.add_argument("--rounds", type=int, default=None, help="rounds (default: the profile's)")
        p.add_argument("--overrides", default="", help="other profile settings, e.g. 'train_per_client=100'")
        p.add_argument("--run-dir", default=None, help="the server's run folder (default runs/flower-<profile>)")
        p.add_argument("--restart", action="store_true", help="train from the start, not from the last checkpoint")
        p.add_argument("--key-seed", type=int, default=None, help="demo keys from this seed (default: OS entropy)")
        p.add_argument("--torch-threads", type=int, default=1, help="torch threads per client (0: torch's default)")
        p.set_defaults(func=func)
    sub.choices["simulate"].add_argument("--cpus-per-client", type=float, default=1.0,
                                         help="Ray CPUs per ClientApp: 2 cores and 1 CPU each = 2 clients at a time")
    sub.choices["deploy"].add_argument("--data", default=None, help="every client's data folder (default: the "
                                       "project's)")
    sub.choices["deploy"].add_argument("--keep-keys", action="store_true",
                                       help="each client keeps its key in <run-dir>/client-keys/clientNN (owner-only)")
    sub.choices["deploy"].add_argument("--fast-nodes", action="store_true", help="warm executor and short idle "
                                       "poll on Flower's internals (flwr 1.42.* only; else Flower's own SuperNodes)")
    sub.choices["deploy"].add_argument("--idle-poll", type=float, default=0.2, help="with --fast-nodes: seconds "
                                       "between an idle SuperNode's requests (Flower's own: 3)")
    args = ap.parse_args(argv)
    try:
        args.func(args)
    except (launch.RunFailed, ValueError, OSError, TimeoutError) as exc:
        sys.exit(f"[flower] {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
