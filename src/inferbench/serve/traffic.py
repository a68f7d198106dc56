"""Traffic with real request lengths, and the padding strategies a deployment picks from.

A traffic file (``traffic.npz``) holds one request per row: token ids, attention
mask (and token type ids when the model takes them) padded to ``seq_len``, and the
request's real length. The serving job pads each batch it forms to the length its
padding strategy promises (:func:`padded_length`) and, for a backend with static
shapes, to a batch size it was built for (:func:`padded_rows`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.backends.base import ShapeSupport
from inferbench.io import atomic_write_json, atomic_write_npz, sha256_file

PADDINGS = ("pad_max", "dynamic", "buckets")


def padded_length(strategy: str, lengths: Sequence[int], seq_len: int,
                  buckets: Sequence[int] = ()) -> int:
    """Sequence length a batch of requests with ``lengths`` is padded to.

    pad_max: seq_len. dynamic: the longest request. buckets: the smallest bucket
    that holds the longest request (seq_len when none does).
    """
    longest = min(max(int(n) for n in lengths), seq_len)
    if strategy == "pad_max":
        return seq_len
    if strategy == "dynamic":
        return longest
    if strategy == "buckets":
        return min([b for b in buckets if longest <= b <= seq_len] or [seq_len])
    raise ValueError(f"unknown padding strategy {strategy!r}; allowed: {', '.join(PADDINGS)}")


def padded_rows(rows: int, support: ShapeSupport, batch_sizes: Sequence[int]) -> int:
    """Batch size a batch of ``rows`` requests runs at on a backend with ``support``."""
    if support.batches == "any":
        return rows
    built = sorted(batch_sizes)
    if support.batches == "largest":
        return built[-1]
    return next((b for b in built if b >= rows), built[-1])


def max_rows(max_batch: int, support: ShapeSupport, batch_sizes: Sequence[int]) -> int:
    """The largest batch the batcher may form: a static-shape backend caps it at the
    largest batch it was built for."""
    return max_batch if support.batches == "any" else min(max_batch, max(batch_sizes))


def unavailable_reason(strategy: str, support: ShapeSupport, kind: str, seq_len: int) -> str:
    """Why a backend cannot serve with ``strategy`` ("" when it can)."""
    if strategy == "dynamic" and support.lengths != "any":
        return (f"padding 'dynamic' needs dynamic shapes; {kind} {support.why}, so every new "
                "batch length would re-specialise it mid-run: use 'buckets' or 'pad_max'"
                if support.lengths == "few" else
                f"padding 'dynamic' needs dynamic shapes; {kind} {support.why}: only "
                f"'pad_max' (length {seq_len}) runs on it")
    if strategy == "buckets" and support.lengths == "seq_len":
        return (f"padding 'buckets' needs several lengths; {kind} {support.why}: only "
                f"'pad_max' (length {seq_len}) runs on it")
    return ""


@dataclass(frozen=True)
class Traffic:
    """Requests padded to seq_len, one row each, with their real lengths."""

    arrays: Mapping[str, np.ndarray]
    lengths: np.ndarray
    origin: str

    @property
    def count(self) -> int:
        return len(self.lengths)

    @property
    def seq_len(self) -> int:
        return int(next(iter(self.arrays.values())).shape[1])

    def batch(self, indices: Sequence[int], length: int, rows: int | None = None
              ) -> dict[str, np.ndarray]:
        """Inputs of the requests ``indices`` cut to ``length`` tokens, padded up to
        ``rows`` with copies of the first request (a fully masked row can give NaN in
        some attention kernels); callers drop the extra rows' outputs."""
        index = np.asarray(indices, dtype=np.int64)
        out = {name: np.ascontiguousarray(array[index, :length])
               for name, array in self.arrays.items()}
        extra = (rows or len(index)) - len(index)
        if extra > 0:
            for name, array in out.items():
                filler = np.repeat(array[:1], extra, axis=0)
                out[name] = np.concatenate([array, filler])
        return out


def load_traffic(path: Path) -> Traffic:
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files if name != "lengths"}
        lengths = data["lengths"]
    meta = json.loads(Path(path).with_suffix(".json").read_text())
    return Traffic(arrays=arrays, lengths=lengths, origin=str(meta["origin"]))


def synthetic_lengths(count: int, median: float, sigma: float, seq_len: int,
                      seed: int) -> np.ndarray:
    """Seeded log-normal lengths, at least 2 tokens (a [CLS] and a [SEP]), at most seq_len."""
    rng = np.random.default_rng([seed, seq_len, count])
    raw = rng.lognormal(np.log(median), sigma, size=count)
    return np.clip(np.rint(raw), 2, seq_len).astype(np.int64)


def _tokenizer(model_dir: Path, card: Mapping[str, Any], settings: Mapping[str, Any],
               tokenizer_dir: Path | None) -> tuple[Any, str]:
    import transformers

    if card.get("has_tokenizer"):
        where = str(model_dir)
        label = "the model's tokenizer"
    elif tokenizer_dir is not None:
        # saved by rule traffic_tokenizer; the label names what the config asked for
        where = str(tokenizer_dir)
        label = f"tokenizer {settings.get('tokenizer') or tokenizer_dir.name}"
    else:
        return None, ""
    return transformers.AutoTokenizer.from_pretrained(where, local_files_only=True), label


def build_traffic(model_dir: Path, card: Mapping[str, Any], settings: Mapping[str, Any],
                  text_file: Path | None, out_path: Path,
                  tokenizer_dir: Path | None = None) -> Traffic:
    """Write ``traffic.npz`` (+ ``.json``): one request per line of ``text_file``
    through the model's tokenizer or else the one in ``tokenizer_dir`` (what
    ``scenarios.traffic.tokenizer`` names, saved by :func:`serve.tokenizer.save_tokenizer`),
    else seeded synthetic lengths and ids."""
    seq_len = int(settings["seq_len"])
    names = list(card["input_names"])
    seed = int(settings.get("seed", 0))
    tokenizer, label = (None, "")
    if settings["source"] == "sentences":
        tokenizer, label = _tokenizer(model_dir, card, settings, tokenizer_dir)
    if tokenizer is not None and text_file is not None:
        lines = [ln.strip() for ln in text_file.read_text().splitlines() if ln.strip()]
        lines = lines[: int(settings["samples"])]
        if not lines:
            raise ValueError(f"traffic file {text_file} has no non-empty line")
        encoded = tokenizer(lines, padding="max_length", truncation=True, max_length=seq_len,
                            return_tensors="np")
        arrays = {name: np.asarray(encoded[name], dtype=np.int64) for name in names
                  if name in encoded}
        if int(arrays["input_ids"].max()) >= int(card["vocab_size"]):
            raise ValueError(
                f"{label} produces token ids up to {int(arrays['input_ids'].max())}, beyond "
                f"the model's vocabulary ({card['vocab_size']} tokens): use a tokenizer of "
                "this model's vocabulary, or scenarios.traffic.source: synthetic")
        lengths = arrays["attention_mask"].sum(axis=1).astype(np.int64)
        origin = f"{text_file.name} through {label}"
    else:
        lengths = synthetic_lengths(int(settings["samples"]), float(settings["median_tokens"]),
                                    float(settings["sigma"]), seq_len, seed)
        rng = np.random.default_rng([seed, seq_len, 1])
        vocab = int(card["vocab_size"])
        ids = rng.integers(min(1000, vocab // 2), vocab, size=(len(lengths), seq_len),
                           dtype=np.int64)
        mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int64)
        arrays = {"input_ids": np.where(mask == 1, ids, int(card["pad_token_id"])),
                  "attention_mask": mask}
        why = ("" if settings["source"] == "synthetic" else
               " (no traffic file)" if tokenizer is not None else
               " (the model has no tokenizer and scenarios.traffic.tokenizer is unset)")
        origin = (f"synthetic log-normal lengths, median {settings['median_tokens']}, "
                  f"sigma {settings['sigma']}, seed {seed}{why}")
    for name in names:
        arrays.setdefault(name, np.zeros((len(lengths), seq_len), dtype=np.int64))
    arrays = {name: arrays[name] for name in names}
    atomic_write_npz(out_path, {**arrays, "lengths": lengths})
    atomic_write_json(out_path.with_suffix(".json"), {
        "origin": origin, "requests": len(lengths), "seq_len": seq_len,
        "lengths": {"min": int(lengths.min()), "median": float(np.median(lengths)),
                    "p90": float(np.percentile(lengths, 90)), "max": int(lengths.max()),
                    "capped_at_seq_len": int((lengths >= seq_len).sum())},
        "input_names": names, "sha256": sha256_file(out_path)})
    return Traffic(arrays=arrays, lengths=lengths, origin=origin)


def compute_traffic_reference(model_dir: Path, card: Mapping[str, Any], traffic_path: Path,
                              out_path: Path, threads: int) -> np.ndarray:
    """FP32 PyTorch eager output of every request at its own length (no padding), the
    reference that serving outputs, padded however, are compared with."""
    import torch

    from inferbench.prepare.modeling import load_wrapper, ordered_inputs

    torch.set_num_threads(threads)
    traffic = load_traffic(traffic_path)
    wrapper = load_wrapper(model_dir, card, attn_implementation="eager")
    outputs: list[np.ndarray | None] = [None] * traffic.count
    with torch.inference_mode():
        for length in np.unique(traffic.lengths):
            indices = [int(i) for i in np.flatnonzero(traffic.lengths == length)]
            arrays = traffic.batch(indices, int(length))
            tensors = [torch.from_numpy(a) for a in ordered_inputs(arrays, card["input_names"])]
            result = wrapper(*tensors).float().numpy()
            for row, index in enumerate(indices):
                outputs[index] = result[row]
    stacked = np.stack([o for o in outputs if o is not None])
    if not np.isfinite(stacked).all():
        raise ValueError("the FP32 reference output holds NaN or Inf: the model is broken")
    atomic_write_npz(out_path, {"output": stacked})
    return stacked
