"""Helpers shared by the tests: paths, the tiny config, running the real workflow."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_config_dict() -> dict:
    return yaml.safe_load(TINY_CONFIG.read_text())


def run_snakemake(workdir: Path, configfile: Path, *args: str,
                  extra_config: list[str] | None = None, check: bool = True,
                  timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real workflow on ``configfile`` inside ``workdir``."""
    command = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--workflow-profile", str(REPO / "profiles" / "default"),
               "--configfile", str(configfile),
               "--config", f"results_dir={workdir / 'results'}", *(extra_config or []),
               *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}"
                             f"\n{result.stderr[-6000:]}")
    return result


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from Snakemake's 'Job stats' table of a dry run."""
    counts: dict[str, int] = {}
    if "Job stats:" in dry_run_output:
        for line in dry_run_output.split("Job stats:", 1)[1].splitlines()[3:]:
            match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if not match:
                break
            counts[match.group(1)] = int(match.group(2))
    counts.pop("total", None)
    return counts
