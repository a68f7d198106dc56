"""Where the summary's model, inputs and rows came from, said in its header.

The heading names the model that was actually run (its card, written by the
model rule), never a value of a config the run did not use; the inputs line says
whether a real tokenizer or seeded synthetic ids made them; a checkpoint whose
head was freshly initialised is called out; and each target's rows name the
folder they were read from (this run, a copy in results/bench/, or an included
folder such as the committed docs/results/h100).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def model_line(card: Mapping[str, Any]) -> str:
    """One line naming the model this summary measured, from its card."""
    name = card.get("name") or card.get("id") or card.get("path") or "?"
    size = f"{(card.get('parameters') or 0) / 1e6:.1f} M parameters"
    arch = card.get("architecture")
    if card.get("weights") == "random":
        of = card.get("id") or card.get("model_type")
        return (f"Model `{name}`: the **architecture** of `{of}` ({arch}, {size}) with "
                f"**seeded random weights** (seed {card.get('seed')}): no download was "
                "needed, and latency does not depend on weight values. Accuracy figures "
                "would be meaningless and are not reported.")
    if card.get("source") == "local":
        where = f"the local folder `{card.get('path')}`"
    else:
        where = f"`{card.get('id')}` from the Hugging Face hub"
    return f"Model `{name}`: {where} ({arch}, {size}, pretrained weights)."


def inputs_line(card: Mapping[str, Any], sentences: bool | None = None) -> str:
    """How the benchmark inputs were made: the model's tokenizer or synthetic ids."""
    tokenizer = card.get("tokenizer") or {}
    if card.get("has_tokenizer"):
        if sentences is False:
            return ("Inputs: seeded synthetic token ids (the model has a tokenizer, but no "
                    "`sentences` file is configured).")
        return "Inputs: the `sentences` file through the model's own tokenizer."
    why = tokenizer.get("reason") or "the model has no tokenizer"
    return f"Inputs: **seeded synthetic token ids**: {why}."


def head_warning(card: Mapping[str, Any]) -> str:
    """A bold warning when the checkpoint's task head was freshly initialised, or ""."""
    note = card.get("head_warning")
    if not note:
        return ""
    return (f"**Warning: {note}** Parity against a random head says nothing about the "
            "checkpoint; latency is unaffected.")


def config_line(context: Mapping[str, Any]) -> str:
    files = context.get("configfiles") or []
    if not files:
        return ""
    names = ", ".join(f"`{f}`" for f in files)
    return f"Config: {names} (read on its own; nothing was merged from another config)."


def sources_lines(context: Mapping[str, Any]) -> list[str]:
    """One line per target naming where its rows were read from."""
    sources = context.get("sources") or {}
    lines = []
    for target in sorted(sources):
        entry = sources[target]
        text = "; ".join(f"{count} row{'s' if count != 1 else ''} from `{folder}`"
                         for folder, count in sorted(entry.items()))
        lines.append(f"- target `{target}`: {text}")
    return ["Rows read from:", *lines] if lines else []


def header_lines(card: Mapping[str, Any], context: Mapping[str, Any]) -> list[str]:
    """The summary header's provenance block (model, warnings, inputs, config, sources)."""
    lines = [model_line(card)]
    warning = head_warning(card)
    if warning:
        lines += ["", warning]
    lines += ["", inputs_line(card, context.get("sentences"))]
    config = config_line(context)
    if config:
        lines += ["", config]
    sources = sources_lines(context)
    if sources:
        lines += ["", *sources]
    return lines
