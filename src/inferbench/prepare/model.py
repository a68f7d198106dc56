"""Stages before any benchmark: model directory + card, inputs, FP32 reference."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from inferbench.config import builtin_architecture
from inferbench.hardware import flops_from_config
from inferbench.io import atomic_write_json, atomic_write_npz, sha256_file

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


class ModelSourceError(RuntimeError):
    """The model source cannot be turned into a model directory."""


def _hub_error(model_id: str, exc: Exception, offline: bool = True) -> ModelSourceError:
    why = ("it is not reachable from this machine (or HF_HUB_OFFLINE is set) and the model "
           "is not in the local cache" if offline else "the hub did not serve it")
    return ModelSourceError(
        f"could not load {model_id!r} from the Hugging Face hub: {why} "
        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).\n"
        "Fix: download it where the hub is reachable (`hf download "
        f"{model_id} --local-dir DIR`), copy DIR here and set model.source: local, "
        "model.path: DIR; or set model.source: architecture to benchmark the same "
        "architecture with seeded random weights (latency does not depend on weights)."
    )


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connect within ``timeout_s``.

    False under HF_HUB_OFFLINE. With a proxy configured the direct probe says
    nothing, so the hub counts as reachable and huggingface_hub's own timeouts apply.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _forward_input_names(model: Any) -> list[str]:
    params = inspect.signature(model.forward).parameters
    return [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in params]


def prepare_model(model_cfg: Mapping[str, Any], out_dir: Path, card_path: Path) -> dict[str, Any]:
    """Write a save_pretrained directory at ``out_dir`` and its JSON card."""
    import torch
    import transformers

    from inferbench.prepare.modeling import _auto_class

    task = model_cfg.get("task", "sequence-classification")
    source = model_cfg["source"]
    seed = int(model_cfg.get("seed", 0))
    auto = _auto_class(task)
    tokenizer = None
    tokenizer_folder: Path | None = None
    loading: Mapping[str, Any] = {}

    if source == "architecture":
        fields = dict(builtin_architecture(model_cfg["id"]) or {})
        fields.update(model_cfg.get("architecture") or {})
        model_type = fields.pop("model_type")
        fields.pop("architectures", None)
        config = transformers.AutoConfig.for_model(model_type, **fields)
        torch.manual_seed(seed)
        model = auto.from_config(config)
        weights = "random"
    elif source == "local":
        path = Path(model_cfg["path"])
        if not path.is_dir():
            raise ModelSourceError(f"model.path {str(path)!r} does not exist or is not a folder")
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"model.path {str(path)!r} has no config.json: "
                                   "not a save_pretrained model directory")
        if not any((path / name).is_file() for name in WEIGHT_FILES):
            raise ModelSourceError(
                f"model.path {str(path)!r} has no weights (looked for {', '.join(WEIGHT_FILES)})")
        model, loading = auto.from_pretrained(str(path), local_files_only=True,
                                              output_loading_info=True)
        tokenizer = _try_tokenizer(str(path), local_only=True)
        tokenizer_folder = path
        weights = "pretrained"
    elif source == "hub":
        model_id = model_cfg["id"]
        # Unreachable hub: read the local cache only, so the job fails in seconds
        # instead of retrying each download for minutes.
        cache_only = not hub_reachable()
        try:
            model, loading = auto.from_pretrained(model_id, local_files_only=cache_only,
                                                  output_loading_info=True)
        except OSError as exc:
            raise _hub_error(model_id, exc, offline=cache_only) from exc
        tokenizer = _try_tokenizer(model_id, local_only=cache_only)
        weights = "pretrained"
    else:
        raise ModelSourceError(f"unknown model.source {source!r}")

    model.eval()
    # what the checkpoint was saved as (save_pretrained below overwrites it)
    saved = list(getattr(model.config, "architectures", None) or [])
    if source == "architecture":
        tokenizer_note = "the model is built from its architecture and has no tokenizer"
    else:
        tokenizer_note = tokenizer_problem(tokenizer, tokenizer_folder)
    if tokenizer_note:
        tokenizer = None  # never tokenize with an empty or invented tokenizer
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp_dir = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    model.save_pretrained(str(tmp_dir))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp_dir))
    os.replace(tmp_dir, out_dir)

    config = model.config
    card = {
        "name": model_cfg.get("name"),
        "source": source,
        "id": model_cfg.get("id"),
        "path": model_cfg.get("path"),
        "task": task,
        "weights": weights,
        "seed": seed if weights == "random" else None,
        "model_type": config.model_type,
        "architecture": type(model).__name__,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "num_labels": getattr(config, "num_labels", None) if task == "sequence-classification"
        else None,
        "hidden_size": getattr(config, "hidden_size", None) or getattr(config, "dim", None),
        "num_heads": getattr(config, "num_attention_heads", None)
        or getattr(config, "n_heads", None),
        "num_layers": getattr(config, "num_hidden_layers", None)
        or getattr(config, "n_layers", None),
        "max_position_embeddings": getattr(config, "max_position_embeddings", None),
        "vocab_size": config.vocab_size,
        "pad_token_id": config.pad_token_id if config.pad_token_id is not None else 0,
        "input_names": _forward_input_names(model),
        # Matmul FLOP coefficients (per token, per token and position, per sequence):
        # each row's achieved TFLOP/s comes from them (inferbench.hardware).
        "flops": flops_from_config(config, task),
        "has_tokenizer": tokenizer is not None,
        # why inputs are synthetic ids ("" when the model's tokenizer makes them)
        "tokenizer": {"real": tokenizer is not None, "reason": tokenizer_note,
                      "size": len(tokenizer) if tokenizer is not None else None},
        "saved_architecture": saved[0] if saved and weights == "pretrained" else None,
        "head_warning": head_warning(task, saved, type(model).__name__, loading)
        if weights == "pretrained" else None,
        "files": {p.name: sha256_file(p) for p in sorted(out_dir.iterdir()) if p.is_file()},
        "transformers": transformers.__version__,
    }
    atomic_write_json(card_path, card)
    return card


# Files a tokenizer is read from; a model folder with none of them has no tokenizer,
# whatever AutoTokenizer returns for it (transformers 5 can build an empty one).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model", "source.spm", "bpe.codes")


def tokenizer_problem(tokenizer: Any, folder: Path | None) -> str:
    """Why ``tokenizer`` cannot make real inputs ("" when it can): no tokenizer, no
    tokenizer files in the model folder, or no vocabulary beyond special tokens."""
    if folder is not None and not any((folder / n).is_file() for n in TOKENIZER_FILES):
        return (f"model.path has no tokenizer files (none of {', '.join(TOKENIZER_FILES)})")
    if tokenizer is None:
        return "no tokenizer could be loaded for the model"
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    size = len(tokenizer)
    if size <= len(special):
        return (f"its tokenizer has {size} token(s), none beyond its {len(special)} special "
                "token(s): an empty tokenizer")
    return ""


def head_warning(task: str, saved: list[str], architecture: str,
                 loading: Mapping[str, Any]) -> str | None:
    """Why the checkpoint's weights do not cover the model that runs, or None.

    ``saved`` is the checkpoint's `architectures` (what it was saved as).
    transformers fills weights a checkpoint lacks (a classification head for a
    headless encoder or a checkpoint of another task) with random values and only
    logs a warning; the card and the summary say it instead.
    """
    missing = sorted(set(loading.get("missing_keys") or ())
                     | {k[0] for k in loading.get("mismatched_keys") or ()})
    if task == "feature-extraction":
        missing = [k for k in missing if not k.startswith("pooler")]  # not used in pooling
    wanted = "ForSequenceClassification" if task == "sequence-classification" else None
    shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
    if wanted and saved and not any(a.endswith(wanted) for a in saved):
        head = (f"its {shown} freshly initialised" if missing
                else "its head weights were trained for that task, not this one")
        return (f"the checkpoint was saved as {saved[0]} (a {_saved_task(saved[0])} "
                f"checkpoint), but task {task} runs {architecture}: {head}.")
    if missing:
        return (f"{len(missing)} weight(s) of {architecture} are not in the checkpoint and "
                f"were freshly initialised: {shown}.")
    return None


def _saved_task(architecture: str) -> str:
    """'BertForTokenClassification' -> 'token-classification', 'BertModel' -> 'headless
    encoder'."""
    import re

    if "For" not in architecture:
        return "headless encoder"
    words = re.findall(r"[A-Z][a-z]+|[A-Z]+(?![a-z])", architecture.split("For", 1)[1])
    return "-".join(w.lower() for w in words)


def _try_tokenizer(name_or_path: str, local_only: bool) -> Any:
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_only)
    except Exception:  # missing or broken tokenizer files: synthetic ids, with the reason
        return None


def build_inputs(model_dir: Path, card: Mapping[str, Any], seq_len: int, batch: int,
                 sentences: Path | None, seed: int, out_path: Path) -> dict[str, np.ndarray]:
    """Deterministic inputs for one (model, seq_len, batch); every backend reads them."""
    max_positions = card.get("max_position_embeddings")
    if max_positions and seq_len > max_positions:
        raise ValueError(f"seq_len {seq_len} exceeds the model's max_position_embeddings "
                         f"{max_positions}")
    names = list(card["input_names"])
    arrays: dict[str, np.ndarray]
    origin: str
    if card.get("has_tokenizer") and sentences is not None and sentences.is_file():
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir),
                                                               local_files_only=True)
        lines = [ln.strip() for ln in sentences.read_text().splitlines() if ln.strip()]
        if not lines:
            raise ValueError(f"sentences file {sentences} is empty")
        texts = [lines[i % len(lines)] for i in range(batch)]
        encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=seq_len,
                            return_tensors="np")
        arrays = {name: np.asarray(encoded[name], dtype=np.int64) for name in names
                  if name in encoded}
        for name in names:
            arrays.setdefault(name, np.zeros((batch, seq_len), dtype=np.int64))
        origin = f"tokenizer:{sentences.name}"
    else:
        # Seeded synthetic ids; lengths vary per row so the mask is exercised.
        rng = np.random.default_rng([seed, seq_len, batch])
        vocab = int(card["vocab_size"])
        low = min(1000, vocab // 2)
        ids = rng.integers(low, vocab, size=(batch, seq_len), dtype=np.int64)
        lengths = rng.integers(max(1, seq_len // 2), seq_len + 1, size=batch)
        mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int64)
        ids = np.where(mask == 1, ids, int(card["pad_token_id"]))
        arrays = {"input_ids": ids, "attention_mask": mask,
                  "token_type_ids": np.zeros_like(ids)}
        arrays = {name: arrays[name] for name in names}
        origin = "synthetic"
    atomic_write_npz(out_path, arrays)
    atomic_write_json(out_path.with_suffix(".json"), {
        "origin": origin, "batch": batch, "seq_len": seq_len, "input_names": names,
        "sha256": sha256_file(out_path)})
    return arrays


def load_inputs(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def compute_reference(model_dir: Path, card: Mapping[str, Any], inputs_path: Path,
                      out_path: Path, threads: int) -> np.ndarray:
    """FP32 PyTorch eager output (eager attention: the plainest math) for parity checks."""
    import torch

    from inferbench.prepare.modeling import load_wrapper, ordered_inputs

    torch.set_num_threads(threads)
    wrapper = load_wrapper(model_dir, card, attn_implementation="eager")
    inputs = load_inputs(inputs_path)
    with torch.inference_mode():
        tensors = [torch.from_numpy(a) for a in ordered_inputs(inputs, card["input_names"])]
        output = wrapper(*tensors).float().numpy()
    if not np.isfinite(output).all():
        raise ValueError(
            "the FP32 reference output holds NaN or Inf: the model's weights (or its config) "
            "give non-finite outputs, so no backend can be checked against it; check the "
            "checkpoint's weights")
    atomic_write_npz(out_path, {"output": output})
    return output


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
