"""Config validation and the per-job settings that drive reruns."""

from __future__ import annotations

import copy

import pytest
from helpers import REPO, tiny_config_dict

from inferbench.config import ConfigError, job_settings, load_config, validate_config


def test_default_and_shipped_configs_are_valid() -> None:
    config = load_config(REPO / "config" / "config.yaml")
    assert config["model"]["source"] == "architecture"
    assert config["batch_sizes"] == [1, 4, 8, 16]
    assert config["seq_len"] == 128
    # defaults filled in from the schema
    assert config["measurement"]["max_iterations"] == 100000
    assert config["export"]["exporter"] == "torchscript"


def test_job_settings_of_one_backend_ignore_the_others() -> None:
    config = validate_config(tiny_config_dict())
    before = job_settings(config, "torch-eager")
    changed = copy.deepcopy(tiny_config_dict())
    for entry in changed["backends"]:
        if entry["name"] == "ort-cpu":
            entry["options"]["graph_optimization_level"] = "basic"
    after_config = validate_config(changed)
    assert job_settings(after_config, "torch-eager") == before
    assert job_settings(after_config, "ort-cpu") != job_settings(config, "ort-cpu")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.update(bogus=1), "bogus"),
        (lambda c: c.update(seq_len="long"), "seq_len"),
        (lambda c: c.update(batch_sizes=[]), "batch_sizes"),
        (lambda c: c.update(batch_sizes=[0, 2]), "batch_sizes[0]"),
        (lambda c: c.update(seq_len=65), "max_position_embeddings = 64"),
        (lambda c: c["backends"].append({"name": "x", "kind": "nope"}), "allowed: "),
        (lambda c: c["backends"].append(dict(c["backends"][0])), "duplicate backend"),
        (lambda c: c["measurement"].update(min_duration_s=9, max_duration_s=1),
         "measurement.min_duration_s"),
        (lambda c: c["backends"][2]["options"].update(graph="magic"), "graph must be"),
        (lambda c: c["backends"][0].update(precision="int8"), "precision 'int8'"),
    ],
)
def test_bad_configs_name_the_key(mutate, expected: str) -> None:
    config = tiny_config_dict()
    mutate(config)
    with pytest.raises(ConfigError, match=None) as info:
        validate_config(config)
    assert expected in str(info.value)


def test_later_config_files_update_earlier_ones_key_by_key(tmp_path) -> None:
    # as `snakemake --configfile base.yaml overlay.yaml`: mappings merge, lists replace
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("measurement: {repeats: 5}\nbatch_sizes: [1, 16]\n")
    base = load_config(REPO / "config" / "config.yaml")
    merged = load_config(REPO / "config" / "config.yaml", overlay)
    assert merged["measurement"]["repeats"] == 5
    assert merged["batch_sizes"] == [1, 16]
    others = {k: v for k, v in merged["measurement"].items() if k != "repeats"}
    assert others == {k: v for k, v in base["measurement"].items() if k != "repeats"}
    assert merged["backends"] == base["backends"]
    overlay.write_text("measurement: {repeats: zero}\n")
    with pytest.raises(ConfigError, match="repeats"):
        load_config(REPO / "config" / "config.yaml", overlay)


def _backends(*entries: tuple[str, str, str]) -> dict:
    config = tiny_config_dict()
    config.pop("report", None)
    config["backends"] = [{"name": name, "kind": kind, "precision": precision}
                          for name, kind, precision in entries]
    return config


@pytest.mark.parametrize(("entries", "expected"), [
    # a config of one's own that named its eager backend otherwise
    ((("ov", "openvino", "fp32"), ("eager", "torch-eager", "fp32")), "eager"),
    # no eager PyTorch: the first FP32 backend
    ((("q", "ort", "int8"), ("ort", "ort", "fp32"), ("ov", "openvino", "fp32")), "ort"),
    # nothing in FP32: no speedups
    ((("q", "ort", "int8"),), None),
])
def test_left_out_baseline_is_this_configs_own_fp32_backend(entries: tuple,
                                                            expected: str | None) -> None:
    config = validate_config(_backends(*entries))
    assert config["report"]["baseline"] == expected
    assert validate_config(config)["report"]["baseline"] == expected  # validated again


def test_a_baseline_the_user_names_must_be_a_backend() -> None:
    config = _backends(("eager", "torch-eager", "fp32"), ("ort", "ort", "fp32"))
    config["report"] = {"baseline": "torch-eagr"}
    with pytest.raises(ConfigError, match=r"'report.baseline': 'torch-eagr' .* eager, ort"):
        validate_config(config)
    config["report"] = {"baseline": None}
    assert validate_config(config)["report"]["baseline"] is None
    config["report"] = {"baseline": "ort"}
    assert validate_config(config)["report"]["baseline"] == "ort"
