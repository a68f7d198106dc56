"""Crafted inputs for the report tests: result records made through the result model
(raw samples per launch and the statistics derived from them), and a tiny BERT model directory
with a tokenizer trained offline."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from inferbench.measure.stats import view_stats
from inferbench.results import VIEW_UNITS, VIEWS, Result, View

SENTENCES = [
    "a good film with a great cast", "a bad film with a dull plot", "good acting and good music",
    "bad acting and a boring story", "great fun from start to end", "dull and slow and bad",
    "the best movie of the year", "the worst movie of the year", "a charming and warm story",
    "a cold and empty story", "i loved every minute", "i hated every minute",
]


def samples(median_ms: float, n: int = 200, cv: float = 0.02, seed: int | str = 0
            ) -> list[float]:
    """``n`` positive latencies around ``median_ms`` (log-normal, spread ``cv``)."""
    key = seed if isinstance(seed, int) else zlib.crc32(seed.encode())
    rng = np.random.default_rng(key)
    return (median_ms * np.exp(rng.normal(0.0, cv, size=n))).tolist()


def make_result(backend: str, batch: int, median_ms: float | None, *, kind: str | None = None,
                precision: str = "fp32", device: str = "cpu", target: str = "local",
                options: dict[str, Any] | None = None, cv: float = 0.02, n: int = 200,
                device_ms: float | None = None, status: str = "ok", model: str = "m",
                reason: str = "", launches: int = 1) -> dict[str, Any]:
    """One result record (schema 2, through the result model); ``device_ms`` adds
    gpu_compute samples (a GPU row); samples are split over ``launches``."""
    result = Result(target=target, model=model, backend=backend, kind=kind or backend,
                    device=device, precision=precision, options=options or {},
                    batch_size=batch, seq_len=16, threads=1, status=status, reason=reason)
    if status not in ("ok", "contended") or median_ms is None:
        return result.to_dict()
    e2e = samples(median_ms, n, cv, seed=f"{target}/{backend}/{batch}")
    views = {"latency": e2e}
    if device_ms is not None:
        dev = samples(device_ms, n, cv, seed=f"{target}/{backend}/{batch}/device")
        views["gpu_compute"] = list(e2e) if device_ms == median_ms else dev
    views["throughput"] = [batch / (v / 1e3) for v in e2e[: max(launches, 3)]]
    for name in VIEWS:
        if name not in views:
            result.views[name] = View.na(name, "CPU backend: no device timer")
            continue
        groups = [list(g) for g in np.array_split(np.asarray(views[name]), launches)]
        view = View(name, VIEW_UNITS[name], groups)
        view.stats = view_stats(groups, 200)
        result.views[name] = view
    result.launches = launches
    result.primary_view = "gpu_compute" if device_ms is not None else "latency"
    if device_ms is not None:
        result.host_overhead_ms = (result.views["latency"].stats.p50  # type: ignore[union-attr]
                                   - result.views["gpu_compute"].stats.p50)  # type: ignore[union-attr]
    result.noisy = False
    result.stopping = {"criteria_met": True, "iterations": n, "stop_reasons": ["minimums_met"]}
    result.fingerprint = {"cpu_model": "Test CPU", "gpus": [], "packages": {"torch": "x"},
                          "python": "3.11", "os": "Linux", "threads": {"intra_op": 1,
                                                                      "inter_op": 1},
                          "git_revision": "abc", "hostname": "h"}
    return result.to_dict()


def write_results(folder: Path, results: list[dict[str, Any]]) -> list[Path]:
    import json

    paths = []
    for result in results:
        path = (folder / result["target"] / result["model"] / result["backend"]
                / f"bs{result['batch_size']}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))
        paths.append(path)
    return paths


def build_tiny_bert(root: Path, seed: int = 0) -> Path:
    """A save_pretrained BERT classifier (random weights, 2 labels) with a WordPiece
    tokenizer trained offline on SENTENCES: what model.source local loads."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    root.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(SENTENCES, trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=specials))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    fast = transformers.BertTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    fast.save_pretrained(str(root))
    config = transformers.BertConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64, num_labels=2,
        pad_token_id=tokenizer.token_to_id("[PAD]"))
    torch.manual_seed(seed)
    transformers.BertForSequenceClassification(config).eval().save_pretrained(str(root))
    return root


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    return path


def sst2_rows() -> list[tuple[str, int]]:
    """Labelled sentences: 1 for the positive half of SENTENCES, 0 for the negative."""
    return [(s, 1 - i % 2) for i, s in enumerate(SENTENCES)]
