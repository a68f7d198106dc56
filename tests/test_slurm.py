"""The multi-target sweep on a real SLURM cluster: tests/slurm/run_slurm_test.sh.

It installs Debian's slurm-wlm, slurmdbd, mariadb-server and munge, starts a throwaway
single-node cluster, runs a two-target sweep with --executor slurm and checks it
through sacct (about 3.5 minutes on 2 cores; see docs/cluster.md). It runs when
INFERBENCH_SLURM_TEST=1, or in CI (CI=true) as root on a machine with apt-get;
INFERBENCH_SLURM_TEST=0 turns it off. `make test-slurm` runs the script directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = pytest.mark.workflow

SCRIPT = REPO / "tests" / "slurm" / "run_slurm_test.sh"


def enabled() -> tuple[bool, str]:
    flag = os.environ.get("INFERBENCH_SLURM_TEST", "")
    if flag == "0":
        return False, "INFERBENCH_SLURM_TEST=0"
    if flag != "1" and os.environ.get("CI", "").lower() not in ("1", "true"):
        return False, "set INFERBENCH_SLURM_TEST=1 to run (it installs SLURM with apt)"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False, "needs root and apt-get (it installs SLURM and starts its daemons)"
    return True, ""


def test_two_target_sweep_on_a_real_slurm_cluster(tmp_path: Path) -> None:
    run, why = enabled()
    if not run:
        pytest.skip(why)
    work = tmp_path / "slurm"
    env = {**os.environ, "SNAKEMAKE": str(Path(sys.executable).with_name("snakemake"))}
    # The script stops its daemons itself; the timeout here is a last resort above the
    # script's own `timeout -s KILL` on the sweep.
    proc = subprocess.run(["bash", str(SCRIPT), str(work)], capture_output=True, text=True,
                          env=env, timeout=1800)
    output = proc.stdout + proc.stderr
    if proc.returncode == 77:
        pytest.skip(output.strip().splitlines()[-1])
    assert proc.returncode == 0, output[-6000:]
    timings = json.loads((work / "timings.json").read_text())
    print(f"SLURM test timings: {timings}")
    assert "PASS" in output
