"""Sub-commands of the serving stage (``python -m inferbench serve ...``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


def cmd_serve_traffic(args: argparse.Namespace) -> None:
    from inferbench.prepare.model import read_json
    from inferbench.serve.traffic import build_traffic

    build_traffic(Path(args.model_dir), read_json(Path(args.card)), json.loads(args.settings),
                  _path_or_none(args.text), Path(args.out), _path_or_none(args.tokenizer))


def cmd_traffic_tokenizer(args: argparse.Namespace) -> None:
    from inferbench.serve.tokenizer import save_tokenizer

    record = save_tokenizer(args.source, Path(args.out))
    print(json.dumps(record, indent=2, sort_keys=True))


def cmd_serve_reference(args: argparse.Namespace) -> None:
    from inferbench.measure.launches import set_thread_env

    set_thread_env(args.threads)
    from inferbench.prepare.model import read_json
    from inferbench.serve.traffic import compute_traffic_reference

    compute_traffic_reference(Path(args.model_dir), read_json(Path(args.card)),
                              Path(args.traffic), Path(args.out), args.threads)


def _paths(args: argparse.Namespace) -> object:
    from inferbench.serve.job import ServePaths

    return ServePaths(model_dir=Path(args.model_dir), card=Path(args.card),
                      traffic=Path(args.traffic), reference=Path(args.reference),
                      log_dir=Path(args.log_dir), onnx=_path_or_none(args.onnx),
                      build_manifest=_path_or_none(args.build))


def cmd_serve(args: argparse.Namespace) -> None:
    """One serving job in a fresh child process; an error row if the child dies. This
    process imports no runtime."""
    from inferbench.cli import _crash_hint, _run_in_worker
    from inferbench.serve.job import run_serve_parent

    settings = json.loads(args.settings)
    out = Path(args.out)
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)

    def launch() -> str | None:
        how = _run_in_worker("serve-worker", args, out)
        return None if how is None else how + _crash_hint(settings)

    run_serve_parent(settings, args.model, args.target, out, launch)


def cmd_serve_worker(args: argparse.Namespace) -> None:
    settings = json.loads(args.settings)
    from inferbench.measure.launches import set_thread_env

    set_thread_env(int(settings["threads"]))
    from inferbench.serve.job import ServePaths, serve_worker

    paths = _paths(args)
    assert isinstance(paths, ServePaths)
    serve_worker(settings, paths, args.model, args.target, Path(args.out))


def cmd_serve_report(args: argparse.Namespace) -> None:
    from inferbench.serve.report import write_serving_report

    write_serving_report([Path(p) for p in args.results], [Path(p) for p in args.bench],
                         json.loads(args.context), Path(args.table), Path(args.csv),
                         Path(args.findings), Path(args.plots_dir))


def add_serve_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve-traffic", help="request lengths (and ids) of the serving stage")
    for arg in ("model-dir", "card", "settings", "out"):
        p.add_argument(f"--{arg}", required=True)
    p.add_argument("--text", help="text file, one request a line")
    p.add_argument("--tokenizer", help="tokenizer folder (used when the model has none)")
    p.set_defaults(func=cmd_serve_traffic)

    p = sub.add_parser("traffic-tokenizer",
                       help="save the traffic's tokenizer (package:<name> or a folder)")
    p.add_argument("--source", required=True, help="scenarios.traffic.tokenizer")
    p.add_argument("--out", required=True, help="folder to save it into")
    p.set_defaults(func=cmd_traffic_tokenizer)

    p = sub.add_parser("serve-reference", help="FP32 eager output of every request, unpadded")
    for arg in ("model-dir", "card", "traffic", "out"):
        p.add_argument(f"--{arg}", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_serve_reference)

    for name, func in (("serve", cmd_serve), ("serve-worker", cmd_serve_worker)):
        p = sub.add_parser(name, help="one serving job (LoadGen scenario)" if name == "serve"
                           else argparse.SUPPRESS)
        for arg in ("settings", "model-dir", "card", "traffic", "reference", "log-dir", "out",
                    "model", "target"):
            p.add_argument(f"--{arg}", required=True)
        p.add_argument("--onnx")
        p.add_argument("--build")
        p.set_defaults(func=func)

    p = sub.add_parser("serve-report", help="serving table, CSV rows, plots and findings")
    p.add_argument("--results", nargs="+", required=True)
    p.add_argument("--bench", nargs="*", default=[], help="bench results (batch ranking)")
    p.add_argument("--context", required=True, help="JSON: prices, latency target, ...")
    for arg in ("table", "csv", "findings", "plots-dir"):
        p.add_argument(f"--{arg}", required=True)
    p.set_defaults(func=cmd_serve_report)
