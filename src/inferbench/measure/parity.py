"""Compare a backend's output with the FP32 reference on the same inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# The cosine similarity of two embeddings that agree to float32 rounding is 1 - O(1e-7),
# never exactly 1: a `min_agreement` of 1.0 (the FP32 default) on an embedding model
# asks for agreement to rounding, so the cosine check allows this much below it.
COSINE_ROUNDING = 1e-6


def compare(output: np.ndarray, reference: np.ndarray, task: str,
            tolerance: Mapping[str, float]) -> dict[str, Any]:
    """Parity figures and whether they are inside ``tolerance``.

    Classification: max |logit - reference| and the fraction of rows whose argmax
    label agrees. Embeddings: max |diff| and the worst row's cosine similarity.
    """
    output = np.asarray(output, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if output.shape != reference.shape:
        return {"ok": False, "reason": f"output shape {output.shape} != reference "
                f"{reference.shape}"}
    if not np.isfinite(output).all():
        bad = int((~np.isfinite(output)).sum())
        return {"ok": False, "reason": f"output holds {bad} NaN/Inf values", "non_finite": bad}
    max_abs = float(np.max(np.abs(output - reference)))
    result: dict[str, Any] = {"max_abs": max_abs, "tolerance": dict(tolerance)}
    if task == "sequence-classification":
        # A row whose reference top-2 margin is within twice the max_abs tolerance
        # is a near-tie: a flip there is inside tolerance, not a wrong label.
        ordered = np.sort(reference, axis=-1)
        margin = ordered[..., -1] - ordered[..., -2] if reference.shape[-1] > 1 else np.inf
        decisive = np.broadcast_to(margin > 2 * tolerance.get("max_abs", 0.0),
                                   reference.shape[:-1])
        agree = output.argmax(-1) == reference.argmax(-1)
        agreement = float(np.mean(agree[decisive])) if decisive.any() else 1.0
        result["label_agreement"] = agreement
        result["label_agreement_all_rows"] = float(np.mean(agree))
        result["decisive_rows"] = int(decisive.sum())
    else:
        out64, ref64 = output.astype(np.float64), reference.astype(np.float64)
        norms = np.linalg.norm(out64, axis=-1) * np.linalg.norm(ref64, axis=-1)
        cosine = np.sum(out64 * ref64, axis=-1) / np.maximum(norms, 1e-12)
        agreement = float(cosine.min())
        result["min_cosine"] = agreement
    reasons = []
    if "max_abs" in tolerance and max_abs > tolerance["max_abs"]:
        reasons.append(f"max |diff| {max_abs:.3g} > {tolerance['max_abs']}")
    if task == "sequence-classification":
        if "min_agreement" in tolerance and agreement < tolerance["min_agreement"]:
            reasons.append(f"agreement {agreement:.3f} < {tolerance['min_agreement']}")
    elif ("min_agreement" in tolerance
          and agreement < tolerance["min_agreement"] - COSINE_ROUNDING):
        reasons.append(f"worst-row cosine {agreement:.6f} < {tolerance['min_agreement']}")
    result["ok"] = not reasons
    if reasons:
        result["reason"] = "; ".join(reasons)
    return result
