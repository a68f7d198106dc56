"""What a new user with their own model and config runs into, in-process.

Tiny local models saved with save_pretrained (random weights, no hub), configs with
mistakes, failures while preparing inputs and the reference, out-of-memory messages,
a stale Snakemake lock, results from machines that could not measure. The workflow
side is in test_new_user_workflow.py; docs/faults.md maps each case to its test.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import fault_backend  # noqa: F401  (registers the fault backends)
import pytest
from helpers import tiny_config_dict
from test_faults import job_paths, run_job, settings_for

from inferbench.cli import main
from inferbench.config import ConfigError, load_config, validate_config
from inferbench.measure.harness import error_reason
from inferbench.prepare.failures import explain, npz_failure, onnx_failure
from inferbench.prepare.model import build_inputs, prepare_model

BERT = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 32}
WORDS = ["the", "film", "was", "good", "bad", "a", "very", "not", "plot", "actors"]


def save_bert(folder: Path, head: str = "BertForSequenceClassification",
              tokenizer: str | None = None) -> Path:
    """A tiny BERT checkpoint saved as ``head`` (random weights), optionally with a
    tokenizer: "real" (a small word vocabulary), "empty" (special tokens only) or
    "nopad" (real words, no pad token)."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(**BERT)
    getattr(transformers, head)(config).save_pretrained(str(folder))
    if tokenizer is not None:
        from tokenizers import Tokenizer, models, pre_tokenizers

        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] if tokenizer != "nopad" else ["[UNK]"]
        words = WORDS if tokenizer != "empty" else []
        vocab = {w: i for i, w in enumerate([*specials, *words])}
        core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
        core.pre_tokenizer = pre_tokenizers.Whitespace()
        kwargs = {"unk_token": "[UNK]"}
        if tokenizer != "nopad":
            kwargs.update(pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")
        transformers.PreTrainedTokenizerFast(tokenizer_object=core, **kwargs) \
            .save_pretrained(str(folder))
    return folder


def local_card(tmp_path: Path, folder: Path, task: str = "sequence-classification") -> dict:
    model = {"source": "local", "path": str(folder), "name": folder.name, "task": task}
    return prepare_model(model, tmp_path / "prepared" / "hf", tmp_path / "prepared" / "card.json")


def sentences(tmp_path: Path) -> Path:
    path = tmp_path / "sentences.txt"
    path.write_text("the film was good\na very bad plot\nnot the actors\n")
    return path


# -- 1. the summary names the model that ran ----------------------------------------------

def test_summary_heading_names_the_model_that_ran() -> None:
    """A local model's heading comes from its card, never from a leftover model.id."""
    from inferbench.report.provenance import header_lines

    card = {"name": "my-bert", "source": "local", "path": "/models/my-bert",
            "id": "distilbert-base-uncased-finetuned-sst-2-english", "weights": "pretrained",
            "architecture": "BertForSequenceClassification", "parameters": 4e6,
            "has_tokenizer": True}
    text = "\n".join(header_lines(card, {"configfiles": ["my.yaml"], "sentences": True}))
    assert "Model `my-bert`: the local folder `/models/my-bert`" in text
    assert "distilbert" not in text
    assert "Config: `my.yaml` (read on its own" in text


def test_check_config_reads_the_file_on_its_own(tmp_path: Path, capsys) -> None:
    """check-config and the workflow agree: a file without `backends` is refused by
    both (the workflow no longer fills it in from config/config.yaml)."""
    config = tiny_config_dict()
    del config["backends"]
    path = tmp_path / "mine.yaml"
    path.write_text(json.dumps(config))
    with pytest.raises(SystemExit) as info:
        main(["check-config", str(path)])
    assert info.value.code == 2
    assert "'backends' is a required property" in capsys.readouterr().err


def test_check_config_notes_a_model_folder_that_is_not_there(tmp_path: Path, capsys) -> None:
    config = tiny_config_dict()
    config["model"] = {"source": "local", "path": str(tmp_path / "my-bert"),
                       "task": "sequence-classification"}
    path = tmp_path / "mine.yaml"
    path.write_text(json.dumps(config))
    main(["check-config", str(path)])  # valid: the folder may exist where the job runs
    said = capsys.readouterr()
    assert said.out.strip() == f"{path}: valid"
    assert f"model.path '{tmp_path / 'my-bert'}' is not a folder here" in said.err
    (tmp_path / "my-bert").mkdir()
    main(["check-config", str(path)])
    assert capsys.readouterr().err == ""


# -- 2. a real tokenizer, or synthetic ids with the reason ---------------------------------

@pytest.mark.parametrize(("tokenizer", "real", "why"), [
    (None, False, "model.path has no tokenizer files"),
    ("empty", False, "none beyond its"),
    ("real", True, ""),
])
def test_tokenizer_is_real_or_inputs_are_synthetic(tmp_path: Path, tokenizer: str | None,
                                                   real: bool, why: str) -> None:
    from inferbench.report.provenance import inputs_line

    card = local_card(tmp_path, save_bert(tmp_path / "m", tokenizer=tokenizer))
    assert card["has_tokenizer"] is real and card["tokenizer"]["real"] is real
    assert why in card["tokenizer"]["reason"]
    out = tmp_path / "inputs.npz"
    arrays = build_inputs(tmp_path / "prepared" / "hf", card, 16, 3, sentences(tmp_path), 0, out)
    origin = json.loads(out.with_suffix(".json").read_text())["origin"]
    assert origin == ("tokenizer:sentences.txt" if real else "synthetic")
    # three different sentences (or random ids): never identical rows
    assert len({tuple(row) for row in arrays["input_ids"]}) == 3
    line = inputs_line(card, sentences=True)
    assert ("synthetic" in line) is (not real)
    if not real:
        assert why in line


# -- 3. a head the checkpoint does not have ------------------------------------------------

@pytest.mark.parametrize(("head", "fragments"), [
    ("BertForTokenClassification", ["saved as BertForTokenClassification",
                                    "token-classification checkpoint"]),
    ("BertModel", ["saved as BertModel", "headless encoder", "classifier.weight",
                   "freshly initialised"]),
])
def test_checkpoint_of_another_task_is_called_out(tmp_path: Path, head: str,
                                                  fragments: list[str]) -> None:
    from inferbench.report.provenance import header_lines

    card = local_card(tmp_path, save_bert(tmp_path / "m", head=head))
    assert card["saved_architecture"] == head
    for fragment in fragments:
        assert fragment in card["head_warning"], card["head_warning"]
    text = "\n".join(header_lines(card, {}))
    assert "**Warning: the checkpoint was saved as" in text
    assert "Parity against a random head says nothing" in text


def test_checkpoint_of_the_task_gets_no_warning(tmp_path: Path) -> None:
    card = local_card(tmp_path, save_bert(tmp_path / "m"))
    assert card["head_warning"] is None
    feature = local_card(tmp_path / "f", save_bert(tmp_path / "f-model"), "feature-extraction")
    assert feature["head_warning"] is None  # the unused pooler is not a warning


# -- 4. misspelt architecture fields, batch sizes no machine can hold -----------------------

def test_unknown_architecture_field_is_rejected_with_the_allowed_names() -> None:
    config = tiny_config_dict()
    config["model"]["architecture"]["n_layerz"] = 2
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert "'model.architecture': unknown field(s) ['n_layerz']" in message
    assert "did you mean 'n_layerz' -> 'n_layers'" in message
    assert "allowed: " in message and "hidden_dim" in message


def test_unknown_model_type_is_rejected() -> None:
    config = tiny_config_dict()
    config["model"]["architecture"]["model_type"] = "bertt"
    with pytest.raises(ConfigError, match=r"'model.architecture.model_type': 'bertt'"):
        validate_config(config)


def test_batch_size_beyond_the_cap_is_rejected() -> None:
    config = tiny_config_dict()
    config["batch_sizes"] = [1, 100000]
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert "'batch_sizes[1]'" in str(info.value) and "4096" in str(info.value)


# -- 5. inputs and reference failures become error rows -----------------------------------

def test_tokenizer_without_pad_token_gives_error_rows_not_a_traceback(
        tmp_path: Path, capsys) -> None:
    card = local_card(tmp_path, save_bert(tmp_path / "m", tokenizer="nopad"))
    root = tmp_path / "prepared"
    main(["inputs", "--model-dir", str(root / "hf"), "--card", str(root / "card.json"),
          "--seq-len", "16", "--batch", "2", "--sentences", str(sentences(tmp_path)),
          "--out", str(root / "inputs.npz")])
    main(["reference", "--model-dir", str(root / "hf"), "--card", str(root / "card.json"),
          "--inputs", str(root / "inputs.npz"), "--out", str(root / "reference.npz")])
    err = capsys.readouterr().err
    assert "Traceback" not in err and card["has_tokenizer"]
    reason = npz_failure(root / "inputs.npz")
    assert reason and reason.startswith("inputs failed: the tokenizer has no pad token")
    assert "remove `sentences:`" in reason and reason in err
    assert npz_failure(root / "reference.npz") == reason
    paths = job_paths({"root": root})
    row = run_job(settings_for("fault"), 2, paths, "m", "local", tmp_path / "row.json")
    assert row["status"] == "error" and row["reason"] == reason


def test_nan_reference_gives_error_rows_down_to_the_onnx_backends(tiny_model: dict,
                                                                  tmp_path: Path,
                                                                  capsys) -> None:
    import torch
    import transformers

    root = tmp_path / "nan"
    shutil.copytree(tiny_model["root"], root)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(root / "hf"))
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    model.save_pretrained(str(root / "hf"))
    card = str(root / "card.json")
    main(["reference", "--model-dir", str(root / "hf"), "--card", card, "--inputs",
          str(root / "inputs.npz"), "--out", str(root / "reference.npz")])
    export = json.dumps({"opset": 17, "attn_implementation": "eager", "exporter": "torchscript"})
    main(["export", "--model-dir", str(root / "hf"), "--card", card, "--inputs",
          str(root / "inputs.npz"), "--reference", str(root / "reference.npz"), "--export",
          export, "--out", str(root / "plain.onnx")])
    main(["optimize", "--input", str(root / "plain.onnx"), "--card", card,
          "--out", str(root / "fused.onnx")])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    reason = npz_failure(root / "reference.npz")
    assert reason and reason.startswith("reference failed: ValueError: the FP32 reference "
                                        "output holds NaN or Inf")
    assert onnx_failure(root / "fused.onnx") == f"no ONNX export: {reason}"
    paths = job_paths({"root": root}, onnx=root / "fused.onnx")
    row = run_job(settings_for("ort", {"graph": "fused"}), 2, paths, "m", "local",
                  tmp_path / "row.json")
    assert row["status"] == "error" and reason in row["reason"] and not row["views"]
    assert not row.get("traceback")
    # a graph made from the failed export says why, also where this batch's reference is good
    paths = job_paths(tiny_model, onnx=root / "fused.onnx")
    row = run_job(settings_for("ort", {"graph": "fused"}), 2, paths, "m", "local",
                  tmp_path / "row2.json")
    assert row["status"] == "error" and row["reason"] == f"no ONNX export: {reason}"


@pytest.mark.parametrize(("message", "fragment"), [
    ("self.model.config.decoder_start_token_id has to be defined. In T5 it is usually set "
     "to the pad_token_id.", "set it in the model's config.json"),
    ("Cannot handle batch sizes > 1 if no padding token is defined.", "batch_sizes: [1]"),
    ("Asking to pad but the tokenizer does not have a padding token.", "remove `sentences:`"),
])
def test_known_preparation_failures_say_what_to_change(message: str, fragment: str) -> None:
    assert fragment in explain(ValueError(message))


# -- 6. check-config on files that are not configs ---------------------------------------

def test_check_config_yaml_syntax_error_gives_line_and_column(tmp_path: Path, capsys) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  source: architecture\nbatch_sizes: [1, 2\nseq_len: 16\n")
    with pytest.raises(SystemExit) as info:
        main(["check-config", str(path)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert "not valid YAML at line 4, column 8" in err, err
    assert len(err.strip().splitlines()) == 1


def test_check_config_of_a_list_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- model: x\n- seq_len: 16\n")
    with pytest.raises(SystemExit):
        main(["check-config", str(path)])
    err = capsys.readouterr().err
    assert "the config is a YAML list, not a mapping of keys" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.yaml")


# -- 7. CPU out of memory ------------------------------------------------------------------

def test_cpu_out_of_memory_is_labelled() -> None:
    import torch

    with pytest.raises(RuntimeError) as info:
        torch.empty(2**62, dtype=torch.uint8)  # torch's DefaultCPUAllocator refuses
    assert error_reason(info.value).startswith("out of memory: RuntimeError: ")
    ort = RuntimeError(
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while "
        "running MatMul node. Status Message: bfc_arena.cc:359 AllocateRawInternal Failed to "
        "allocate memory for requested buffer of size 4000000000")
    assert error_reason(ort).startswith("out of memory: ")
    assert not error_reason(RuntimeError("shape mismatch")).startswith("out of memory")


# -- 8. a stale Snakemake lock ---------------------------------------------------------------

def test_stale_lock_hint_says_what_to_type(tmp_path: Path) -> None:
    from inferbench.recovery import stale_lock_hint

    argv = ["/venv/bin/snakemake", "--cores", "1", "--configfile", "my config.yaml"]
    assert stale_lock_hint(tmp_path, argv, live_dirs=set()) is None  # no lock
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("results/x\n")
    hint = stale_lock_hint(tmp_path, argv, live_dirs=set())
    assert hint and "snakemake --cores 1 --configfile 'my config.yaml' --unlock" in hint
    # a Snakemake that works in this folder holds it: no hint
    assert stale_lock_hint(tmp_path, argv, live_dirs={tmp_path.resolve()}) is None
    assert stale_lock_hint(tmp_path, [*argv, "--unlock"], live_dirs=set()) is None


# -- 9. the rebuild hint is the run's own command ---------------------------------------------

def test_rebuild_hint_carries_cores_and_the_users_configfile(monkeypatch) -> None:
    from inferbench.io import rebuild_hint
    from inferbench.recovery import RERUN_ENV, rerun_command

    command = rerun_command(2, Path("/repo/Snakefile"), Path("/work"), ["/work/my.yaml"],
                            ["results_dir='out'"])
    assert command == ["snakemake", "--cores", "2", "--snakefile", "/repo/Snakefile",
                       "--directory", "/work", "--configfile", "/work/my.yaml", "--config",
                       "results_dir='out'"]
    on_slurm = rerun_command(1, Path("/work/Snakefile"), Path("/work"), [], [],
                             ["snakemake", "--workflow-profile", "profiles/slurm", "all"])
    assert on_slurm == ["snakemake", "--cores", "1", "--workflow-profile", "profiles/slurm"]
    monkeypatch.setenv(RERUN_ENV, "snakemake --cores 2 --configfile /work/my.yaml")
    assert rebuild_hint(Path("r/plain.onnx")) == (
        "rebuild it with: snakemake --cores 2 --configfile /work/my.yaml --forcerun r/plain.onnx")


def test_stale_summary_is_detected(tmp_path: Path) -> None:
    from inferbench.recovery import stale_summary

    row, summary = tmp_path / "bs1.json", tmp_path / "summary.csv"
    row.write_text("{}")
    summary.write_text("x")
    os.utime(row, (1, 1))
    assert stale_summary(summary, [row]) is None
    os.utime(row, None)  # rewritten after the summary
    os.utime(summary, (1, 1))
    assert "rewritten after it" in (stale_summary(summary, [row]) or "")
    assert "no longer exist" in (stale_summary(summary, [tmp_path / "bs2.json"]) or "")


# -- 10. a machine that could not measure never hides one that did --------------------------

def _row(folder: Path, backend: str, status: str) -> Path:
    path = folder / "m" / backend / "bs1.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"status": status}))
    return path


def test_unavailable_row_never_hides_a_measured_one(tmp_path: Path) -> None:
    from inferbench.foreign import pick_foreign, source_counts
    from inferbench.report.provenance import sources_lines

    included, copied = tmp_path / "docs" / "h100", tmp_path / "results" / "bench" / "h100"
    measured = _row(included, "trt-fp16", "ok")
    _row(copied, "trt-fp16", "unavailable")  # config/gpu.yaml run on a CPU machine
    newer = _row(copied, "ort-cuda", "ok")
    _row(included, "ort-cuda", "ok")
    _row(tmp_path / "results" / "bench" / "local", "torch-eager", "ok")
    chosen = pick_foreign([included], [copied, tmp_path / "results" / "bench" / "local"], "m",
                          ["local"])
    assert chosen == {("h100", "ort-cuda", "bs1.json"): newer,
                      ("h100", "trt-fp16", "bs1.json"): measured}
    counts = source_counts(chosen)
    assert counts == {"h100": {str(copied): 1, str(included): 1}}
    assert any(str(included) in line for line in sources_lines({"sources": counts}))


def test_unavailable_copy_is_used_when_nothing_measured(tmp_path: Path) -> None:
    from inferbench.foreign import pick_foreign

    included, copied = tmp_path / "inc" / "h100", tmp_path / "bench" / "h100"
    _row(included, "trt-fp16", "unavailable")
    copy = _row(copied, "trt-fp16", "unavailable")
    assert list(pick_foreign([included], [copied], "m", []).values()) == [copy]


# -- hostile trial: a model type without SDPA attention -------------------------------------

MPNET = {"model_type": "mpnet", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1,
         "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 40}


def test_model_without_sdpa_attention_is_a_row_that_says_what_to_set(tmp_path: Path) -> None:
    from inferbench.prepare.model import compute_reference

    card = prepare_model({"source": "architecture", "id": "mpnet-tiny", "architecture": MPNET},
                         tmp_path / "hf", tmp_path / "card.json")
    build_inputs(tmp_path / "hf", card, 16, 2, None, 0, tmp_path / "inputs.npz")
    compute_reference(tmp_path / "hf", card, tmp_path / "inputs.npz",
                      tmp_path / "reference.npz", 1)  # eager attention
    paths = job_paths({"root": tmp_path})
    row = run_job(settings_for("torch-eager"), 2, paths, "m", "local", tmp_path / "sdpa.json")
    assert row["status"] == "unavailable"
    assert "set `options: {attn_implementation: eager}`" in row["reason"]
    row = run_job(settings_for("torch-eager", {"attn_implementation": "eager"}), 2, paths, "m",
                  "local", tmp_path / "eager.json")
    assert row["status"] == "ok", row["reason"]
