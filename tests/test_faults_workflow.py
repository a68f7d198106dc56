"""Bad input, faults and interruptions through the real Snakemake workflow.

One sweep of test-only fault backends (tests/fault_backend.py, no runtime imported,
so a job takes a second or two) carries most cases: it runs under --cores 4 without
the workflow profile, from a results folder whose name is hostile to shells, then
is interrupted with Ctrl-C, rerun, and fed a corrupted engine file.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import fault_backend
import pytest
import yaml
from helpers import REPO, SNAKEMAKE, job_counts, tiny_config_dict
from test_faults import CONFIG_CASES, FNET, bad_config

from inferbench.naming import safe_name

pytestmark = pytest.mark.workflow

HOSTILE_ID = ("evil org/$(touch PWNED);`touch PWNED2`/"
              "distilbert-base-uncased-finetuned-sst-2-english")
# A results folder no shell command may split or run: spaces, quotes, $( ), ;, &, |.
HOSTILE_DIR = "my results $(touch PWNED); `touch PWNED2` & it's | x"


def snakemake_command(workdir: Path, configfile: Path, *args: str,
                      profile: bool = True) -> list[str]:
    return [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(configfile), *(() if profile else ("--workflow-profile",
                                                                   "none")), *args]


def snakemake(workdir: Path, configfile: Path, *args: str, profile: bool = True,
              timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the workflow as a user would: the default profile is found beside the
    Snakefile (``profile=False`` turns it off)."""
    return subprocess.run(snakemake_command(workdir, configfile, *args, profile=profile),
                          capture_output=True, text=True, timeout=timeout, cwd=workdir,
                          env=fault_backend.plugin_env())


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def files_under(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*.json")) if p.is_file()}


def small_config(results: Path, backends: list[dict], batches: list[int]) -> dict:
    config = tiny_config_dict()
    config.update(results_dir=str(results), batch_sizes=batches, backends=backends)
    config["measurement"].update(min_iterations=9, min_duration_s=0.01, max_duration_s=1,
                                 bootstrap_resamples=100, noisy_rel_ci=0.05)
    return config


# -- 1. config: rejected at parse time, before any job --------------------------------------

DRY_CASES = {
    **{case: bad_config(case) for case in CONFIG_CASES},
    "unsafe target": ((lambda c: c.update(target="x;touch PWNED") or c)(tiny_config_dict()),
                      ["'target'", "allowed: string matching"]),
}


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`snakemake -n` on each bad config, side by side (each parse takes ~2 s)."""
    runs = {}
    for index, (case, (config, fragments)) in enumerate(DRY_CASES.items()):
        workdir = tmp_path_factory.mktemp(f"dry{index}")
        config = {**config, "results_dir": str(workdir / "results")}
        command = snakemake_command(workdir, write(workdir / "config.yaml", config), "-n",
                                    "--cores", "1")
        runs[case] = (workdir, fragments, subprocess.Popen(
            command, cwd=workdir, env=fault_backend.plugin_env(), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    return {case: (workdir, fragments, proc.communicate(timeout=300)[0], proc.returncode)
            for case, (workdir, fragments, proc) in runs.items()}


@pytest.mark.parametrize("case", sorted(DRY_CASES))
def test_snakemake_rejects_bad_config_before_any_job(dry_runs: dict, case: str) -> None:
    workdir, fragments, output, returncode = dry_runs[case]
    assert returncode != 0
    assert "Invalid config: " in output, output[-3000:]
    for fragment in fragments:
        assert fragment in output, (fragment, output[-3000:])
    assert "Job stats" not in output and "Failed validating" not in output
    assert not (workdir / "results").exists() and not (workdir / "PWNED").exists()


# -- 2. model source: the model rule fails, nothing downstream runs -----------------------

def test_missing_or_weightless_local_model_stops_at_the_model_rule(tmp_path: Path) -> None:
    weightless = tmp_path / "weightless model"
    weightless.mkdir()
    (weightless / "config.json").write_text(json.dumps({"model_type": "distilbert"}))
    cases = {"missing": (tmp_path / "no such dir", "does not exist or is not a folder"),
             "weightless": (weightless, "has no weights (looked for model.safetensors")}
    procs = {}
    for name, (path, _) in cases.items():
        workdir = tmp_path / name
        workdir.mkdir()
        config = small_config(workdir / "results", [{"name": "echo", "kind": "fault"}], [1])
        config["model"] = {"source": "local", "path": str(path), "name": "mine"}
        procs[name] = subprocess.Popen(
            snakemake_command(workdir, write(workdir / "c.yaml", config), "--cores", "2"),
            cwd=workdir, env=fault_backend.plugin_env(), text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
    for name, (_, fragment) in cases.items():
        output = procs[name].communicate(timeout=300)[0]
        assert procs[name].returncode != 0
        assert "Error in rule prepare_model" in output
        # the log is shown (show-failed-logs in the profile), one line, no traceback
        assert "inferbench prepare-model: error: ModelSourceError: model.path" in output
        assert fragment in output
        results = tmp_path / name / "results"
        assert sorted(p.name for p in results.rglob("*") if p.is_file()) == []
        for rule in ("make_inputs", "reference", "bench", "aggregate"):
            assert f"rule {rule}:" not in output  # never started


def test_model_that_cannot_be_exported_stops_its_backends_only(tmp_path: Path) -> None:
    config = small_config(tmp_path / "results", [
        {"name": "ort-cpu", "kind": "ort", "options": {"graph": "plain"}},
        {"name": "echo", "kind": "fault"}], [1])
    config["model"] = {"source": "architecture", "id": "google/fnet-base", "name": "fnet",
                       "architecture": FNET}
    result = snakemake(tmp_path, write(tmp_path / "c.yaml", config), "--cores", "2",
                       str(tmp_path / "results" / "summary_table.md"))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error in rule onnx_export" in output
    assert "inferbench export: error: ExportError: fnet (FNetForSequenceClassification) " \
           "could not be exported to ONNX" in output
    assert "aten::fft_fftn" in output
    results = tmp_path / "results"
    assert not list((results / "onnx").rglob("*.onnx*"))  # no graph, no manifest
    assert not (results / "bench" / "local" / "fnet" / "ort-cpu").exists()
    # --keep-going (default profile): the backend that needs no ONNX still ran
    echo = json.loads((results / "bench" / "local" / "fnet" / "echo" / "bs1.json").read_text())
    assert echo["status"] == "ok"
    assert not (results / "summary_table.md").exists()


# -- 3.-8. one faulty sweep ---------------------------------------------------------------

SWEEP_BACKENDS = [
    {"name": "echo", "kind": "fault", "options": {"mode": "echo"}},
    {"name": "jitter", "kind": "fault", "options": {"mode": "jitter"}},
    {"name": "nan", "kind": "fault", "options": {"mode": "nan"}},
    {"name": "crash", "kind": "fault", "options": {"mode": "segfault"}},
    {"name": "built", "kind": "fault-built", "options": {"mode": "echo"}},
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("sweep")
    hostile = workdir / HOSTILE_DIR
    hostile.mkdir()
    (hostile / "sentences.txt").write_text("a sentence\n")
    config = small_config(hostile / "results", SWEEP_BACKENDS, [1])
    config["sentences"] = str(hostile / "sentences.txt")
    del config["model"]["name"]
    config["model"]["id"] = HOSTILE_ID
    config["report"] = {"baseline": "echo"}
    configfile = write(workdir / "config.yaml", config)
    results = hostile / "results"
    target = str(results / "summary_table.md")  # the summary, not the report's extras
    # No workflow profile: the one-job-per-device limit must hold without it.
    result = snakemake(workdir, configfile, "--cores", "4", "--keep-going", target,
                       profile=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    model = safe_name(HOSTILE_ID)
    return {"workdir": workdir, "config": config, "configfile": configfile, "model": model,
            "results": results, "rows": results / "bench" / "local" / model,
            "target": target, "output": result.stdout + result.stderr}


def rows_of(sweep: dict) -> dict[str, dict]:
    return {f"{p.parent.name}/{p.stem}": json.loads(p.read_text())
            for p in sorted(sweep["rows"].glob("*/bs*.json"))}


def table_lines(sweep: dict, backend: str) -> list[str]:
    table = (sweep["results"] / "summary_table.md").read_text()
    return [x for x in table.splitlines() if x.startswith("| local ") and f"| {backend} " in x]


def test_sweep_goes_on_past_faults_and_the_summary_shows_them(sweep: dict) -> None:
    rows = rows_of(sweep)
    statuses = {key: row["status"] for key, row in rows.items()}
    assert statuses == {"echo/bs1": "ok", "jitter/bs1": "ok", "nan/bs1": "parity_failed",
                        "crash/bs1": "error", "built/bs1": "ok"}
    assert "benchmark process died (signal SIGSEGV)" in rows["crash/bs1"]["reason"]
    assert "NaN/Inf" in rows["nan/bs1"]["reason"]
    assert all("error: benchmark process died (signal SIGSEGV)" in x
               for x in table_lines(sweep, "crash"))
    assert all("parity_failed" in x and "NaN/Inf" in x for x in table_lines(sweep, "nan"))
    assert len(table_lines(sweep, "crash")) == len(table_lines(sweep, "nan")) == 1


def test_bench_jobs_never_overlap_under_cores_4(sweep: dict) -> None:
    """No two launches (one job each) of any rows ran at the same time."""
    assert "Provided cores: 4" in sweep["output"]
    spans = sorted((datetime.fromisoformat(start), datetime.fromisoformat(end), key)
                   for key, r in rows_of(sweep).items() for start, end in r["launch_windows"])
    assert len(spans) >= len(SWEEP_BACKENDS)
    for (_, end, before), (start, _, after) in itertools.pairwise(spans):
        assert start >= end, f"{after} started before {before} finished"


def test_noisy_rows_are_flagged_in_the_table_not_hidden(sweep: dict) -> None:
    import pandas as pd

    lines = table_lines(sweep, "jitter")
    assert len(lines) == 1 and "ok (noisy)" in lines[0]
    frame = pd.read_csv(sweep["results"] / "summary.csv")
    measured = frame[frame.status.isin(["ok", "parity_failed"])]
    assert (measured.noisy.astype(bool) == (measured.primary_rel_ci > 0.05)).all()
    assert measured[measured.backend == "jitter"].p50_ms.notna().all()


def test_hostile_names_neither_escape_results_nor_run_in_a_shell(sweep: dict) -> None:
    workdir, results = sweep["workdir"], sweep["results"]
    assert not [p for p in workdir.rglob("PWNED*")]
    assert not list(Path.cwd().glob("PWNED*")) and not list(REPO.glob("PWNED*"))
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", sweep["model"])
    assert (results / "models" / sweep["model"] / "card.json").is_file()
    outside = [p for p in workdir.rglob("*") if p.is_file()
               and not p.is_relative_to(results)
               and p.relative_to(workdir).parts[0] not in (".snakemake", "logs")
               and p.name not in ("config.yaml", "sentences.txt")]
    assert outside == []
    card = json.loads((results / "models" / sweep["model"] / "card.json").read_text())
    assert card["id"] == HOSTILE_ID  # passed through the shell verbatim, never run


def test_ctrl_c_then_rerun_redoes_exactly_the_interrupted_jobs(sweep: dict,
                                                               tmp_path: Path) -> None:
    workdir, rows = sweep["workdir"], sweep["rows"]
    marker = tmp_path / "hold"
    config = json.loads(json.dumps(sweep["config"]))
    config["backends"][0]["options"] = {"mode": "hang", "marker": str(marker)}
    configfile = write(tmp_path / "hang.yaml", config)  # reruns echo's job only
    before = files_under(rows)
    marker.touch()
    proc = subprocess.Popen(snakemake_command(workdir, configfile, "--cores", "4",
                                              sweep["target"]),
                            cwd=workdir, env=fault_backend.plugin_env(),
                            start_new_session=True, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    started = Path(f"{marker}.started")
    try:
        deadline = time.monotonic() + 180
        while not started.exists():
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert "Using workflow specific profile" in output  # found from another folder
    marker.unlink()
    after = files_under(rows)
    # the interrupted launch left no record; the row is not combined from partial work
    # (its old file stays until its launches are redone, the row job never started)
    assert "echo/bs1.json" in before, output[-3000:]
    assert after.get("echo/bs1.json") in (None, before["echo/bs1.json"])
    assert not list((sweep["results"] / "launches").rglob("echo/bs1-0.json"))
    untouched = {k: v for k, v in before.items() if not k.startswith("echo/")}
    assert {k: after[k] for k in untouched} == untouched

    dry = snakemake(workdir, configfile, "-n", "--cores", "1", sweep["target"])
    repeats = config["measurement"]["repeats"]
    assert job_counts(dry.stdout + dry.stderr) == {"bench": repeats, "bench_row": 1,
                                                   "aggregate": 1}
    rerun = snakemake(workdir, configfile, "--cores", "2", sweep["target"])
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    final = files_under(rows)
    assert {k: final[k] for k in untouched} == untouched  # nothing else was redone
    assert json.loads(final["echo/bs1.json"][1])["status"] == "ok"
    sweep["configfile"] = configfile  # the config the results now match


def test_corrupted_engine_is_reported_then_rebuilt(sweep: dict) -> None:
    workdir, configfile = sweep["workdir"], sweep["configfile"]
    manifest = sweep["results"] / "engines" / "local" / sweep["model"] / "built" / "build.json"
    engine = manifest.parent / "engine.bin"
    engine.write_bytes(engine.read_bytes()[:100])  # truncated, e.g. by a full disk
    row_path = sweep["rows"] / "built" / "bs1.json"
    # rerun that one benchmark (--until: not the report rules downstream of it)
    forced = snakemake(workdir, configfile, "--cores", "2", "--forcerun", str(row_path),
                       "--until", "aggregate", sweep["target"])
    assert forced.returncode == 0, forced.stdout[-3000:] + forced.stderr[-3000:]
    row = json.loads(row_path.read_text())
    assert row["status"] == "error" and row["reason"].startswith("corrupt artifact: ")
    assert "engine.bin is corrupt" in row["reason"] and "latency" not in row
    assert any("corrupt artifact" in x for x in table_lines(sweep, "built"))
    # the fix the message gives rebuilds the engine, then benchmarks it, and only that
    # (the run's own command: its cores, Snakefile, folder and --configfile)
    assert (f"rebuild it with: snakemake --cores 2 --snakefile {REPO / 'Snakefile'} "
            f"--directory {workdir} --configfile {configfile} --forcerun "
            f"{shlex.quote(str(manifest))}") in row["reason"]
    dry = snakemake(workdir, configfile, "-n", "--cores", "1", "--forcerun", str(manifest),
                    "--until", "aggregate", sweep["target"])
    repeats = sweep["config"]["measurement"]["repeats"]
    assert job_counts(dry.stdout + dry.stderr) == {"build_engine": 1, "bench": repeats,
                                                   "bench_row": 1, "aggregate": 1}
