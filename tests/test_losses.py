"""Losses against values worked out by hand, limiting cases, and one gradient step per variant."""

import math

import pytest
import torch

from silmm.losses import (
    KERNEL_DISTANCES,
    KERNEL_POOLS,
    dpo_loss,
    kc_dpo_loss,
    kernel_distance,
    sft_loss_continuous,
    sft_loss_discrete,
)

KERNELS = [(p, d) for p in KERNEL_POOLS for d in KERNEL_DISTANCES]
# a = [[1,0],[0,1]], b = [[1,0],[1,0]] (Q=2, D=2):
#   avg: [.5,.5] vs [1,0] -> cos = .5/(sqrt(.5)*1) = 1/sqrt2, distance 1 - 1/sqrt2 = 0.292893; sq = .25 + .25 = 0.5
#   max: [1,1] vs [1,0]   -> cos = 1/sqrt2, distance 0.292893; sq = 0 + 1 = 1
#   none: [1,0,0,1] vs [1,0,1,0] -> cos = 1/(sqrt2*sqrt2) = .5, distance 0.5; sq = 1 + 1 = 2
A = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
B = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
K_AB = {
    ("avg", "cosine"): 1 - 1 / math.sqrt(2),
    ("avg", "sqeuclidean"): 0.5,
    ("max", "cosine"): 1 - 1 / math.sqrt(2),
    ("max", "sqeuclidean"): 1.0,
    ("none", "cosine"): 0.5,
    ("none", "sqeuclidean"): 2.0,
}
# KC-DPO with H = a, H_c = a, H_ref = b, H_r = b, gamma = 1:
#   logit = -k(a,a) + k(b,a) + k(a,b) - k(b,b) = 2 k(a,b); loss = log(1 + exp(-2k)):
#   k = 0.292893 -> log(1 + e^-0.585786) = 0.442548; k = .5 -> 0.313262; k = 1 -> 0.126928; k = 2 -> 0.018150
KC_LOSS = {0.5: 0.313262, 1.0: 0.126928, 2.0: 0.018150, 1 - 1 / math.sqrt(2): 0.442548}


def test_dpo_loss_hand_worked():
    """beta = 0.5; chosen log-ratios [0, -1, -2], rejected log-ratios [-1, -1, 0]:
    logits = 0.5 * ([0, -1, -2] - [-1, -1, 0]) = [0.5, 0, -1]
    losses = log(1 + e^-logit) = [log(1 + e^-0.5), log 2, log(1 + e)] = [0.474077, 0.693147, 1.313262]
    rewards: chosen 0.5 * [0, -1, -2], rejected 0.5 * [-1, -1, 0]."""
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen_logps=torch.tensor([-1.0, -2.0, -3.0]),
        policy_rejected_logps=torch.tensor([-2.0, -2.0, -1.0]),
        ref_chosen_logps=torch.tensor([-1.0, -1.0, -1.0]),
        ref_rejected_logps=torch.tensor([-1.0, -1.0, -1.0]),
        beta=0.5,
    )
    torch.testing.assert_close(losses, torch.tensor([0.474077, 0.693147, 1.313262]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chosen_rewards, torch.tensor([0.0, -0.5, -1.0]))
    torch.testing.assert_close(rejected_rewards, torch.tensor([-0.5, -0.5, 0.0]))


def test_dpo_loss_equal_chosen_and_rejected_is_log2():
    logps = torch.tensor([-3.0, -7.0, -0.5])
    losses, _, _ = dpo_loss(
        policy_chosen_logps=logps,
        policy_rejected_logps=logps,
        ref_chosen_logps=logps - 1,
        ref_rejected_logps=logps - 1,
        beta=0.1,
    )
    torch.testing.assert_close(losses, torch.full((3,), math.log(2)))


def test_dpo_gradient_step_raises_chosen_and_lowers_rejected():
    chosen = torch.tensor([-4.0, -5.0, -6.0], requires_grad=True)
    rejected = torch.tensor([-4.0, -3.0, -2.0], requires_grad=True)
    losses, _, _ = dpo_loss(
        policy_chosen_logps=chosen, policy_rejected_logps=rejected,
        ref_chosen_logps=torch.full((3,), -5.0), ref_rejected_logps=torch.full((3,), -5.0), beta=0.1,
    )  # fmt: skip
    losses.sum().backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent raises log pi(chosen)
    with torch.no_grad():
        assert (chosen - chosen.grad > chosen).all()


@pytest.mark.parametrize("pool,distance", KERNELS)
def test_kernel_distance_hand_worked(pool, distance):
    got = kernel_distance(A, B, pool=pool, distance=distance)
    torch.testing.assert_close(got, torch.tensor([K_AB[(pool, distance)]]))
    torch.testing.assert_close(
        kernel_distance(A, A, pool=pool, distance=distance), torch.zeros(1), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("pool,distance", KERNELS)
def test_kc_dpo_loss_hand_worked(pool, distance):
    """Row 0: H = H_c = a, H_ref = H_r = b -> loss log(1 + exp(-2 k(a, b))) (see KC_LOSS);
    row 1: H = H_ref -> every term cancels, logit 0, loss log 2."""
    h = torch.cat([A, B])
    ref = torch.cat([B, B])
    chosen = torch.cat([A, A])
    rejected = torch.cat([B, A])
    losses, chosen_rewards, rejected_rewards = kc_dpo_loss(
        policy_feats=h,
        ref_feats=ref,
        chosen_feats=chosen,
        rejected_feats=rejected,
        gamma=1.0,
        pool=pool,
        distance=distance,
    )
    k = K_AB[(pool, distance)]
    torch.testing.assert_close(losses, torch.tensor([KC_LOSS[k], math.log(2)]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        chosen_rewards - rejected_rewards, torch.tensor([2 * k, 0.0]), atol=1e-6, rtol=1e-6
    )


@pytest.mark.parametrize("pool,distance", KERNELS)
def test_kc_dpo_gradient_step_raises_chosen_likelihood(pool, distance):
    """H starts at H_ref; H_c and H_r point in opposite directions; one SGD step on H lowers the loss and moves
    H towards H_c (chosen reward gamma (k(H_ref, H_c) - k(H, H_c)) > 0, i.e. higher Gaussian likelihood)."""
    g = torch.Generator().manual_seed(0)
    chosen = torch.rand(3, 2, 4, generator=g) + 0.5
    rejected = -chosen.flip(1)
    ref = 0.3 * torch.randn(3, 2, 4, generator=g)
    h = ref.clone().requires_grad_()
    kw = {
        "ref_feats": ref,
        "chosen_feats": chosen,
        "rejected_feats": rejected,
        "gamma": 1.0,
        "pool": pool,
        "distance": distance,
    }
    losses, _, _ = kc_dpo_loss(policy_feats=h, **kw)
    torch.testing.assert_close(losses, torch.full((3,), math.log(2)))
    losses.sum().backward()
    new_losses, chosen_rewards, _ = kc_dpo_loss(policy_feats=(h - 0.1 * h.grad).detach(), **kw)
    assert (new_losses < losses).all()
    assert (chosen_rewards > 0).all()


def test_sqeuclidean_kc_dpo_is_dpo_under_gaussian_policy():
    """With k = sqeuclidean (no pooling), KC-DPO is DPO on Gaussian log-likelihoods log pi(x) = -|H - x|^2 / (2 s^2)
    (constants cancel) with gamma = beta / (2 s^2)."""
    g = torch.Generator().manual_seed(1)
    h, ref, chosen, rejected = (torch.randn(3, 2, 2, generator=g) for _ in range(4))
    beta, s2 = 0.4, 2.0

    def logp(mean, x):
        return -(mean - x).pow(2).sum((1, 2)) / (2 * s2)

    kc, _, _ = kc_dpo_loss(
        policy_feats=h, ref_feats=ref, chosen_feats=chosen, rejected_feats=rejected,
        gamma=beta / (2 * s2), pool="none", distance="sqeuclidean",
    )  # fmt: skip
    dpo, _, _ = dpo_loss(
        policy_chosen_logps=logp(h, chosen), policy_rejected_logps=logp(h, rejected),
        ref_chosen_logps=logp(ref, chosen), ref_rejected_logps=logp(ref, rejected), beta=beta,
    )  # fmt: skip
    torch.testing.assert_close(kc, dpo)


def test_sft_terms_hand_worked():
    """discrete: -logp / len = [6/3, 4/2, 1/1] = [2, 2, 1]; continuous: k(H, H_c) as in `K_AB`."""
    got = sft_loss_discrete(
        policy_chosen_logps=torch.tensor([-6.0, -4.0, -1.0]), chosen_lengths=torch.tensor([3, 2, 1])
    )
    torch.testing.assert_close(got, torch.tensor([2.0, 2.0, 1.0]))
    got = sft_loss_continuous(policy_feats=A, chosen_feats=B, pool="none", distance="sqeuclidean")
    torch.testing.assert_close(got, torch.tensor([2.0]))


def test_unknown_kernel_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"'mean' is not one of \['avg', 'max', 'none'\]"):
        kernel_distance(A, B, pool="mean", distance="cosine")
    with pytest.raises(ValueError, match=r"'l1' is not one of \['cosine', 'sqeuclidean'\]"):
        kernel_distance(A, B, pool="avg", distance="l1")
