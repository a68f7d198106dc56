#!/usr/bin/env python3
"""Minimal reproduction of the AOTInductor package crash (SIGSEGV on load or first run).

Standalone: needs torch with CUDA (and transformers for the DistilBERT packages), not
inferbench. Run it on the GPU machine:

    python3 scripts/aoti_repro.py                 # everything (about 4-6 min on an H100)
    python3 scripts/aoti_repro.py --quick         # two packages, the main load variants

It compiles a few tiny models with ``torch._inductor.aoti_compile_and_package`` (each in
its own process), then loads and runs every package in a fresh process per variant,
changing one thing at a time against a baseline that does what inferbench's
``torch-aoti`` benchmark job does:

- the model: an MLP, a hand-written SDPA block with a padding mask, a tiny DistilBERT
  (transformers, SDPA or eager attention), static or dynamic batch dimension;
- the loader API: ``torch._inductor.aoti_load_package`` vs
  ``torch._inductor.package.load_package``; ``run_single_threaded``;
- CUDA initialised before the load or not; ``inference_mode`` vs ``no_grad``;
- the package path absolute or relative; thread settings like the benchmark's;
- a CUDA graph captured around the loaded model (inferbench's ``cuda_graph`` option);
- PYTHONPATH as inherited or removed; onnxruntime imported first; loading in the
  process that compiled the package.

Each child prints the stage it reached with ``faulthandler`` on, so a crash shows
where (load, first run, capture) and the Python stack. The summary prints one line
per variant: ok (with the max |diff| against eager), CRASH (signal), or error.
Exit status: 0 when every variant ran, 1 when any crashed or failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SEQ = 32
BATCH = 4


# -- the children ---------------------------------------------------------------------
def stage(name: str, **info: Any) -> None:
    print(f"STAGE {name}" + (f" {json.dumps(info, sort_keys=True)}" if info else ""),
          flush=True)


def build_model(kind: str, device: str = "cuda") -> tuple[Any, list[Any]]:
    """(module, example inputs at BATCH) of a model kind, seeded; FP16 on CUDA (as the
    benchmark's rows), FP32 on the CPU (the script's self-test)."""
    import torch

    torch.manual_seed(0)
    dtype = torch.float16 if device == "cuda" else torch.float32
    if kind == "mlp":
        module = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(),
                                     torch.nn.Linear(128, 4))
        inputs = [torch.randn(BATCH, 64)]
    elif kind == "sdpa":
        module = _SdpaBlock()
        inputs = _ids_and_mask(torch)
    elif kind in ("distilbert-sdpa", "distilbert-eager"):
        import transformers

        config = transformers.AutoConfig.for_model(
            "distilbert", dim=64, hidden_dim=128, n_layers=2, n_heads=2, vocab_size=1000,
            max_position_embeddings=64)
        model = transformers.AutoModelForSequenceClassification.from_config(
            config, attn_implementation=kind.split("-", 1)[1])
        module = _Wrapper(model)
        inputs = _ids_and_mask(torch)
    else:
        raise ValueError(kind)
    module = module.to(device=device, dtype=dtype).eval()
    inputs = [t.to(device) if t.dtype == torch.int64 else t.to(device, dtype)
              for t in inputs]
    return module, inputs


def _ids_and_mask(torch: Any) -> list[Any]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(100, 1000, (BATCH, SEQ), generator=generator)
    lengths = torch.randint(SEQ // 2, SEQ + 1, (BATCH,), generator=generator)
    mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).to(torch.int64)
    return [ids * mask, mask]


class _LazyModule:
    """Placeholders replaced in _define_modules (torch is imported in children only)."""


def _define_modules() -> None:
    import torch
    import torch.nn.functional as F

    global _SdpaBlock, _Wrapper

    class SdpaBlock(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(1000, 64)
            self.qkv = torch.nn.Linear(64, 192)
            self.out = torch.nn.Linear(64, 64)
            self.head = torch.nn.Linear(64, 2)

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            ids, mask = args
            x = self.embed(ids)
            b, s, _ = x.shape
            q, k, v = self.qkv(x).view(b, s, 3, 2, 32).permute(2, 0, 3, 1, 4)
            keep = mask[:, None, None, :].to(torch.bool)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
            y = self.out(y.transpose(1, 2).reshape(b, s, 64))
            return self.head(y[:, 0])

    class Wrapper(torch.nn.Module):
        """forward(*inputs) -> logits, like inferbench's output wrapper."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=args[0], attention_mask=args[1]).logits

    _SdpaBlock = SdpaBlock
    _Wrapper = Wrapper


_SdpaBlock: Any = _LazyModule
_Wrapper: Any = _LazyModule


def child_compile(spec: dict[str, Any]) -> None:
    import faulthandler

    faulthandler.enable()
    stage("import")
    import torch

    _define_modules()
    device = spec.get("device", "cuda")
    module, inputs = build_model(spec["model"], device)
    dynamic_shapes = None
    if spec["dynamic"]:
        batch = torch.export.Dim("batch", min=1, max=16)
        dynamic_shapes = (tuple({0: batch} for _ in inputs),)
    stage("export")
    with torch.no_grad():
        exported = torch.export.export(module, tuple(inputs), dynamic_shapes=dynamic_shapes)
    stage("compile")
    start = time.perf_counter()
    torch._inductor.aoti_compile_and_package(exported, package_path=spec["package"])
    stage("compiled", seconds=round(time.perf_counter() - start, 1))
    if spec.get("load_after"):
        stage("load")
        loaded = torch._inductor.aoti_load_package(spec["package"])
        stage("run")
        with torch.inference_mode():
            out = loaded(*inputs)
        _sync(torch, device)
        with torch.inference_mode():
            expected = module(*inputs)
        stage("ran", max_abs_diff=float((out.float() - expected.float()).abs().max()))
    stage("done")


def _sync(torch: Any, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def child_load(spec: dict[str, Any]) -> None:
    import faulthandler

    faulthandler.enable()
    if spec.get("threads"):
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = "2"
    if spec.get("onnxruntime_first"):
        stage("import onnxruntime")
        import onnxruntime

        if hasattr(onnxruntime, "preload_dlls"):
            onnxruntime.preload_dlls()
    stage("import")
    import torch

    _define_modules()
    if spec.get("threads"):
        torch.set_num_threads(2)
        torch.set_num_interop_threads(1)
    device = spec.get("device", "cuda")
    if spec.get("cuda_init") == "before" and device == "cuda":
        stage("cuda init")
        torch.cuda.init()
        torch.empty(1, device="cuda")
        torch.cuda.synchronize()
    path = spec["package"]
    if spec.get("relative"):
        os.chdir(Path(path).parent)
        path = Path(path).name
    kwargs: dict[str, Any] = {}
    if spec.get("run_single_threaded"):
        kwargs["run_single_threaded"] = True
    stage("load", api=spec["api"], path=str(path), **kwargs)
    if spec["api"] == "load_package":
        from torch._inductor.package import load_package

        loaded = load_package(str(path), **kwargs)
    else:
        loaded = torch._inductor.aoti_load_package(str(path), **kwargs)
    stage("loaded", libs=_loaded_libs())
    module, inputs = build_model(spec["model"], device)
    batch = int(spec.get("batch", BATCH))
    inputs = [t[:batch].contiguous() for t in inputs]
    context = torch.inference_mode if spec.get("inference_mode", True) else torch.no_grad
    if spec.get("cuda_graph"):
        static = [t.clone() for t in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        stage("warmup on side stream")
        with torch.cuda.stream(side), context():
            for _ in range(3):
                loaded(*static)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        stage("capture")
        graph = torch.cuda.CUDAGraph()
        with context(), torch.cuda.graph(graph):
            out = loaded(*static)
        stage("replay")
        graph.replay()
    else:
        stage("run")
        with context():
            out = loaded(*inputs)
    _sync(torch, device)
    with torch.inference_mode():
        expected = module(*inputs)
    diff = float((out.float() - expected.float()).abs().max())
    stage("ran", max_abs_diff=diff, shape=list(out.shape))
    stage("done")


def _loaded_libs() -> list[str]:
    """Where the CUDA / C++ runtime libraries of this process come from."""
    wanted = ("libcudart", "libcublas", "libstdc++", "libcudnn", "libnvrtc", "libtorch_cuda")
    found: set[str] = set()
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split()[-1] if "/" in line else ""
            if any(w in path for w in wanted):
                found.add(path)
    except OSError:
        pass
    return sorted(found)


def child_env() -> None:
    import platform

    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                            "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    try:
        import torch

        info.update(torch=torch.__version__, cuda=torch.version.cuda,
                    cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            info.update(gpu=torch.cuda.get_device_name(0),
                        capability=".".join(map(str, torch.cuda.get_device_capability(0))))
        import torch._inductor.config as cfg

        info["cpp_compiler"] = getattr(cfg.cpp, "cxx", None)
    except Exception as exc:
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
    for compiler in ("c++", "g++", "gcc"):
        exe = shutil.which(compiler)
        if exe:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True)
            info[compiler] = (out.stdout.splitlines() or [""])[0]
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except Exception:
        info["transformers"] = None
    print("ENV " + json.dumps(info, sort_keys=True), flush=True)


# -- the parent -----------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    package: str
    spec: dict[str, Any] = field(default_factory=dict)
    env: str = "inherit"  # or "no-pythonpath"


@dataclass
class Outcome:
    name: str
    status: str  # ok, CRASH, error, timeout, skipped
    stage: str = ""
    detail: str = ""
    seconds: float = 0.0


def _run_child(kind: str, spec: dict[str, Any], timeout: float, env_mode: str = "inherit"
               ) -> tuple[int | None, str, str, float]:
    env = dict(os.environ)
    if env_mode == "no-pythonpath":
        env.pop("PYTHONPATH", None)
    command = [sys.executable, "-X", "faulthandler", os.path.abspath(__file__),
               f"--child={kind}", f"--spec={json.dumps(spec)}"]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=spec.get("cwd") or None)
        return done.returncode, done.stdout, done.stderr, time.perf_counter() - start
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return None, out, err, time.perf_counter() - start


def _outcome(name: str, code: int | None, out: str, err: str, seconds: float) -> Outcome:
    stages = [ln[6:] for ln in out.splitlines() if ln.startswith("STAGE ")]
    last = stages[-1] if stages else "(none)"
    last_name = last.split(" {", 1)[0]
    if code is None:
        return Outcome(name, "timeout", last_name, "", seconds)
    if code < 0:
        import signal

        try:
            signame = signal.Signals(-code).name
        except ValueError:
            signame = str(code)
        where = _crash_frame(err)
        return Outcome(name, "CRASH", last_name, f"{signame}; {where}", seconds)
    if code != 0:
        tail = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["?"]
        return Outcome(name, "error", last_name, tail[0][:240], seconds)
    ran = next((s for s in reversed(stages) if s.startswith("ran")), "")
    detail = ran.split(" ", 1)[1] if " " in ran else ""
    return Outcome(name, "ok", last_name, detail, seconds)


def _crash_frame(err: str) -> str:
    """The innermost Python frame faulthandler printed for the crashing thread."""
    lines = err.splitlines()
    for i, line in enumerate(lines):
        if (line.startswith("Current thread") and "most recent call first" in line
                and i + 1 < len(lines)):
            return lines[i + 1].strip()[:200]
    return "no Python frame printed"


def _variants(packages: dict[str, str], quick: bool, device: str = "cuda") -> list[Variant]:
    base = {"api": "aoti_load_package", "cuda_init": "after", "inference_mode": True,
            "device": device}
    out: list[Variant] = []
    for name, path in packages.items():
        model = name.rsplit("-", 1)[0]
        out.append(Variant(f"{name}: baseline", path, {**base, "model": model}))
    main = "distilbert-sdpa-dynamic"
    if main not in packages:
        return out
    path, model = packages[main], "distilbert-sdpa"
    changes: list[tuple[str, dict[str, Any], str]] = [
        ("CUDA initialised before load", {"cuda_init": "before"}, "inherit"),
        ("no_grad instead of inference_mode", {"inference_mode": False}, "inherit"),
        ("torch._inductor.package.load_package", {"api": "load_package"}, "inherit"),
        ("relative package path", {"relative": True}, "inherit"),
        ("benchmark-like threads (OMP 2, intra 2, inter-op 1)", {"threads": True}, "inherit"),
        ("batch 1 (bottom of the dynamic range)", {"batch": 1}, "inherit"),
        ("run_single_threaded=True", {"run_single_threaded": True}, "inherit"),
        ("CUDA graph capture", {"cuda_graph": True}, "inherit"),
        ("CUDA graph capture + run_single_threaded", {"cuda_graph": True,
                                                      "run_single_threaded": True}, "inherit"),
        ("PYTHONPATH removed", {}, "no-pythonpath"),
        ("onnxruntime imported first", {"onnxruntime_first": True}, "inherit"),
    ]
    if device != "cuda":
        changes = [c for c in changes if "CUDA" not in c[0]]
    if quick:
        keep = ("CUDA initialised before load", "torch._inductor.package.load_package",
                "relative package path", "CUDA graph capture + run_single_threaded",
                "PYTHONPATH removed")
        changes = [c for c in changes if c[0] in keep]
    for label, change, env in changes:
        out.append(Variant(f"{main}: {label}", path, {**base, "model": model, **change}, env))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two packages, five variants")
    parser.add_argument("--workdir", default="", help="where packages go (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per child")
    parser.add_argument("--budget", type=float, default=560,
                        help="overall seconds; variants left when it runs out are skipped")
    parser.add_argument("--json", default="", help="also write the outcomes here")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: a self-test of this script on a machine without a GPU")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--spec", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        spec = json.loads(args.spec)
        {"compile": child_compile, "load": child_load,
         "env": lambda _: child_env()}[args.child](spec)
        return 0

    started = time.perf_counter()
    code, out, err, _ = _run_child("env", {}, 120)
    env_line = next((ln[4:] for ln in out.splitlines() if ln.startswith("ENV ")), "{}")
    print("environment:", env_line, flush=True)
    info = json.loads(env_line)
    if args.device == "cuda" and not info.get("cuda_available"):
        print("no CUDA device (or torch missing): nothing to reproduce here", file=sys.stderr)
        return 2

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="aoti_repro_"))
    workdir.mkdir(parents=True, exist_ok=True)
    models = (["mlp-static", "distilbert-sdpa-dynamic"] if args.quick else
              ["mlp-static", "sdpa-dynamic", "distilbert-sdpa-dynamic",
               "distilbert-sdpa-static", "distilbert-eager-dynamic"])
    if not info.get("transformers"):
        models = [m for m in models if not m.startswith("distilbert")]
    outcomes: list[Outcome] = []

    # Compile every package, each in its own process, a few at a time.
    packages: dict[str, str] = {}
    pending = list(models)
    running: list[tuple[str, subprocess.Popen[str], float]] = []
    while pending or running:
        while pending and len(running) < 3:
            name = pending.pop(0)
            model, shape = name.rsplit("-", 1)
            path = str(workdir / f"{name}.pt2")
            spec = {"model": model, "dynamic": shape == "dynamic", "package": path,
                    "load_after": name == "distilbert-sdpa-dynamic", "device": args.device}
            proc = subprocess.Popen(
                [sys.executable, "-X", "faulthandler", os.path.abspath(__file__),
                 "--child=compile", f"--spec={json.dumps(spec)}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            running.append((name, proc, time.perf_counter()))
        time.sleep(0.5)
        for item in list(running):
            name, proc, t0 = item
            if proc.poll() is None and time.perf_counter() - t0 < args.timeout:
                continue
            if proc.poll() is None:
                proc.kill()
            out, err = proc.communicate()
            running.remove(item)
            result = _outcome(f"{name}: compile (+ load in the compiling process)"
                              if name == "distilbert-sdpa-dynamic" else f"{name}: compile",
                              proc.returncode if proc.returncode is not None else None,
                              out, err, time.perf_counter() - t0)
            outcomes.append(result)
            print(_line(result), flush=True)
            if Path(workdir / f"{name}.pt2").is_file():
                packages[name] = str(workdir / f"{name}.pt2")

    for variant in _variants({m: packages[m] for m in models if m in packages}, args.quick,
                             args.device):
        if time.perf_counter() - started > args.budget:
            outcomes.append(Outcome(variant.name, "skipped", detail="time budget"))
            print(_line(outcomes[-1]), flush=True)
            continue
        spec = {**variant.spec, "package": variant.package}
        code, out, err, seconds = _run_child("load", spec, args.timeout, variant.env)
        outcomes.append(_outcome(variant.name, code, out, err, seconds))
        print(_line(outcomes[-1]), flush=True)

    print("\nsummary (torch {} on {}):".format(info.get("torch"), info.get("gpu")))
    for outcome in outcomes:
        print("  " + _line(outcome))
    crashed = [o for o in outcomes if o.status in ("CRASH", "error", "timeout")]
    print(f"\n{len(crashed)} of {len(outcomes)} variants crashed or failed; "
          f"{time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": info,
                                               "outcomes": [asdict(o) for o in outcomes]},
                                              indent=1))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if crashed else 0


def _line(outcome: Outcome) -> str:
    return (f"{outcome.status:8s} {outcome.name}  [last stage: {outcome.stage or '-'}; "
            f"{outcome.seconds:.1f} s] {outcome.detail}")


if __name__ == "__main__":
    raise SystemExit(main())
