"""Loss terms of the two papers, as plain functions of logits (temperature 1, batch-mean reduction)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_teacher || p_student), averaged over the batch; the teacher is detached (no gradient)."""
    return F.kl_div(F.log_softmax(student_logits, dim=1), F.log_softmax(teacher_logits.detach(), dim=1),
                    reduction="batchmean", log_target=True)


def classification(logits: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """RS-Nets eq. 2 / SAN eq. 1: un-weighted sum of per-resolution cross-entropies."""
    return sum(F.cross_entropy(z, labels) for z in logits)


def ensemble_logit(alpha: torch.Tensor, logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """RS-Nets eq. 5: z0 = sum_s softmax(alpha)_s z_s with every z_s detached, so only alpha learns from it."""
    weights = torch.softmax(alpha, dim=0)
    return sum(w * z.detach() for w, z in zip(weights, logits))


# Teacher -> student pairs over indices {0 = ensemble, 1 = largest resolution, ..., S = smallest}.
def distillation_pairs(variant: str, num_resolutions: int) -> list[tuple[int, int]]:
    S = num_resolutions
    if variant == "none":
        return []
    if variant == "vanilla":  # eq. 8: from the ensemble only
        return [(0, s) for s in range(1, S + 1)]
    if variant == "full":  # eq. 10: every higher-ranked prediction teaches every lower one
        return [(t, s) for t in range(0, S) for s in range(t + 1, S + 1)]
    if variant == "from_models":  # Table 5 "only distillations from p1 ... p_{S-1}"
        return [(t, s) for t in range(1, S) for s in range(t + 1, S + 1)]
    if variant == "from_largest":  # Table 5 "only distillations from p1"
        return [(1, s) for s in range(2, S + 1)]
    raise ValueError(f"unknown distillation variant {variant!r}")


def distillation(variant: str, ensemble: torch.Tensor, logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """MRED distillation loss, scaled by S / (number of pairs).

    For "full" that factor is 2/(S+1), exactly eq. 10; "vanilla" has S pairs and factor 1 (eq. 8). The
    two Table 5 variants are not given a factor in the paper; the same rule keeps every variant's
    range equal to L_cls's, so the variants differ only in who teaches whom.
    """
    pairs = distillation_pairs(variant, len(logits))
    if not pairs:
        return ensemble.new_zeros(())
    predictions = [ensemble, *logits]
    total = sum(kl(predictions[t], predictions[s]) for t, s in pairs)
    return total * (len(logits) / len(pairs))


def scale_distillation(logits: Sequence[torch.Tensor], resolutions: Sequence[int]) -> torch.Tensor:
    """SAN eq. 3: sum over pairs S_i > S_j of KL(p_i || p_j), the larger resolution teaching (detached)."""
    terms = [kl(logits[i], logits[j]) for i in range(len(logits)) for j in range(len(logits))
             if resolutions[i] > resolutions[j]]
    return sum(terms) if terms else logits[0].new_zeros(())
