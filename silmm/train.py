"""Paper step 5b: the preference update, LoRA trained with DPO (discrete) or KC-DPO (continuous).

A fresh LoRA is attached through `Adapter.add_lora` (every other parameter frozen) and trained for a few epochs
on the iteration's pairs, driven by `accelerate.Accelerator` (CPU, one GPU; mixed precision from the config).
The reference is the model at the start of the iteration: by default the log-probs / features cached when the
pairs were built (`pairs.reference_outputs`), or, with `train.reference=adapter_off`, recomputed each step
inside `Adapter.reference()`. All randomness (LoRA init, LoRA dropout, batch order) comes from `seed`, inside
a forked RNG, so a re-run of the stage after a crash trains exactly the same weights.
Several processes (`accelerate launch`) are data parallel by hand, because the adapters' forwards do not go
through a DDP wrapper: each process takes every `world`-th pair of each batch, scales its summed loss by the
whole batch's size, and the LoRA gradients are summed across processes before the optimiser step, so every
process takes the single-process step (equal up to float rounding). LoRA dropout masks (`lora.dropout` > 0)
depend on which process draws them, so with dropout the weights match in distribution only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from silmm.adapters.base import Adapter
from silmm.config import DPOConfig, LoraConfig, TrainConfig
from silmm.losses import dpo_loss, kc_dpo_loss, sft_loss_continuous, sft_loss_discrete
from silmm.pairs import PreferencePair, pair_samples
from silmm.runio import Processes


@dataclass(frozen=True)
class PairData:
    """What one preference update needs: the pairs, the candidates' ids / feats, the reference cache."""

    pairs: list[PreferencePair]
    tensors: dict[str, torch.Tensor]  # samples.safetensors: "<index>.ids" or "<index>.feats"
    refs: dict[
        str, torch.Tensor
    ]  # pairs.safetensors: ref_chosen_logps/ref_rejected_logps `(P,)` or ref_feats `(P, Q, D)`


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNGs inside a fork that restores them on exit (peft's LoRA init uses them)."""
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        yield


def batch_loss(
    adapter: Adapter, data: PairData, idx: list[int], dpo: DPOConfig, reference: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses `(B,)` and detached chosen / rejected rewards `(B,)` for the pairs `idx`."""
    pairs = [data.pairs[i] for i in idx]
    prompts = [p.prompt for p in pairs]
    chosen = pair_samples(pairs, data.tensors, "chosen")
    rejected = pair_samples(pairs, data.tensors, "rejected")
    if adapter.kind == "discrete":
        policy_logps = adapter.policy_outputs(prompts + prompts, chosen + rejected)  # (2B,)
        policy_chosen, policy_rejected = policy_logps.float().split(len(idx))
        if reference == "cached":
            ref_chosen, ref_rejected = (
                data.refs["ref_chosen_logps"][idx],
                data.refs["ref_rejected_logps"][idx],
            )
        else:
            with torch.no_grad(), adapter.reference():
                ref_chosen, ref_rejected = (
                    adapter.policy_outputs(prompts + prompts, chosen + rejected).float().split(len(idx))
                )
        dev = policy_chosen.device
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            policy_chosen_logps=policy_chosen,
            policy_rejected_logps=policy_rejected,
            ref_chosen_logps=ref_chosen.to(dev),
            ref_rejected_logps=ref_rejected.to(dev),
            beta=dpo.beta,
        )
        if dpo.sft_weight > 0:
            lengths = torch.tensor([s.ids.numel() for s in chosen], device=dev)
            losses = losses + dpo.sft_weight * sft_loss_discrete(
                policy_chosen_logps=policy_chosen, chosen_lengths=lengths
            )
        return losses, chosen_rewards, rejected_rewards
    policy_feats = adapter.policy_outputs(prompts, chosen).float()  # (B, Q, D)
    dev = policy_feats.device
    if reference == "cached":
        ref_feats = data.refs["ref_feats"][idx]
    else:
        with torch.no_grad(), adapter.reference():
            ref_feats = adapter.policy_outputs(prompts, chosen).float()
    kernel = {"pool": dpo.kernel_pool, "distance": dpo.kernel_distance}
    chosen_feats = torch.stack([s.feats for s in chosen]).to(dev)
    losses, chosen_rewards, rejected_rewards = kc_dpo_loss(
        policy_feats=policy_feats,
        ref_feats=ref_feats.to(dev),
        chosen_feats=chosen_feats,
        rejected_feats=torch.stack([s.feats for s in rejected]).to(dev),
        gamma=dpo.gamma,
        **kernel,
    )
    if dpo.sft_weight > 0:
        losses = losses + dpo.sft_weight * sft_loss_continuous(
            policy_feats=policy_feats, chosen_feats=chosen_feats, **kernel
        )
    return losses, chosen_rewards, rejected_rewards


def _lora_dropout_train(model: torch.nn.Module, on: bool) -> None:
    """Only peft's LoRA dropout follows train mode: the model's own dropouts (DropDiv) stay off."""
    for name, module in model.named_modules():
        if name.endswith("lora_dropout"):
            module.train(on)


def _sum_across_processes(accelerator, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """One all-reduce (sum) for a list of tensors: flattened together, split back to their shapes."""
    flat = accelerator.reduce(torch.cat([t.reshape(-1) for t in tensors]), reduction="sum")
    return [part.view_as(t).to(t.dtype) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def _sum_grads_across_processes(accelerator, params: list[torch.nn.Parameter]) -> None:
    """Every process gets the sum of all processes' gradients (a process without pairs contributes zeros)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for param, grad in zip(params, _sum_across_processes(accelerator, grads), strict=True):
        param.grad = grad


def preference_update(
    adapter: Adapter,
    data: PairData,
    *,
    lora: LoraConfig,
    dpo: DPOConfig,
    train: TrainConfig,
    seed: int,
    accelerator=None,
    progress: bool = False,
    desc: str = "train",
) -> dict:
    """Attach a LoRA and train it on `data`; returns metrics (loss, DPO reward margin and accuracy per epoch)."""
    from accelerate import Accelerator

    accelerator = accelerator or Accelerator(mixed_precision=train.mixed_precision)
    procs = Processes(accelerator.process_index, accelerator.num_processes)
    n_pairs = len(data.pairs)
    if n_pairs == 0:
        raise ValueError("preference_update needs at least one pair")
    with seeded(seed):
        target = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
        adapter.add_lora(r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=target)
        params = [p for p in adapter.model.parameters() if p.requires_grad]
        optimizer = accelerator.prepare(
            torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
        )
        order = torch.Generator().manual_seed(seed)
        _lora_dropout_train(adapter.model, True)
        epochs, steps = [], 0
        for epoch in tqdm(range(train.epochs), desc=desc, disable=not progress, leave=False):
            perm = torch.randperm(n_pairs, generator=order).tolist()
            batches = [perm[s : s + train.batch_size] for s in range(0, n_pairs, train.batch_size)]
            sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss, margin, accuracy
            for b, idx in enumerate(batches):
                group_start = b - b % train.grad_accum
                group_len = min(train.grad_accum, len(batches) - group_start)
                mine = procs.mine(idx)
                if mine:  # a batch smaller than the number of processes leaves some without pairs
                    losses, chosen_rewards, rejected_rewards = batch_loss(
                        adapter, data, mine, dpo, train.reference
                    )
                    # this process's part of the batch mean; the processes' gradients are summed below
                    accelerator.backward(losses.sum() / (len(idx) * group_len))
                    margins = (chosen_rewards - rejected_rewards).double()
                    sums += torch.stack(
                        [losses.detach().double().sum(), margins.sum(), (margins > 0).double().sum()]
                    ).to(sums.device)
                if b - group_start + 1 == group_len:
                    if procs.world > 1:
                        _sum_grads_across_processes(accelerator, params)
                    if train.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(params, train.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                    steps += 1
            if procs.world > 1:
                (sums,) = _sum_across_processes(accelerator, [sums])
            loss, margin, accuracy = (v / n_pairs for v in sums.tolist())
            epochs.append(
                {"loss": loss, "reward_margin": margin, "reward_accuracy": accuracy, "epoch": epoch}
            )
        _lora_dropout_train(adapter.model, False)
    return {"pairs": n_pairs, "optimizer_steps": steps, "epochs": epochs} | {
        k: epochs[-1][k] for k in ("loss", "reward_margin", "reward_accuracy")
    }
