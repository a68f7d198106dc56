"""Load a prepared model directory and give every runtime the same output.

Each backend returns one tensor named ``output``: the logits for
sequence-classification, the attention-mask mean-pooled last hidden state for
feature-extraction (what sentence-transformers does for MiniLM). The ONNX export
traces the same wrapper, so parity compares like with like.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

INPUT_NAMES_ORDER = ("input_ids", "attention_mask", "token_type_ids")

# Installed packages that transformers imports as soon as it finds them, although
# loading and running an unquantized model uses neither: torchao (for its quantizer
# integration; 0.25 s and its "Failed to load _C_mxfp8" lines in every torch-eager
# launch) and scipy (for the object-detection losses; 0.3 s).
UNUSED_BY_MODELS = ("torchao", "scipy")


def _auto_class(task: str) -> Any:
    import transformers

    if task == "sequence-classification":
        return transformers.AutoModelForSequenceClassification
    if task == "feature-extraction":
        return transformers.AutoModel
    raise ValueError(f"unknown task {task!r}")


def build_wrapper(model: Any, task: str, input_names: list[str]) -> torch.nn.Module:
    import torch

    class OutputWrapper(torch.nn.Module):
        """forward(*inputs in input_names order) -> one tensor."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.input_names = list(input_names)

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            inputs = dict(zip(self.input_names, args, strict=True))
            out = self.model(**inputs)
            if task == "sequence-classification":
                return out.logits
            hidden = out.last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    return OutputWrapper().eval()


@contextmanager
def _unseen_by_transformers(packages: tuple[str, ...]) -> Iterator[None]:
    """While transformers is first imported, its availability checks (which call
    ``importlib.util.find_spec``) do not find ``packages``, so it leaves them
    unimported; it caches those answers for the process. Packages already imported
    (a backend's own torchao) stay visible, and once transformers is imported this
    changes nothing."""
    hidden = {p for p in packages if p not in sys.modules}
    if "transformers" in sys.modules or not hidden:
        yield
        return
    find_spec = importlib.util.find_spec

    def find_visible(name: str, package: str | None = None) -> Any:
        return None if name.partition(".")[0] in hidden else find_spec(name, package)

    importlib.util.find_spec = find_visible
    try:
        yield
    finally:
        importlib.util.find_spec = find_spec


def _quantized_checkpoint(model_dir: Path) -> bool:
    """Whether config.json names a quantization (its loader may need torchao)."""
    try:
        return "quantization_config" in json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return True  # unknown: hide nothing


def model_class(task: str, architecture: str | None = None) -> Any:
    """The class of the prepared model: ``architecture`` (the card's, the class
    prepare_model built) imported directly, else the task's Auto class, which would
    resolve the same class from config.json through its mapping of every model type."""
    import transformers

    cls = getattr(transformers, architecture, None) if architecture else None
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
        return cls
    return _auto_class(task)


def load_model(model_dir: Path, task: str, attn_implementation: str = "sdpa",
               architecture: str | None = None) -> Any:
    """Load the save_pretrained directory in FP32, eval mode, offline."""
    hidden = () if _quantized_checkpoint(model_dir) else UNUSED_BY_MODELS
    with _unseen_by_transformers(hidden):
        cls = model_class(task, architecture)
    try:
        model = cls.from_pretrained(
            str(model_dir),
            attn_implementation=attn_implementation,
            local_files_only=True,
            dtype="float32",
        )
    except ValueError as exc:
        if "scaled_dot_product_attention" not in str(exc):
            raise
        # e.g. DeBERTa-v2, MPNet: transformers has no SDPA attention for them. Not a
        # silent switch to eager attention: the row would then measure something else
        # than its options say.
        from inferbench.backends.base import Unsupported

        raise Unsupported(
            f"transformers has no {attn_implementation} attention for this model type "
            "(scaled_dot_product_attention); set `options: {attn_implementation: eager}` "
            "on this backend") from None
    return model.eval()


def load_wrapper(model_dir: Path, card: Mapping[str, Any],
                 attn_implementation: str = "sdpa") -> torch.nn.Module:
    model = load_model(model_dir, card["task"], attn_implementation, card.get("architecture"))
    return build_wrapper(model, card["task"], card["input_names"])


def ordered_inputs(inputs: Mapping[str, Any], input_names: list[str]) -> list[Any]:
    return [inputs[name] for name in input_names]
