"""Load a prepared model directory and give every runtime the same output.

Each backend returns one tensor named ``output``: the logits for
sequence-classification, the attention-mask mean-pooled last hidden state for
feature-extraction (what sentence-transformers does for MiniLM). The ONNX export
traces the same wrapper, so parity compares like with like.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

INPUT_NAMES_ORDER = ("input_ids", "attention_mask", "token_type_ids")


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


def load_model(model_dir: Path, task: str, attn_implementation: str = "sdpa") -> Any:
    """Load the save_pretrained directory in FP32, eval mode, offline."""
    cls = _auto_class(task)
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
    model = load_model(model_dir, card["task"], attn_implementation)
    return build_wrapper(model, card["task"], card["input_names"])


def ordered_inputs(inputs: Mapping[str, Any], input_names: list[str]) -> list[Any]:
    return [inputs[name] for name in input_names]
