"""Shared fixtures: a tiny random DistilBERT prepared once per test session."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
from helpers import run_snakemake, tiny_config_dict, write_config  # noqa: F401  (re-exported)


def pytest_report_header() -> str:
    """The CPU the tests ran on: OpenVINO, oneDNN and Inductor take other code paths per
    instruction set, so a failure elsewhere starts with which one it was."""
    from inferbench import isa

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("model name")), platform.processor())
    return f"cpu: {model}, {os.cpu_count()} cores; {isa.detect().describe()}"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Prepared tiny model dir, card, inputs (batch 2) and FP32 reference."""
    from inferbench.config import validate_config
    from inferbench.prepare.model import build_inputs, compute_reference, prepare_model

    config = validate_config(tiny_config_dict())
    root = tmp_path_factory.mktemp("tiny_model")
    card = prepare_model(config["model"], root / "hf", root / "card.json")
    build_inputs(root / "hf", card, config["seq_len"], 2, None, 0, root / "inputs.npz")
    compute_reference(root / "hf", card, root / "inputs.npz", root / "reference.npz", 1)
    return {"config": config, "root": root, "card": card}
