"""Bad input, faults and interruptions, in-process and through the CLI.

The real workflow's side of the matrix (dry runs, a faulty sweep under --cores 4,
Ctrl-C and rerun) is in test_faults_workflow.py; docs/faults.md maps every case to
its test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import fault_backend  # registers the fault-injecting backends in this process
import pytest
from helpers import tiny_config_dict

from inferbench.config import ConfigError, job_settings, validate_config
from inferbench.io import CorruptArtifactError, atomic_write_json, sha256_file
from inferbench.measure.harness import JobPaths
from inferbench.measure.harness import run_in_process as run_job
from inferbench.naming import safe_name

REPO = Path(__file__).resolve().parents[1]
SAFE = r"[A-Za-z0-9][A-Za-z0-9._-]*"


# -- helpers ------------------------------------------------------------------------

def settings_for(kind: str, options: dict | None = None, **measurement) -> dict:
    """Job settings of a one-backend config (validated like the workflow does)."""
    config = tiny_config_dict()
    config["backends"] = [{"name": "b", "kind": kind, "options": options or {}}]
    config["measurement"].update({"repeats": 1, "min_iterations": 5, "min_duration_s": 0.01,
                                  "max_duration_s": 1, "bootstrap_resamples": 100,
                                  **measurement})
    return job_settings(validate_config(config), "b")


def job_paths(tiny_model: dict, **extra) -> JobPaths:
    root = tiny_model["root"]
    return JobPaths(model_dir=root / "hf", card=root / "card.json", inputs=root / "inputs.npz",
                    reference=root / "reference.npz", **extra)


def run_fault(tiny_model: dict, tmp_path: Path, mode: str, **measurement) -> dict:
    reference = str(tiny_model["root"] / "reference.npz")
    settings = settings_for("fault", {"mode": mode, "reference": reference}, **measurement)
    out = tmp_path / f"{mode}.json"
    row = run_job(settings, 2, job_paths(tiny_model), "tiny-distilbert", "local", out)
    assert json.loads(out.read_text())["status"] == row["status"]  # the row is on disk
    return row


def trivial_onnx(path: Path) -> Path:
    """A one-node ONNX graph with its manifest, as the onnx rules write them."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["output"], to=TensorProto.FLOAT)], "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 16])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    atomic_write_json(Path(f"{path}.json"), {"sha256": sha256_file(path), "variant": "plain"})
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def visible_files(folder: Path) -> list[str]:
    """Files a reader or Snakemake could take for outputs (temporaries start with '.')."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "inferbench", *args]


def bench_command(tiny_model: dict, out: Path, options: dict) -> list[str]:
    settings = settings_for("fault", {"reference": str(tiny_model["root"] / "reference.npz"),
                                      **options})
    paths = job_paths(tiny_model)
    return cli("bench", "--settings", json.dumps(settings), "--model-dir", str(paths.model_dir),
               "--card", str(paths.card), "--inputs", str(paths.inputs), "--reference",
               str(paths.reference), "--batch", "2", "--model", "tiny-distilbert",
               "--target", "local", "--out", str(out))


def run_all(commands: list[list[str]], timeout: float = 180) -> list[subprocess.CompletedProcess]:
    """Run independent commands side by side (each starts a Python with numpy/torch)."""
    procs = [subprocess.Popen(c, env=fault_backend.plugin_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in commands]
    done = []
    for command, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return done


def start_killable(command: list[str], stderr: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(command, env=fault_backend.plugin_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL,
                            stderr=stderr.open("w") if stderr else subprocess.DEVNULL)


def kill_group(proc: subprocess.Popen, sig: signal.Signals) -> int:
    """Signal the process group, as Ctrl-C or a scheduler does; its exit status."""
    try:
        os.killpg(proc.pid, sig)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"process ended early ({proc.returncode})"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


# -- 1. config ------------------------------------------------------------------------

CONFIG_CASES = {
    # case: (mutation of the tiny config, fragments the message must hold)
    "unknown key": (lambda c: c.update(warmup=3),
                    ["unknown config key(s) ['warmup']", "allowed keys: ", "batch_sizes, "]),
    "wrong type": (lambda c: c.update(seq_len="long"),
                   ["'seq_len'", "not of type 'integer'", "allowed: integer >= 1"]),
    "empty batch list": (lambda c: c.update(batch_sizes=[]),
                         ["'batch_sizes'", "allowed: a list of at least 1 unique integer >= 1"]),
    "batch size 0": (lambda c: c.update(batch_sizes=[0, 2]),
                     ["'batch_sizes[0]'", "allowed: integer >= 1"]),
    "negative batch size": (lambda c: c.update(batch_sizes=[1, -4]),
                            ["'batch_sizes[1]'", "allowed: integer >= 1"]),
    "seq_len over the model maximum": (lambda c: c.update(seq_len=65),
                                       ["'seq_len'", "max_position_embeddings = 64",
                                        "allowed: 1..64"]),
    "unknown backend": (lambda c: c["backends"].append({"name": "x", "kind": "tensorrt-llm"}),
                        ["'backends[6].kind'", "'tensorrt-llm'", "allowed: ", "torch-eager"]),
    "duplicate backend": (lambda c: c["backends"].append(dict(c["backends"][0])),
                          ["'backends[6].name'", "duplicate backend 'torch-eager'",
                           "needs its own name"]),
    "measurement minimum above the cap": (
        lambda c: c["measurement"].update(min_duration_s=9, max_duration_s=1),
        ["'measurement.min_duration_s' (9)", "'measurement.max_duration_s' (1)",
         "at most the cap"]),
}


def bad_config(case: str) -> tuple[dict, list[str]]:
    mutate, fragments = CONFIG_CASES[case]
    config = tiny_config_dict()
    mutate(config)
    return config, fragments


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_error_names_key_and_allowed_values(case: str) -> None:
    config, fragments = bad_config(case)
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


@pytest.mark.parametrize("results_dir", ["res/{target}", ""])
def test_results_dir_that_snakemake_would_misread_is_rejected(results_dir: str) -> None:
    config = tiny_config_dict()
    config["results_dir"] = results_dir
    with pytest.raises(ConfigError, match=r"'results_dir'.*allowed: a non-empty path"):
        validate_config(config)


# -- 2. model source ----------------------------------------------------------------

def test_hub_id_offline_fails_with_the_fix(tmp_path: Path, monkeypatch) -> None:
    from inferbench.prepare.model import ModelSourceError, prepare_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelSourceError) as info:
        prepare_model({"source": "hub", "id": "someorg/not-cached-model"},
                      tmp_path / "hf", tmp_path / "card.json")
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert "'someorg/not-cached-model'" in message and "not in the local cache" in message
    assert "hf download someorg/not-cached-model" in message
    assert "model.source: local" in message and "model.source: architecture" in message
    assert not (tmp_path / "hf").exists() and not (tmp_path / "card.json").exists()


def test_unreachable_hub_without_offline_flag_fails_fast(tmp_path: Path) -> None:
    """No HF_HUB_OFFLINE: a probe finds the hub unreachable and only the cache is read
    (huggingface_hub alone retried for ~30 s here, minutes behind a black-holing firewall)."""
    env = fault_backend.plugin_env(HF_ENDPOINT="http://127.0.0.1:9")
    env.pop("HF_HUB_OFFLINE")
    model = json.dumps({"source": "hub", "id": "someorg/not-cached-model"})
    start = time.monotonic()
    proc = subprocess.run(cli("prepare-model", "--model", model, "--out-dir",
                              str(tmp_path / "hf"), "--card", str(tmp_path / "card.json")),
                          env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert elapsed < 20, f"took {elapsed:.0f} s"  # ~4 s; ~27 s without the probe
    assert "inferbench prepare-model: error: ModelSourceError: could not load" in proc.stderr
    assert "it is not reachable from this machine" in proc.stderr  # the probe said so
    assert "Traceback" not in proc.stderr  # one actionable message, not a stack
    assert not (tmp_path / "card.json").exists()


def _no_weights(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "distilbert"}))
    (path / "tokenizer.json").write_text("{}")
    return path


def _no_config(path: Path) -> Path:
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"\0" * 16)
    return path


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda p: p, "does not exist or is not a folder"),
    (_no_config, "has no config.json"),
    (_no_weights, "has no weights (looked for model.safetensors"),
])
def test_local_model_path_problems_are_model_source_errors(tmp_path: Path, make,
                                                           fragment: str) -> None:
    from inferbench.prepare.model import ModelSourceError, prepare_model

    path = make(tmp_path / "my model")
    with pytest.raises(ModelSourceError, match=r"model\.path") as info:
        prepare_model({"source": "local", "path": str(path)}, tmp_path / "out" / "hf",
                      tmp_path / "out" / "card.json")
    assert fragment in str(info.value)
    assert not (tmp_path / "out").exists()


FNET = {"model_type": "fnet", "vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 1,
        "intermediate_size": 64, "max_position_embeddings": 64}


def test_model_type_without_onnx_export_is_a_clear_export_error(tmp_path: Path) -> None:
    """FNet's Fourier mixing (aten::fft_fftn) has no ONNX operator."""
    from inferbench.prepare.model import build_inputs, compute_reference, prepare_model
    from inferbench.prepare.onnx import ExportError, export_onnx

    card = prepare_model({"source": "architecture", "id": "google/fnet-base",
                          "architecture": FNET}, tmp_path / "hf", tmp_path / "card.json")
    inputs = build_inputs(tmp_path / "hf", card, 16, 1, None, 0, tmp_path / "inputs.npz")
    reference = compute_reference(tmp_path / "hf", card, tmp_path / "inputs.npz",
                                  tmp_path / "reference.npz", 1)
    out = tmp_path / "onnx" / "plain.onnx"
    with pytest.raises(ExportError) as info:
        export_onnx(tmp_path / "hf", card, out, opset=17, attn_implementation="eager",
                    exporter="torchscript", check_inputs=inputs, check_reference=reference)
    assert "fnet (FNetForSequenceClassification) could not be exported to ONNX" in str(info.value)
    assert "fft" in str(info.value)
    assert os.listdir(out.parent) == []  # no .onnx, no manifest, no temporary


# -- 3. safe names --------------------------------------------------------------------

EVIL = ["../../etc/passwd", "..", "a/../../b", "org/model", "my model v2", "x;rm -rf ~",
        "$(touch PWNED)", "`touch PWNED`", "a|b&c>d<e", "'quoted\"", "-rf", ".hidden",
        "\n\t", "", "ünïcode/模型", "a" * 300]


@pytest.mark.parametrize("raw", EVIL)
def test_safe_name_cannot_escape_or_inject(raw: str, tmp_path: Path) -> None:
    name = safe_name(raw)
    assert re.fullmatch(SAFE, name) and ".." not in name and len(name) <= 64
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert safe_name(raw) == name  # stable: the same id always lands in the same folder


def test_different_ids_never_share_a_folder() -> None:
    names = [safe_name(raw) for raw in EVIL]
    assert len(set(names)) == len(EVIL)
    assert safe_name("org/model") != safe_name("org-model")


def test_model_name_derived_from_a_hostile_id_is_safe() -> None:
    config = tiny_config_dict()
    del config["model"]["name"]
    config["model"]["id"] = ("../../$(touch PWNED);`id`/"
                             "distilbert-base-uncased-finetuned-sst-2-english")
    name = validate_config(config)["model"]["name"]

    assert re.fullmatch(SAFE, name) and ".." not in name


@pytest.mark.parametrize("value", ["../x", "a/b", "a b", "x;rm -rf ~", "$(touch PWNED)",
                                   "`id`", "-rf", ".hidden"])
@pytest.mark.parametrize("key", ["model.name", "target", "backends[0].name"])
def test_unsafe_names_in_paths_are_rejected(key: str, value: str) -> None:
    config = tiny_config_dict()
    if key == "model.name":
        config["model"]["name"] = value
    elif key == "target":
        config["target"] = value
    else:
        config["backends"][0]["name"] = value
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert f"'{key}'" in str(info.value) and "allowed: string matching" in str(info.value)


# -- 4. runtime faults inside a benchmark job ------------------------------------------

@pytest.mark.parametrize(("mode", "status", "reason"), [
    ("raise", "error", "RuntimeError: injected fault: kernel launch failed"),
    ("raise_load", "error", "RuntimeError: injected fault: the runtime could not load"),
    ("oom", "error", "out of memory: RuntimeError: CUDA out of memory"),
    ("memory_error", "error", "out of memory: MemoryError: injected"),
    ("nan", "parity_failed", "output holds 1 NaN/Inf values"),
    ("inf", "parity_failed", "output holds 1 NaN/Inf values"),
    ("unavailable", "unavailable", "injected: runtime not installed"),
    ("echo", "ok", ""),
])
def test_backend_fault_becomes_a_row_with_its_reason(tiny_model: dict, tmp_path: Path,
                                                     mode: str, status: str,
                                                     reason: str) -> None:
    row = run_fault(tiny_model, tmp_path, mode)
    assert row["status"] == status, row.get("reason")
    assert reason in row.get("reason", "")
    assert row["started_at"] <= row["finished_at"]
    assert row["backend"] == "b" and row["batch_size"] == 2
    if status == "error":
        assert not row["views"] and row["traceback"]
    if status == "parity_failed":  # measured, kept, and marked
        assert row["views"]["latency"]["stats"]["count"] >= 5


def test_wrong_execution_provider_is_refused(tiny_model: dict, tmp_path: Path) -> None:
    """ONNX Runtime asked for CUDA on a CPU-only install silently runs on the CPU."""
    onnx = trivial_onnx(tmp_path / "plain.onnx")
    row = run_job(settings_for("fault-ort-provider"), 2, job_paths(tiny_model, onnx=onnx),
                  "tiny-distilbert", "local", tmp_path / "row.json")
    assert row["status"] == "error"
    assert "['CPUExecutionProvider'] instead of CUDAExecutionProvider" in row["reason"]
    assert "refusing a silent fallback" in row["reason"]
    assert not row["views"]


def test_worker_killed_by_a_signal_leaves_an_error_row(tiny_model: dict,
                                                       tmp_path: Path) -> None:
    """A runtime that segfaults, or the kernel's OOM killer: the job still has a row."""
    signals = {"segfault": "SIGSEGV", "sigkill": "SIGKILL"}
    done = run_all([bench_command(tiny_model, tmp_path / f"{mode}.json", {"mode": mode})
                    for mode in signals])
    for (mode, signame), proc in zip(signals.items(), done, strict=True):
        assert proc.returncode == 0, proc.stderr[-2000:]  # the job succeeds: its row says why
        row = json.loads((tmp_path / f"{mode}.json").read_text())
        assert row["status"] == "error"
        assert f"benchmark process died (signal {signame})" in row["reason"]
        assert row["started_at"] <= row["finished_at"]


def test_crashed_build_leaves_an_error_manifest(tiny_model: dict, tmp_path: Path) -> None:
    """Seen on the H100: AOTInductor's package loader segfaulted the build process."""
    settings = settings_for("fault-built", {"mode": "build_segfault"})
    paths = job_paths(tiny_model)
    manifest = tmp_path / "build" / "build.json"
    (proc,) = run_all([cli("build", "--settings", json.dumps(settings), "--batch-sizes", "[2]",
                           "--model-dir", str(paths.model_dir), "--card", str(paths.card),
                           "--out", str(manifest))])
    assert proc.returncode == 0, proc.stderr[-2000:]
    built = json.loads(manifest.read_text())
    assert built["status"] == "error"
    assert "build worker died (signal SIGSEGV)" in built["reason"]


@pytest.fixture(scope="module")
def summary(tiny_model: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """aggregate() over rows of a good, a crashing, a NaN and a jittery backend."""
    from inferbench.report.table import aggregate

    folder = tmp_path_factory.mktemp("summary")
    rows = {mode: run_fault(tiny_model, folder, mode, noisy_rel_ci=0.05, min_iterations=9)
            for mode in ("echo", "raise", "nan", "jitter")}
    paths = []
    for mode, row in rows.items():
        paths.append(folder / f"{mode}.json")
        atomic_write_json(paths[-1], {**row, "backend": mode})
    context = {"seq_len": 16, "threads": 1, "baseline": None, "model": {},
               "card": tiny_model["card"]}
    frame = aggregate(paths, context, folder / "summary.csv", folder / "summary_table.md",
                      folder / "plots")
    table = (folder / "summary_table.md").read_text()
    lines = {mode: [x for x in table.splitlines() if x.startswith("| local ") and
                    f"| {mode} " in x] for mode in rows}
    return {"rows": rows, "frame": frame, "lines": lines}


def test_summary_table_shows_failed_rows(summary: dict) -> None:
    lines = summary["lines"]
    assert all(len(found) == 1 for found in lines.values()), lines
    assert "error: RuntimeError: injected fault: kernel launch failed" in lines["raise"][0]
    assert "parity_failed" in lines["nan"][0]
    assert "output holds 1 NaN/Inf values" in lines["nan"][0]
    statuses = dict(zip(summary["frame"].backend, summary["frame"].status, strict=True))
    assert statuses == {"echo": "ok", "raise": "error", "nan": "parity_failed", "jitter": "ok"}


# -- 5. interruption --------------------------------------------------------------------

KILLS = {"sigint": signal.SIGINT, "sigkill": signal.SIGKILL}


def test_benchmark_killed_midway_leaves_no_row_and_reruns(tiny_model: dict,
                                                          tmp_path: Path) -> None:
    jobs = {}
    for name in KILLS:
        (tmp_path / name).mkdir()
        marker = tmp_path / f"hold-{name}"
        marker.touch()
        command = bench_command(tiny_model, tmp_path / name / "bs2.json",
                                {"mode": "hang", "marker": str(marker)})
        jobs[name] = (marker, command,
                      start_killable(command, stderr=tmp_path / f"{name}.stderr"))
    for name, (marker, _, proc) in jobs.items():
        wait_for(Path(f"{marker}.started"), proc)  # the worker is mid-job
        assert kill_group(proc, KILLS[name]) != 0
        assert visible_files(tmp_path / name) == []  # nothing that looks like a result
        marker.unlink()
    # Ctrl-C: the job and its worker each say so in a line, with no traceback
    said = (tmp_path / "sigint.stderr").read_text()
    assert jobs["sigint"][2].returncode == 130, said
    assert said.count("interrupted; nothing written, the job reruns") == 2, said
    assert "Traceback" not in said, said
    # the next run of the same job redoes it; nothing stale is in the way
    (rerun,) = run_all([jobs["sigkill"][1]])
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads((tmp_path / "sigkill" / "bs2.json").read_text())["status"] == "ok"


# `inferbench export`, held after torch has written the whole temporary .onnx and
# before the check and rename: a kill there is a kill mid-way, every time.
HELD_EXPORT = """
import pathlib, sys, time, torch.onnx
from inferbench.cli import main
real_export = torch.onnx.export
def held_export(*args, **kwargs):
    real_export(*args, **kwargs)
    pathlib.Path(sys.argv[1]).touch()
    time.sleep(600)
torch.onnx.export = held_export
main(sys.argv[2:])
"""


def test_export_killed_midway_leaves_no_onnx(tiny_model: dict, tmp_path: Path) -> None:
    root = tiny_model["root"]
    export = json.dumps({"opset": 17, "attn_implementation": "eager",
                         "exporter": "torchscript"})
    procs = {}
    for name in KILLS:
        (tmp_path / name).mkdir()
        procs[name] = start_killable([
            sys.executable, "-c", HELD_EXPORT, str(tmp_path / f"{name}.held"), "export",
            "--model-dir", str(root / "hf"), "--card", str(root / "card.json"),
            "--inputs", str(root / "inputs.npz"), "--reference", str(root / "reference.npz"),
            "--export", export, "--out", str(tmp_path / name / "plain.onnx")])
    for name, proc in procs.items():
        wait_for(tmp_path / f"{name}.held", proc, timeout=120)
        assert [p.name for p in (tmp_path / name).iterdir() if p.stat().st_size]  # written
        assert kill_group(proc, KILLS[name]) != 0
        assert visible_files(tmp_path / name) == [], name  # no .onnx, no manifest
    assert os.listdir(tmp_path / "sigint") == []  # an interrupt also removes the temporary


# -- 6. corrupted artifacts ---------------------------------------------------------------

def test_an_atomically_written_result_has_the_mode_of_a_plain_write(tmp_path: Path) -> None:
    # the temporary file is private (0o600) until it becomes the result
    plain, atomic = tmp_path / "plain.json", tmp_path / "atomic.json"
    plain.write_text("{}")
    atomic_write_json(atomic, {})
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic.json", "plain.json"]


def test_truncated_onnx_is_refused_not_benchmarked(tiny_model: dict, tmp_path: Path) -> None:
    onnx = trivial_onnx(tmp_path / "plain.onnx")
    truncate(onnx)
    settings = settings_for("ort", {"graph": "plain"})
    row = run_job(settings, 2, job_paths(tiny_model, onnx=onnx), "tiny-distilbert", "local",
                  tmp_path / "row.json")
    assert row["status"] == "error"
    assert row["reason"].startswith("corrupt artifact: ")
    assert "sha256" in row["reason"]
    assert "rebuild it with: snakemake --cores " in row["reason"]
    assert f" --forcerun {shlex.quote(str(onnx))}" in row["reason"]
    assert row["cold_start"] is None and not row["views"]  # never loaded, never timed


def test_onnx_without_its_manifest_is_refused(tiny_model: dict, tmp_path: Path) -> None:
    onnx = trivial_onnx(tmp_path / "plain.onnx")
    Path(f"{onnx}.json").unlink()
    row = run_job(settings_for("ort", {"graph": "plain"}), 2, job_paths(tiny_model, onnx=onnx),
                  "tiny-distilbert", "local", tmp_path / "row.json")
    assert row["status"] == "error" and "manifest plain.onnx.json is missing" in row["reason"]
    assert not row["views"]


def test_truncated_onnx_is_refused_by_the_rules_that_read_it(tmp_path: Path) -> None:
    from inferbench.prepare.onnx import optimize_onnx, quantize_onnx

    onnx = trivial_onnx(tmp_path / "plain.onnx")
    truncate(onnx)
    with pytest.raises(CorruptArtifactError, match="corrupt or was changed"):
        quantize_onnx(onnx, tmp_path / "plain-int8.onnx")
    with pytest.raises(CorruptArtifactError, match="corrupt or was changed"):
        optimize_onnx(onnx, tmp_path / "fused.onnx", {"model_type": "distilbert"}, 1, False)
    assert visible_files(tmp_path) == ["plain.onnx", "plain.onnx.json"]


def test_truncated_engine_file_is_refused(tiny_model: dict, tmp_path: Path) -> None:
    from inferbench.prepare.engines import build_engine

    reference = str(tiny_model["root"] / "reference.npz")
    settings = settings_for("fault-built", {"reference": reference})
    manifest = tmp_path / "engines" / "build.json"
    built = build_engine(settings, [2], tiny_model["root"] / "hf",
                         tiny_model["root"] / "card.json", None, manifest)
    assert built["status"] == "ok" and set(built["files"]) == {"engine.bin"}
    paths = job_paths(tiny_model, build_manifest=manifest)
    intact = run_job(settings, 2, paths, "tiny-distilbert", "local", tmp_path / "ok.json")
    assert intact["status"] == "ok", intact.get("reason")
    truncate(manifest.parent / "engine.bin")
    row = run_job(settings, 2, paths, "tiny-distilbert", "local", tmp_path / "row.json")
    assert row["status"] == "error" and row["reason"].startswith("corrupt artifact: ")
    assert "engine.bin is corrupt" in row["reason"] and not row["views"]
    assert "rebuild it with: snakemake --cores " in row["reason"]
    assert f" --forcerun {shlex.quote(str(manifest))}" in row["reason"]
    (manifest.parent / "engine.bin").unlink()
    row = run_job(settings, 2, paths, "tiny-distilbert", "local", tmp_path / "row.json")
    assert "engine.bin is missing" in row["reason"] and not row["views"]


# -- 7. noise -----------------------------------------------------------------------------

def test_noisy_row_is_flagged_not_hidden(summary: dict) -> None:
    noisy = summary["rows"]["jitter"]
    stats = noisy["views"]["latency"]["stats"]
    assert noisy["status"] == "ok" and stats["rel_ci_halfwidth"] > 0.05
    assert noisy["noisy"] is True
    (line,) = summary["lines"]["jitter"]
    assert "ok (noisy)" in line
    assert f"{stats['p50']:.2f} [" in line  # its numbers are still in the table
    frame = summary["frame"].set_index("backend")
    for backend, row in frame.iterrows():  # flagged exactly when the interval is too wide
        if row.status in ("ok", "parity_failed"):
            assert bool(row.noisy) == (row.primary_rel_ci > 0.05), (backend, row.primary_rel_ci)


def test_launch_jobs_skip_after_a_failure_and_combine_into_one_row(
        tiny_model: dict, tmp_path: Path) -> None:
    """The workflow's launch jobs: launch 0 of a segfaulting backend leaves an error
    record; launch 1 sees it and repeats the outcome without starting a process (a
    skipped record, not counted); an echo backend's two launches combine into one row
    with both launches' samples and time windows."""
    crash = bench_command(tiny_model, tmp_path / "c0.json", {"mode": "segfault"})
    first = subprocess.run([*crash, "--launch", "0"], env=fault_backend.plugin_env(),
                           capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr[-2000:]
    record = json.loads((tmp_path / "c0.json").read_text())
    assert record["status"] == "error" and "SIGSEGV" in record["reason"]
    assert record["launch"] == 0 and record["started_at"] <= record["finished_at"]
    second = [*crash[:-1], str(tmp_path / "c1.json"), "--launch", "1",
              "--previous", str(tmp_path / "c0.json")]
    subprocess.run(second, env=fault_backend.plugin_env(), check=True, timeout=60)
    skipped = json.loads((tmp_path / "c1.json").read_text())
    assert skipped["skipped"] and skipped["launch"] == 1
    assert skipped["reason"] == record["reason"]

    echo = bench_command(tiny_model, tmp_path / "e0.json", {"mode": "echo"})
    settings = echo[echo.index("--settings") + 1]
    for index in (0, 1):
        subprocess.run([*echo[:-1], str(tmp_path / f"e{index}.json"), "--launch", str(index)],
                       env=fault_backend.plugin_env(), check=True, timeout=180)
    for name, launches in (("crash", ["c0.json", "c1.json"]), ("echo", ["e1.json", "e0.json"])):
        subprocess.run(cli("bench-combine", "--settings", settings, "--batch", "2", "--model",
                           "tiny-distilbert", "--target", "local", "--out",
                           str(tmp_path / f"{name}.json"), "--launches",
                           *[str(tmp_path / f) for f in launches]),
                       env=fault_backend.plugin_env(), check=True, timeout=60)
    crashed = json.loads((tmp_path / "crash.json").read_text())
    assert crashed["status"] == "error" and crashed["launches"] == 1
    row = json.loads((tmp_path / "echo.json").read_text())
    assert row["status"] == "ok" and row["launches"] == 2
    assert len(row["views"]["latency"]["samples"]) == 2
    windows = row["launch_windows"]
    assert len(windows) == 2 and windows[0][1] <= windows[1][0]  # in launch order
    assert row["started_at"] == windows[0][0] and row["finished_at"] == windows[1][1]
