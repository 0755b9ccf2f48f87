"""Command line: `python -m fedvit_serve serve` (make serve) and `python -m fedvit_serve demo` (make serve-demo)."""

from __future__ import annotations

import argparse
import sys

from .wire import MAX_MODEL_BYTES, MAX_QUERY_BYTES


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen command."""
    ap = argparse.ArgumentParser(prog="python -m fedvit_serve", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the store's encrypted models on loopback until Ctrl-C")
    s.add_argument("--store", default="runs/serve/store", help="model store folder (default runs/serve/store)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    s.add_argument("--port", type=int, default=0, help="port (default: a free one, printed at start)")
    s.add_argument("--replicas", type=int, default=1, help="Serve replicas of the model deployment")
    s.add_argument("--max-models", type=int, default=16, help="loaded models kept per replica (LRU)")
    s.add_argument("--max-batch", type=int, default=16, help="requests gathered into one batch (serve.batch)")
    s.add_argument("--batch-wait-s", type=float, default=0.002, help="longest wait for a batch to fill")
    s.add_argument("--torch-threads", type=int, default=0, help="torch threads per replica (0: torch's default)")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--max-model-bytes", type=int, default=MAX_MODEL_BYTES, help="largest upload body")
    s.add_argument("--max-query-bytes", type=int, default=MAX_QUERY_BYTES, help="largest query body")
    d = sub.add_parser("demo", help="end to end on loopback: clients encrypt, upload, query; counts Eq. 14 matches")
    d.add_argument("--profile", default="smoke", help="the run's profile (default smoke)")
    d.add_argument("--run-dir", default=None, help="run folder (default runs/<profile>; trained if not finished)")
    d.add_argument("--data", default=None, help="data folder (default $FEDVIT_DATA, then the project's)")
    d.add_argument("--clients", type=int, default=2, help="clients that upload and query (at least 2)")
    d.add_argument("--images", type=int, default=64, help="test images each client sends")
    args = ap.parse_args(argv)
    if args.command == "serve":
        from .server import serve_forever

        settings = {k: getattr(args, k) for k in ("host", "port", "replicas", "max_models", "max_batch",
                                                  "batch_wait_s", "torch_threads", "device", "max_model_bytes",
                                                  "max_query_bytes")}
        serve_forever(args.store, **settings)
    else:
        from .demo import run_demo

        sys.exit(0 if run_demo(args.profile, args.run_dir, args.data, args.clients, args.images) else 1)


if __name__ == "__main__":
    main()
