#!/usr/bin/env python3
"""Minimal reproduction of the AOTInductor package crash (SIGSEGV when a package loads).

Standalone: needs torch with CUDA (and transformers for the DistilBERT packages), not
inferbench. Run it on the GPU machine:

    python3 scripts/aoti_repro.py            # 4 packages, 16 loads (about 6 min on an H100)
    python3 scripts/aoti_repro.py --quick    # 2 packages, 4 loads

It compiles tiny models with ``torch._inductor.aoti_compile_and_package`` (each in its
own process): an MLP (static batch) and a tiny DistilBERT from transformers (SDPA
attention, dynamic batch), each twice, with Inductor's default C++ compiler (``$CXX``
when set, ``@cxx``) and with ``g++`` from PATH (``@gxx``). Then it loads and runs every
package in a fresh process, and varies one thing at a time:

- on the ``@cxx`` DistilBERT package, what a load could change: ``CXX=g++`` at load
  time, CUDA initialised first, ``torch._inductor.package.load_package`` instead of
  ``aoti_load_package``, PYTHONPATH removed;
- on the ``@gxx`` one, the benchmark's conditions: ``no_grad``, a relative path, the
  benchmark's thread settings, batch 1, ``run_single_threaded``, a CUDA graph captured
  around the package (with and without ``run_single_threaded``), onnxruntime first.

Each child prints the stage it reached with ``faulthandler`` on, so a crash shows
where and the Python frame. The summary has one line per job: ok (with the max |diff|
against eager), CRASH (signal), error, timeout or skipped (time budget).

Found on the H100 (torch 2.11.0+cu130, GCC 13.3): ``$CXX`` was ``/opt/gcc/bin/g++``, a
shell script running the same GCC with its own assembler and linker driver
(``-B/opt/gcc/bin``). Every package it built, the MLP included, crashed the loading
process in ``_load_aoti`` (also with ``CXX=g++`` at load time); packages built with
``/usr/bin/g++`` loaded and matched eager. inferbench's ``torch-aoti`` backend therefore
builds with ``g++`` from PATH (its ``cxx`` option).
Exit status: 0 when every job ran, 1 when any crashed or failed.
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
    if spec.get("cxx"):
        import torch._inductor.config as inductor_config

        inductor_config.cpp.cxx = (None, spec["cxx"])
        os.environ["CXX"] = spec["cxx"]
    module, inputs = build_model(spec["model"], device)
    dynamic_shapes = None
    if spec["dynamic"]:
        batch = torch.export.Dim("batch", min=1, max=16)
        dynamic_shapes = (tuple({0: batch} for _ in inputs),)
    stage("export")
    with torch.no_grad():
        exported = torch.export.export(module, tuple(inputs), dynamic_shapes=dynamic_shapes)
    import torch._inductor.config as inductor_config

    stage("compile", cxx=str(inductor_config.cpp.cxx[-1]))
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
                            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                            "CXX": os.environ.get("CXX", "")}
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
# Compilers a package can be built with: Inductor's default (which is $CXX when set)
# and g++ as found on PATH. On the H100 machine $CXX was a wrapper script around the
# system GCC with its own assembler and linker driver (-B/opt/gcc/bin).
COMPILERS = {"cxx": "", "gxx": "g++"}


@dataclass
class Job:
    name: str
    kind: str  # compile or load
    spec: dict[str, Any]
    env: dict[str, str | None] = field(default_factory=dict)  # None: remove the variable


@dataclass
class Outcome:
    name: str
    status: str  # ok, CRASH, error, timeout, skipped
    stage: str = ""
    detail: str = ""
    seconds: float = 0.0


def _command(job: Job) -> list[str]:
    return [sys.executable, "-X", "faulthandler", os.path.abspath(__file__),
            f"--child={job.kind}", f"--spec={json.dumps(job.spec)}"]


def _environment(job: Job) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in job.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


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


def run_jobs(jobs: list[Job], parallel: int, timeout: float, deadline: float
             ) -> list[Outcome]:
    """Run the jobs, ``parallel`` at a time, each in its own process; a job not started
    before ``deadline`` (perf_counter) is skipped. Prints each outcome as it comes."""
    outcomes: dict[str, Outcome] = {}
    pending = list(jobs)
    running: list[tuple[Job, subprocess.Popen[str], float]] = []
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            if time.perf_counter() > deadline:
                outcomes[job.name] = Outcome(job.name, "skipped", detail="time budget")
                print(_line(outcomes[job.name]), flush=True)
                continue
            proc = subprocess.Popen(_command(job), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=_environment(job),
                                    cwd=job.spec.get("cwd") or None)
            running.append((job, proc, time.perf_counter()))
        time.sleep(0.2)
        for item in list(running):
            job, proc, started = item
            if proc.poll() is None and time.perf_counter() - started < timeout:
                continue
            timed_out = proc.poll() is None
            if timed_out:
                proc.kill()
            out, err = proc.communicate()
            running.remove(item)
            outcomes[job.name] = _outcome(job.name, None if timed_out else proc.returncode,
                                          out, err, time.perf_counter() - started)
            print(_line(outcomes[job.name]), flush=True)
    return [outcomes[job.name] for job in jobs]


def package_names(quick: bool) -> list[str]:
    models = (["distilbert-sdpa-dynamic"] if quick else
              ["mlp-static", "distilbert-sdpa-dynamic"])
    return [f"{model}@{compiler}" for model in models for compiler in COMPILERS]


def compile_jobs(names: list[str], workdir: Path, device: str) -> list[Job]:
    jobs = []
    for name in names:
        model_shape, compiler = name.split("@")
        model, shape = model_shape.rsplit("-", 1)
        spec = {"model": model, "dynamic": shape == "dynamic", "device": device,
                "package": str(workdir / f"{name}.pt2"), "cxx": COMPILERS[compiler],
                "load_after": model.startswith("distilbert")}
        label = " (+ load in the compiling process)" if spec["load_after"] else ""
        jobs.append(Job(f"{name}: compile{label}", "compile", spec))
    return jobs


def load_jobs(packages: dict[str, str], quick: bool, device: str = "cuda") -> list[Job]:
    base = {"api": "aoti_load_package", "cuda_init": "after", "inference_mode": True,
            "device": device}
    jobs = [Job(f"{name}: load", "load", {**base, "model": name.rsplit("-", 1)[0],
                                          "package": path})
            for name, path in packages.items()]
    model = "distilbert-sdpa"
    # On the package built with Inductor's default compiler: does anything at load help?
    on_default: list[tuple[str, dict[str, Any], dict[str, str | None]]] = [
        ("CXX=g++ when loading", {}, {"CXX": "g++"}),
        ("CUDA initialised before load", {"cuda_init": "before"}, {}),
        ("torch._inductor.package.load_package", {"api": "load_package"}, {}),
        ("PYTHONPATH removed", {}, {"PYTHONPATH": None}),
    ]
    # On the package built with g++: does it survive the benchmark's conditions?
    on_gxx: list[tuple[str, dict[str, Any], dict[str, str | None]]] = [
        ("no_grad instead of inference_mode", {"inference_mode": False}, {}),
        ("relative package path", {"relative": True}, {}),
        ("benchmark-like threads (OMP 2, intra 2, inter-op 1)", {"threads": True}, {}),
        ("batch 1 (bottom of the dynamic range)", {"batch": 1}, {}),
        ("run_single_threaded=True", {"run_single_threaded": True}, {}),
        ("CUDA graph capture", {"cuda_graph": True}, {}),
        ("CUDA graph capture + run_single_threaded",
         {"cuda_graph": True, "run_single_threaded": True}, {}),
        ("onnxruntime imported first", {"onnxruntime_first": True}, {}),
    ]
    if quick:
        on_default = on_default[:1]
        on_gxx = [v for v in on_gxx if v[0] == "CUDA graph capture + run_single_threaded"]
    if device != "cuda":
        on_default = [v for v in on_default if "CUDA" not in v[0]]
        on_gxx = [v for v in on_gxx if "CUDA" not in v[0]]
    for suffix, variants in (("cxx", on_default), ("gxx", on_gxx)):
        name = f"distilbert-sdpa-dynamic@{suffix}"
        if name not in packages:
            continue
        for label, change, env in variants:
            jobs.append(Job(f"{name}: {label}", "load",
                            {**base, "model": model, "package": packages[name], **change},
                            env))
    return jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one model, both compilers, four loads")
    parser.add_argument("--workdir", default="", help="where packages go (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per child")
    parser.add_argument("--parallel", type=int, default=4, help="children at a time")
    parser.add_argument("--budget", type=float, default=540,
                        help="overall seconds; jobs not started by then are skipped")
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
    deadline = started + args.budget
    env_job = Job("env", "env", {})
    done = subprocess.run(_command(env_job), capture_output=True, text=True, timeout=120)
    env_line = next((ln[4:] for ln in done.stdout.splitlines() if ln.startswith("ENV ")), "{}")
    print("environment:", env_line, flush=True)
    info = json.loads(env_line)
    if args.device == "cuda" and not info.get("cuda_available"):
        print("no CUDA device (or torch missing): nothing to reproduce here", file=sys.stderr)
        return 2

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="aoti_repro_"))
    workdir.mkdir(parents=True, exist_ok=True)
    names = package_names(args.quick)
    if not info.get("transformers"):
        names = [n for n in names if not n.startswith("distilbert")]
    outcomes = run_jobs(compile_jobs(names, workdir, args.device), args.parallel,
                        args.timeout, deadline)
    packages = {n: str(workdir / f"{n}.pt2") for n in names
                if (workdir / f"{n}.pt2").is_file()}
    outcomes += run_jobs(load_jobs(packages, args.quick, args.device), args.parallel,
                         args.timeout, deadline)

    print("\nsummary (torch {} on {}; CXX={}):".format(
        info.get("torch"), info.get("gpu"), info.get("CXX") or "(unset)"))
    for outcome in outcomes:
        print("  " + _line(outcome))
    crashed = [o for o in outcomes if o.status in ("CRASH", "error", "timeout")]
    print(f"\n{len(crashed)} of {len(outcomes)} jobs crashed or failed; "
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
