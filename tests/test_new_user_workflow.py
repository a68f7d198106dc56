"""What a new user runs into through the real Snakemake workflow.

A --configfile that must stand on its own, a run killed with SIGKILL, a corrupted
ONNX file and its rebuild hint pasted as printed, and the GPU config's
`unavailable` rows beside the committed H100 results.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import fault_backend
import pandas as pd
import pytest
from helpers import REPO, SNAKEMAKE
from test_faults_workflow import small_config, snakemake, snakemake_command, write

pytestmark = pytest.mark.workflow


def output_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def paste(hint_command: str) -> list[str]:
    """A printed `snakemake ...` command as the user would type it (this venv's snakemake)."""
    words = shlex.split(hint_command)
    assert words[0] == "snakemake"
    return [SNAKEMAKE, *words[1:]]


def rows_and_summary(results: Path, model: str) -> tuple[dict, dict]:
    rows = {f"{p.parent.name}/{p.stem}": json.loads(p.read_text())["status"]
            for p in sorted((results / "bench" / "local" / model).glob("*/bs*.json"))}
    frame = pd.read_csv(results / "summary.csv")
    summary = {f"{r.backend}/bs{r.batch_size}": r.status for r in frame.itertuples()}
    return rows, summary


# -- 1. a user's --configfile stands on its own ----------------------------------------------

def test_user_configfile_is_not_merged_over_the_default(tmp_path: Path) -> None:
    config = small_config(tmp_path / "results", [{"name": "echo", "kind": "fault"}], [1])
    config["model"] = {"source": "local", "path": str(tmp_path / "my-model")}  # no name
    own = snakemake(tmp_path, write(tmp_path / "mine.yaml", config), "-n", "--cores", "1")
    output = output_of(own)
    assert own.returncode == 0, output[-3000:]
    assert str(tmp_path / "results" / "models" / "my-model" / "card.json") in output
    assert "distilbert-sst2" not in output  # config/config.yaml's model.name
    assert "docs/results/h100" not in output  # nor its include_results

    # check-config and the workflow agree on a file without `backends`
    del config["backends"]
    partial = write(tmp_path / "partial.yaml", config)
    check = subprocess.run([str(Path(SNAKEMAKE).with_name("python")), "-m", "inferbench",
                            "check-config", str(partial)], capture_output=True, text=True,
                           env=fault_backend.plugin_env())
    assert check.returncode == 2 and "'backends' is a required property" in check.stderr
    dry = snakemake(tmp_path, partial, "-n", "--cores", "1")
    assert dry.returncode != 0
    assert "'backends' is a required property" in output_of(dry)


# -- 8. Snakemake killed with SIGKILL: the lock -----------------------------------------------

def test_rerun_after_sigkill_says_how_to_unlock(tmp_path: Path) -> None:
    marker = tmp_path / "hold"
    config = small_config(tmp_path / "results",
                          [{"name": "echo", "kind": "fault",
                            "options": {"mode": "hang", "marker": str(marker)}}], [1])
    configfile = write(tmp_path / "c.yaml", config)
    target = str(tmp_path / "results" / "summary_table.md")
    marker.touch()
    proc = subprocess.Popen(snakemake_command(tmp_path, configfile, "--cores", "1", target),
                            cwd=tmp_path, env=fault_backend.plugin_env(),
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not Path(f"{marker}.started").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole run, Snakemake included
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    marker.unlink()
    locked = snakemake(tmp_path, configfile, "--cores", "1", target)
    output = output_of(locked)
    assert locked.returncode != 0 and "Directory cannot be locked" in output
    hint = [line.strip() for line in output.splitlines()
            if line.strip().startswith("snakemake ") and "--unlock" in line]
    assert "no Snakemake process on this machine works in this folder" in output
    assert len(hint) == 1, output[-3000:]
    unlock = subprocess.run(paste(hint[0]), cwd=tmp_path, capture_output=True, text=True,
                            env=fault_backend.plugin_env(), timeout=300)
    assert unlock.returncode == 0, output_of(unlock)[-3000:]
    rerun = snakemake(tmp_path, configfile, "--cores", "1", target)
    assert rerun.returncode == 0, output_of(rerun)[-3000:]
    assert "--unlock" not in output_of(rerun)


# -- 9. a corrupted ONNX file ----------------------------------------------------------------

def test_corrupted_onnx_hint_works_when_pasted_and_summary_follows_rows(tmp_path: Path) -> None:
    config = small_config(tmp_path / "results", [
        {"name": "ort-cpu", "kind": "ort", "options": {"graph": "plain"}},
        {"name": "ort-cpu-fused", "kind": "ort", "options": {"graph": "fused"}},
        {"name": "echo", "kind": "fault"}], [1])
    config["measurement"].update(repeats=1, min_iterations=3, max_duration_s=0.5)
    configfile = write(tmp_path / "my config.yaml", config)
    results = tmp_path / "results"
    target = str(results / "summary_table.md")
    first = snakemake(tmp_path, configfile, "--cores", "2", target)
    assert first.returncode == 0, output_of(first)[-3000:]
    model = config["model"]["name"]
    plain = results / "onnx" / model / "plain.onnx"
    fused = (results / "onnx" / model / "fused.onnx").read_bytes()
    plain.write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])  # e.g. a full disk

    rerun = snakemake(tmp_path, configfile, "--cores", "2", target)
    assert rerun.returncode == 0, output_of(rerun)[-3000:]
    rows, summary = rows_and_summary(results, model)
    assert rows == summary  # the summary shows the rows as they are now
    assert rows == {"echo/bs1": "ok", "ort-cpu/bs1": "error", "ort-cpu-fused/bs1": "ok"}
    # the good graph made from it before the damage is kept, not remade from the damage
    assert (results / "onnx" / model / "fused.onnx").read_bytes() == fused
    reason = json.loads((results / "bench" / "local" / model / "ort-cpu" /
                         "bs1.json").read_text())["reason"]
    assert "corrupt artifact" in reason and "plain.onnx" in reason
    command = reason.split("rebuild it with: ", 1)[1]
    assert "--cores 2" in command and shlex.quote(str(configfile)) in command

    fixed = subprocess.run(paste(command), cwd=tmp_path, capture_output=True, text=True,
                           env=fault_backend.plugin_env(), timeout=600)
    assert fixed.returncode == 0, output_of(fixed)[-3000:]
    rows, summary = rows_and_summary(results, model)
    assert rows == summary == {"echo/bs1": "ok", "ort-cpu/bs1": "ok", "ort-cpu-fused/bs1": "ok"}


# -- 10. the GPU config on a machine without a GPU -------------------------------------------

def test_unavailable_rows_do_not_hide_committed_gpu_results(tmp_path: Path) -> None:
    committed = REPO / "docs" / "results" / "h100"
    row = committed / "distilbert-sst2" / "torch-eager-cuda-fp32" / "bs1.json"  # GPU baseline
    assert json.loads(row.read_text())["status"] == "ok"
    copied = tmp_path / "results" / "bench" / "h100" / "distilbert-sst2" / row.parent.name
    copied.mkdir(parents=True)
    unavailable = {**json.loads(row.read_text()), "status": "unavailable",
                   "reason": "no CUDA device", "views": {}}
    (copied / "bs1.json").write_text(json.dumps(unavailable))
    config = small_config(tmp_path / "results", [{"name": "echo", "kind": "fault"}], [1])
    config["model"]["name"] = "distilbert-sst2"
    config["include_results"] = [str(committed)]
    dry = snakemake(tmp_path, write(tmp_path / "c.yaml", config), "-n", "-p", "--cores", "1",
                    str(tmp_path / "results" / "summary_table.md"))
    output = output_of(dry)
    assert dry.returncode == 0, output[-3000:]
    assert str(row) in output  # the measured H100 row
    assert str(copied / "bs1.json") not in output  # not the unmeasurable machine's
    assert f"{committed} " in output or str(committed) in output


def test_run_that_fails_after_rewriting_rows_leaves_no_stale_summary(tmp_path: Path) -> None:
    config = small_config(tmp_path / "results", [{"name": "echo", "kind": "fault"}], [1])
    configfile = write(tmp_path / "c.yaml", config)
    results = tmp_path / "results"
    target = str(results / "summary_table.md")
    first = snakemake(tmp_path, configfile, "--cores", "1", target)
    assert first.returncode == 0, output_of(first)[-3000:]
    assert (results / "summary.csv").is_file()
    # the row is measured again, then the summary job fails (a broken included row)
    broken = tmp_path / "elsewhere" / "a100" / config["model"]["name"] / "echo"
    broken.mkdir(parents=True)
    (broken / "bs1.json").write_text("{not json")
    config["backends"][0]["options"] = {"mode": "jitter"}
    config["include_results"] = [str(tmp_path / "elsewhere" / "a100")]
    second = snakemake(tmp_path, write(tmp_path / "c.yaml", config), "--cores", "1", target)
    output = output_of(second)
    assert second.returncode != 0 and "Error in rule aggregate" in output
    assert json.loads((results / "bench" / "local" / config["model"]["name"] / "echo" /
                       "bs1.json").read_text())["options"] == {"mode": "jitter"}
    assert not (results / "summary.csv").exists()  # it showed the row as it was
    assert not (results / "summary_table.md").exists()
