"""Preference losses of SILMM step 5 (learning from self-feedback), as pure tensor functions.

- `dpo_loss`: DPO on the image-token sequence of discrete models (Rafailov et al. 2023, as in SILMM).
- `kc_dpo_loss`: kernel-based continuous DPO (KC-DPO) on feature matrices H of continuous models, with the
  kernels of the paper's ablation: pooling over the query axis {avg, max, none} x distance {cosine, sqeuclidean}.
- `sft_loss_discrete` / `sft_loss_continuous`: a chosen-likelihood regulariser. NOT in the paper: a prototype's
  plain DPO over 64 image tokens collapsed alignment 0.36 -> 0.04, and this term kept it stable.
Every function returns per-example values; callers reduce. Imports only torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KERNEL_POOLS = ("avg", "max", "none")
KERNEL_DISTANCES = ("cosine", "sqeuclidean")


def dpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_DPO = -log sigma( beta [log pi(v_c|x) - log ref(v_c|x)] - beta [log pi(v_r|x) - log ref(v_r|x)] ).

    Args: all four log-prob tensors `(B,)` (summed over the image tokens); `beta` > 0.
    Returns: `(losses, chosen_rewards, rejected_rewards)`, each `(B,)`; the rewards are
    beta * (policy - ref) log-ratios, detached, so `chosen_rewards - rejected_rewards` is the reward margin.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def kernel_distance(a: torch.Tensor, b: torch.Tensor, *, pool: str, distance: str) -> torch.Tensor:
    """k(a, b) for feature matrices `a`, `b` `(B, Q, D)` -> `(B,)`.

    pool: "avg" / "max" over the query axis Q -> `(B, D)`; "none" flattens to `(B, Q*D)`.
    distance: "cosine" = 1 - cos(a, b) in [0, 2]; "sqeuclidean" = sum of squared differences.
    Example (B=1): a = [[1,0],[0,1]], b = [[1,0],[1,0]]: avg -> [.5,.5] vs [1,0]: cosine 1 - 1/sqrt2, sq 0.5;
    max -> [1,1] vs [1,0]: cosine 1 - 1/sqrt2, sq 1; none -> [1,0,0,1] vs [1,0,1,0]: cosine 0.5, sq 2.
    """
    if pool == "avg":
        a, b = a.mean(1), b.mean(1)
    elif pool == "max":
        a, b = a.amax(1), b.amax(1)
    elif pool == "none":
        a, b = a.flatten(1), b.flatten(1)
    else:
        raise ValueError(f"kernel pool {pool!r} is not one of {list(KERNEL_POOLS)}")
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=-1, eps=1e-8)
    if distance == "sqeuclidean":
        return (a - b).pow(2).sum(-1)
    raise ValueError(f"kernel distance {distance!r} is not one of {list(KERNEL_DISTANCES)}")


def kc_dpo_loss(
    *,
    policy_feats: torch.Tensor,
    ref_feats: torch.Tensor,
    chosen_feats: torch.Tensor,
    rejected_feats: torch.Tensor,
    gamma: float,
    pool: str = "avg",
    distance: str = "cosine",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_KC = -log sigma( gamma [ -k(H, H_c) + k(H_ref, H_c) + k(H, H_r) - k(H_ref, H_r) ] ).

    Under an isotropic Gaussian policy around its prediction, log pi(H_c) - log ref(H_c) equals
    (-|H - H_c|^2 + |H_ref - H_c|^2) / (2 sigma^2): with k = sqeuclidean this is DPO with gamma = beta / (2 sigma^2).
    Args: `policy_feats` H, `ref_feats` H_ref, `chosen_feats` H_c, `rejected_feats` H_r, each `(B, Q, D)`;
    `gamma` > 0; `pool`, `distance` choose the kernel (see `kernel_distance`).
    Returns: `(losses, chosen_rewards, rejected_rewards)`, each `(B,)`; chosen reward = gamma (k(H_ref, H_c) - k(H, H_c)).
    """

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return kernel_distance(a, b, pool=pool, distance=distance)

    chosen_rewards = gamma * (k(ref_feats, chosen_feats) - k(policy_feats, chosen_feats))
    rejected_rewards = gamma * (k(ref_feats, rejected_feats) - k(policy_feats, rejected_feats))
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def sft_loss_discrete(*, policy_chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor) -> torch.Tensor:
    """Chosen-likelihood regulariser (NOT in the paper): -log pi(v_c|x) / |v_c|, per token.

    Args: `policy_chosen_logps` `(B,)` summed log-probs; `chosen_lengths` `(B,)` token counts. Returns `(B,)`.
    """
    return -policy_chosen_logps / chosen_lengths.to(policy_chosen_logps.dtype)


def sft_loss_continuous(
    *, policy_feats: torch.Tensor, chosen_feats: torch.Tensor, pool: str = "avg", distance: str = "cosine"
) -> torch.Tensor:
    """Chosen-likelihood regulariser (NOT in the paper): k(H, H_c), the Gaussian negative log-likelihood up to scale.

    Args: `policy_feats`, `chosen_feats` `(B, Q, D)`. Returns `(B,)`.
    """
    return kernel_distance(policy_feats, chosen_feats, pool=pool, distance=distance)
