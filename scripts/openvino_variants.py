"""OpenVINO configurations timed interleaved in one process, with parity.

On a machine whose speed drifts by 10-30% over minutes (and that other work may load),
two configurations are only comparable when timed in the same rounds: this script
compiles every variant once per batch size, then times them round-robin (``--rounds``
rounds, each variant ``--iters`` calls per round, in a rotated order), and reports per
variant the median latency, the median over rounds of its ratio to the reference
variant timed in the same round, the same ratio to torch eager FP32 (the speedup), and
its parity against ONNX Runtime FP32 on the same inputs (max abs logit difference,
label agreement) against the config's tolerances. It reads /proc/stat around every
variant's slot: a slot in which other processes used ``--quiet`` cores or more is left
out of the medians (unless fewer than 3 rounds were quiet; the ``rounds`` column says
how many were used), and each slot waits up to ``--wait-quiet`` seconds for a quiet
machine. ``--peak`` times one GEMM of the model's FFN shape per precision instead: the
ceiling a whole-model latency cannot beat on these threads.

Inputs are a prepared results folder (``results/onnx/<model>/plain.onnx``, the
workflow's OpenVINO IRs under ``results/engines/<target>/<model>/``, the inputs under
``results/inputs/<model>/``); IRs this script quantizes itself are cached under
``--cache``. Example::

    .venv/bin/python scripts/openvino_variants.py \\
        --results /work/runD/results --batches 1 16 --rounds 5 \\
        --variants wf-int8-f32 wf-int8-bf16 wf-int8-auto torch-fp32

``--list`` prints the variants. A variant is a model (an IR) and a compile config.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
THREADS = 2
# Models: how each IR is made. "wf-*" are the workflow's own builds; "q-*" are NNCF
# quantizations of the plain ONNX export (or of torch via ov.convert_model) made here.
QUANTIZATIONS: dict[str, dict[str, Any]] = {
    "q-default": {},                                   # what the workflow does (mixed, SQ on)
    "q-performance": {"preset": "performance"},
    "q-nosq": {"smooth_quant": False},
    "q-fastbc-off": {"fast_bias_correction": False},
    "q-sq-0.95": {"sq_alpha": 0.95},
    "q-noattn": {"ignore_attention_matmuls": True},   # Q/K/V into SDPA left in float
    "q-torch": {"source": "torch"},                    # ov.convert_model on the torch model
    "q-fused": {"source": "fused"},                    # the ORT-fused ONNX graph
}


@dataclass
class Variant:
    name: str
    # "wf-int8", "wf-fp32", a QUANTIZATIONS key, "torch", "ort", or "backend:<build>"
    model: str
    config: dict[str, Any] = field(default_factory=dict)
    static: bool = True              # reshape to the batch's shape before compiling
    precision: str = "int8"          # which parity tolerance applies
    share_inputs: bool = True


def _base(hint: str | None, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": THREADS, "NUM_STREAMS": 1,
                              "PERFORMANCE_HINT": "LATENCY"}
    if hint is not None:
        config["INFERENCE_PRECISION_HINT"] = hint
    config.update(extra)
    return config


VARIANTS = {v.name: v for v in [
    Variant("torch-fp32", "torch", precision="fp32"),
    Variant("ort-fp32", "ort", precision="fp32"),
    # the workflow's own backend class (options as in a config entry) on the
    # workflow's IRs: the rows as the benchmark jobs run them
    Variant("backend-int8", "backend:openvino-int8"),
    Variant("backend-int8-auto", "backend:openvino-int8", {"float_precision": "auto"}),
    Variant("backend-fp32", "backend:openvino-fp32", precision="fp32"),
    Variant("backend-bf16", "backend:openvino-fp32", precision="bf16"),
    # the workflow's INT8 IR
    Variant("wf-int8-f32", "wf-int8", _base("f32")),           # the workflow's row today
    Variant("wf-int8-bf16", "wf-int8", _base("bf16"), precision="int8"),
    Variant("wf-int8-auto", "wf-int8", _base(None)),             # no precision hint
    Variant("wf-int8-f32-dyn", "wf-int8", _base("f32"), static=False),
    Variant("wf-int8-bf16-dyn", "wf-int8", _base("bf16"), static=False),
    Variant("wf-int8-bf16-tput", "wf-int8",
            {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "THROUGHPUT",
             "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "bf16"}),
    Variant("wf-int8-bf16-nopin", "wf-int8", _base("bf16", ENABLE_CPU_PINNING=False)),
    Variant("wf-int8-bf16-pin", "wf-int8", _base("bf16", ENABLE_CPU_PINNING=True)),
    Variant("wf-int8-bf16-plain", "wf-int8", {"INFERENCE_PRECISION_HINT": "bf16"}),
    Variant("wf-int8-bf16-copy", "wf-int8", _base("bf16"), share_inputs=False),
    Variant("wf-int8-f32-copy", "wf-int8", _base("f32"), share_inputs=False),
    # the workflow's FP32 IR
    Variant("wf-fp32-f32", "wf-fp32", _base("f32"), precision="fp32"),
    Variant("wf-fp32-bf16", "wf-fp32", _base("bf16"), precision="bf16"),
    Variant("wf-fp32-auto", "wf-fp32", _base(None), precision="bf16"),
    # NNCF settings, each with f32 and bf16 float layers
    *[Variant(f"{q}-{hint}", q, _base(hint)) for q in QUANTIZATIONS for hint in ("f32", "bf16")],
]}


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


# -- models --------------------------------------------------------------------------------
def quantize(name: str, results: Path, model: str, cache: Path) -> Path:
    """NNCF post-training INT8 of the plain (or fused / torch) model, cached as an IR."""
    import nncf
    import openvino as ov

    out = cache / name / "model.xml"
    if out.exists():
        return out
    opts = QUANTIZATIONS[name]
    source = opts.get("source", "plain")
    if source == "torch":
        import torch

        from inferbench.prepare.model import read_json
        from inferbench.prepare.modeling import load_wrapper

        card = read_json(results / "models" / model / "card.json")
        wrapper = load_wrapper(results / "models" / model / "hf", card).eval()
        example = {k: torch.from_numpy(v) for k, v in load_batch(results, model, 1).items()}
        with torch.no_grad():
            ov_model = ov.convert_model(wrapper, example_input=tuple(example.values()))
        for port, name_ in zip(ov_model.inputs, example, strict=True):
            port.get_tensor().set_names({name_})
    elif source == "fused":
        # ONNX Runtime's transformer-optimized graph (contrib Attention, SkipLayerNorm...)
        from inferbench.prepare.model import read_json
        from inferbench.prepare.onnx import optimize_onnx

        fused = cache / "fused.onnx"
        if not fused.exists():
            card = read_json(results / "models" / model / "card.json")
            optimize_onnx(results / "onnx" / model / "plain.onnx", fused, card, 1, False)
        ov_model = ov.convert_model(str(fused))
    else:
        ov_model = ov.convert_model(str(results / "onnx" / model / "plain.onnx"))
    names = [p.get_any_name() for p in ov_model.inputs]
    calib = np.load(results / "inputs" / model / "seq128_bs32.npz")
    items = [{n: np.ascontiguousarray(calib[n][i:i + 1]) for n in names}
             for i in range(len(calib[names[0]]))]
    sq_alpha = -1.0 if opts.get("smooth_quant", True) is False else opts.get("sq_alpha")
    advanced = nncf.AdvancedQuantizationParameters(
        smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=sq_alpha)
    ) if sq_alpha is not None else None
    ignored = None
    if opts.get("ignore_attention_matmuls"):
        # the attention matmuls (fused as ScaledDotProductAttention) stay in float
        ignored = nncf.IgnoredScope(types=["ScaledDotProductAttention"], validate=False)
    preset = (nncf.QuantizationPreset.PERFORMANCE if opts.get("preset") == "performance"
              else nncf.QuantizationPreset.MIXED)
    start = time.perf_counter()
    quantized = nncf.quantize(ov_model, nncf.Dataset(items), preset=preset,
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items),
                              fast_bias_correction=opts.get("fast_bias_correction", True),
                              ignored_scope=ignored, advanced_parameters=advanced)
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    log(f"quantized {name} in {time.perf_counter() - start:.0f} s")
    return out


def load_batch(results: Path, model: str, batch: int) -> dict[str, np.ndarray]:
    with np.load(results / "inputs" / model / f"seq128_bs{batch}.npz") as data:
        return {k: np.ascontiguousarray(data[k]) for k in data.files}


def ir_path(key: str, args: argparse.Namespace) -> Path:
    if key.startswith("wf-"):
        return args.results / "engines" / args.target / args.model / f"openvino-{key[3:]}" / \
            "model.xml"
    return quantize(key, args.results, args.model, args.cache)


Runner = Callable[[], np.ndarray]


def make_runner(variant: Variant, inputs: dict[str, np.ndarray], args: argparse.Namespace,
                core: Any) -> tuple[Runner, dict[str, Any]]:
    if variant.model == "torch":
        import torch

        from inferbench.prepare.model import read_json
        from inferbench.prepare.modeling import load_wrapper

        card = read_json(args.results / "models" / args.model / "card.json")
        wrapper = load_wrapper(args.results / "models" / args.model / "hf", card).eval()
        tensors = [torch.from_numpy(inputs[n]) for n in card["input_names"]]

        def run_torch() -> np.ndarray:
            with torch.inference_mode():
                return wrapper(*tensors).float().numpy()
        return run_torch, {}
    if variant.model.startswith("backend:"):
        # the workflow's own backend class and code path (prepare_inputs, run, to_host);
        # the BF16 row compiles the FP32 IR (the same file an openvino-bf16 build makes)
        from inferbench.backends import registry
        from inferbench.backends.base import Artifacts
        from inferbench.config import BackendSpec
        from inferbench.prepare.model import read_json

        build_name = variant.model.split(":", 1)[1]
        spec = BackendSpec(name=variant.name, kind="openvino", device="cpu",
                           precision=variant.precision, options=dict(variant.config))
        registry.get("openvino").check_spec(spec)
        backend = registry.get("openvino")(spec, THREADS)
        build = args.results / "engines" / args.target / args.model / build_name
        backend.load(Artifacts(model_dir=args.results / "models" / args.model / "hf",
                               card=read_json(args.results / "models" / args.model /
                                              "card.json"), onnx=None, build=build))
        backend.prepare_inputs(inputs)

        def run_backend() -> np.ndarray:
            return backend.to_host(backend.run(backend.prepare_inputs(inputs)))
        return run_backend, {"runs_as": backend.runs_as, "ops": backend.op_precisions}
    if variant.model == "ort":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(args.results / "onnx" / args.model / "plain.onnx"),
                                       options, providers=["CPUExecutionProvider"])
        feed = {i.name: inputs[i.name] for i in session.get_inputs()}
        return lambda: session.run(None, feed)[0], {}
    model = core.read_model(str(ir_path(variant.model, args)))
    names = [p.get_any_name() for p in model.inputs]
    if variant.static:
        model.reshape({n: list(inputs[n].shape) for n in names})
    compiled = core.compile_model(model, "CPU", variant.config)
    request = compiled.create_infer_request()
    feed = {n: inputs[n] for n in names}
    share = variant.share_inputs

    def run_ov() -> np.ndarray:
        return np.asarray(request.infer(feed, share_inputs=share).to_tuple()[0],
                          dtype=np.float32)

    from inferbench.backends.openvino import runtime_precisions, type_name

    info = {"runs_as": type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
            "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "streams": str(compiled.get_property("NUM_STREAMS")),
            "ops": runtime_precisions(compiled)}
    return run_ov, info


# -- timing --------------------------------------------------------------------------------
def busy_s() -> float:
    """CPU seconds the whole machine has been busy (/proc/stat), minus this process's."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK") - (own.user + own.system)


def wait_quiet(threshold: float, limit_s: float) -> None:
    """Wait (up to limit_s) until other processes use fewer than threshold cores over
    half a second: rounds then start, and more often stay, quiet."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        busy0, wall0 = busy_s(), time.perf_counter()
        time.sleep(0.5)
        if (busy_s() - busy0) / (time.perf_counter() - wall0) < threshold:
            return


def time_round(runner: Runner, iters: int) -> list[float]:
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        runner()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def compare(args: argparse.Namespace, batch: int) -> list[dict[str, Any]]:
    import openvino as ov

    core = ov.Core()
    inputs = load_batch(args.results, args.model, batch)
    reference = VARIANTS["ort-fp32"]
    ref_runner, _ = make_runner(reference, inputs, args, core)
    ref_logits = ref_runner()
    del ref_runner
    runners: dict[str, Runner] = {}
    infos: dict[str, dict[str, Any]] = {}
    parity: dict[str, dict[str, Any]] = {}
    for name in args.variants:
        runner, info = make_runner(VARIANTS[name], inputs, args, core)
        out = runner()
        for _ in range(args.warmup):
            runner()
        runners[name], infos[name] = runner, info
        tol = args.parity[VARIANTS[name].precision]
        max_abs = float(np.max(np.abs(out - ref_logits)))
        agree = float(np.mean(out.argmax(-1) == ref_logits.argmax(-1)))
        parity[name] = {"max_abs": max_abs, "agreement": agree,
                        "ok": max_abs <= tol["max_abs"] and agree >= tol["min_agreement"]}
        log(f"bs{batch} {name}: {info.get('runs_as', '')} max_abs {max_abs:.4f} "
            f"agree {agree:.2f}")
    iters = args.iters or max(2, round(64 / batch ** 0.5 / 4))
    names = list(runners)
    # per variant and round: the round's samples, and the cores other processes used
    # while they were taken (a slot is quiet below --quiet)
    slots: dict[str, list[list[float]]] = {n: [] for n in names}
    others: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate: no fixed slot
        for name in order:
            wait_quiet(args.quiet, args.wait_quiet)
            busy0, wall0 = busy_s(), time.perf_counter()
            slots[name].append(time_round(runners[name], iters))
            others[name].append((busy_s() - busy0) / (time.perf_counter() - wall0))
        log(f"bs{batch} round {r}: " + " ".join(
            f"{n}={statistics.median(slots[n][-1]):.1f}"
            f"{'*' if others[n][-1] >= args.quiet else ''}" for n in names)
            + "  (* other processes used the CPU)")

    def quiet_rounds(*variants: str) -> list[int]:
        """Rounds in which every one of ``variants`` was timed quiet; every round when
        fewer than 3 were (the table says how many were used)."""
        quiet = [r for r in range(args.rounds)
                 if all(others[v][r] < args.quiet for v in variants)]
        return quiet if len(quiet) >= 3 else list(range(args.rounds))

    def ratio(num: str, den: str) -> float:
        """Median over rounds of num/den, both timed in the same round, both quiet."""
        return statistics.median(statistics.median(slots[num][r]) /
                                 statistics.median(slots[den][r])
                                 for r in quiet_rounds(num, den))

    rows = []
    for name in names:
        used = quiet_rounds(name, args.reference)
        rows.append({"batch": batch, "variant": name,
                     "p50_ms": statistics.median(t for r in quiet_rounds(name)
                                                 for t in slots[name][r]),
                     "ratio": ratio(name, args.reference),
                     "speedup_vs_torch": (ratio("torch-fp32", name)
                                          if "torch-fp32" in slots else None),
                     "iters": iters, "rounds": args.rounds, "rounds_used": len(used),
                     "others_cores": others[name],
                     **{f"parity_{k}": v for k, v in parity[name].items()},
                     **infos[name]})
    return rows


def gemm_peak(rounds: int) -> None:
    """What one GEMM of the model's shape reaches here with THREADS threads (f32, bf16,
    int8 through FakeQuantize): the ceiling any whole-model latency must respect."""
    import openvino as ov
    import openvino.opset13 as ops

    m, k, n = 2048, 768, 3072
    rng = np.random.default_rng(0)
    x = ops.parameter([m, k], np.float32, name="x")
    w = ops.constant(rng.standard_normal((k, n)).astype(np.float32))

    def fq(node: Any, lo: float, hi: float) -> Any:
        low, high = ops.constant(np.float32(lo)), ops.constant(np.float32(hi))
        return ops.fake_quantize(node, low, high, low, high, 256)

    models = {"f32": (ops.matmul(x, w, False, False), "f32"),
              "bf16": (ops.matmul(x, w, False, False), "bf16"),
              "int8": (ops.matmul(fq(x, 0.0, 4.0), fq(w, -4.0, 4.0 * 127 / 128), False, False),
                       "f32")}
    core = ov.Core()
    feed = {"x": np.abs(rng.standard_normal((m, k))).astype(np.float32)}
    for name, (node, hint) in models.items():
        compiled = core.compile_model(ov.Model([node], [x]), "CPU", _base(hint))
        request = compiled.create_infer_request()
        for _ in range(3):
            request.infer(feed, share_inputs=True)
        def call(request: Any = request) -> Any:
            return request.infer(feed, share_inputs=True)

        best = min(min(time_round(call, 5)) for _ in range(rounds))
        print(f"GEMM {m}x{k}x{n} {name}: {2 * m * k * n / best / 1e6:.0f} GFLOP/s "
              f"(best of {rounds * 5}, {THREADS} threads)", flush=True)


def table(rows: list[dict[str, Any]], reference: str) -> str:
    lines = [f"| bs | variant | runs as | p50 ms | ratio to {reference} | speedup vs torch "
             "| max abs | agree | parity | rounds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        speed = f"{row['speedup_vs_torch']:.2f}x" if row["speedup_vs_torch"] else "–"
        used = f"{row['rounds_used']}/{row['rounds']}"
        lines.append(f"| {row['batch']} | {row['variant']} | {row.get('runs_as', '')} | "
                     f"{row['p50_ms']:.1f} | {row['ratio']:.2f} | {speed} | "
                     f"{row['parity_max_abs']:.3f} | {row['parity_agreement']:.2f} | "
                     f"{'ok' if row['parity_ok'] else 'FAIL'} | {used} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--model", default="distilbert-sst2")
    parser.add_argument("--target", default="local")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/openvino_variants"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=0, help="calls per variant per round "
                        "(default: 8 at batch 1, 2 at batch 16)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quiet", type=float, default=0.15,
                        help="a round is quiet when other processes used fewer cores")
    parser.add_argument("--wait-quiet", type=float, default=60.0,
                        help="seconds to wait for a quiet machine before each slot")
    parser.add_argument("--variants", nargs="+", default=["torch-fp32", "wf-int8-f32",
                                                          "wf-int8-bf16"])
    parser.add_argument("--reference", default="", help="variant the ratio is to "
                        "(default: the first OpenVINO variant)")
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"),
                        help="where the parity tolerances come from")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--peak", action="store_true", help="time one GEMM per precision")
    args = parser.parse_args()
    if args.peak:
        gemm_peak(args.rounds)
        return
    if args.list:
        for v in VARIANTS.values():
            print(f"{v.name:24s} model={v.model} static={v.static} {v.config}")
        return
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown} (--list)")
    args.reference = args.reference or next(
        (n for n in args.variants if VARIANTS[n].model not in ("torch", "ort")),
        args.variants[0])
    import yaml

    args.parity = yaml.safe_load(args.config.read_text())["parity"]
    rows = []
    for batch in args.batches:
        rows += compare(args, batch)
        print(table([r for r in rows if r["batch"] == batch], args.reference), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(THREADS)
    main()
