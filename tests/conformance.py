"""The adapter conformance suite: plain functions that take an adapter and assert the protocol holds.

Every adapter in `silmm.adapters` (the built-in world models, Janus-Pro, Qwen-Image) must pass all of them;
test files parametrise these over adapter builders. The functions use only the protocol in
`silmm/adapters/base.py`, so they say what generic code may rely on. Checks that change the adapter (LoRA)
say so in their name; give them a fresh adapter.
"""

from __future__ import annotations

import torch
from PIL import Image

from silmm.adapters.base import Adapter, Diversity, Sample

PROMPTS = ["a red cat on the left of a blue dog", "two green apples"]
DIVERSE = {"discrete": Diversity(mode="nucleus"), "continuous": Diversity(mode="dropdiv", dropout=0.3)}


def _payload(sample: Sample) -> torch.Tensor:
    return sample.ids if sample.ids is not None else sample.feats


def _pixels(image: Image.Image) -> torch.Tensor:
    return torch.tensor(list(image.convert("RGB").getdata()))


def _perturb_lora(adapter: Adapter, seed: int = 0) -> None:
    """Give the fresh LoRA non-zero weights (peft starts B at 0), so it changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=g).to(p.device, p.dtype))


def check_protocol(adapter: Adapter) -> None:
    assert isinstance(adapter, Adapter)
    assert adapter.kind in ("discrete", "continuous")
    assert isinstance(adapter.name, str) and adapter.name
    assert isinstance(adapter.model, torch.nn.Module)


def check_text_skills(adapter: Adapter) -> None:
    """Prompts and questions come back as text; prompt writing is reproducible by seed."""
    prompts = adapter.write_prompts("color", 3, seed=7)
    assert isinstance(prompts, list) and len(prompts) == 3 and all(isinstance(p, str) for p in prompts)
    assert adapter.write_prompts("color", 3, seed=7) == prompts
    questions = adapter.write_questions(PROMPTS)
    assert isinstance(questions, list) and len(questions) == len(PROMPTS)
    assert all(isinstance(qs, list) and all(isinstance(q, str) for q in qs) for qs in questions)


def check_sample(adapter: Adapter, exact: bool = True) -> list[Sample]:
    """N images with ids or features and their recorded seeds; the same (prompt, seed) gives the same sample.

    `exact=False` (GPU, bf16) allows rounding differences when a sample is redrawn in a smaller batch.
    """
    prompts, seeds = [PROMPTS[0], PROMPTS[0], PROMPTS[1]], [11, 12, 13]
    diversity = DIVERSE[adapter.kind]
    samples = adapter.sample(prompts, seeds, diversity)
    assert len(samples) == 3
    for s, p, seed in zip(samples, prompts, seeds):
        assert isinstance(s, Sample) and s.prompt == p and s.seed == seed
        assert isinstance(s.image, Image.Image) and min(s.image.size) > 0
        if adapter.kind == "discrete":
            assert s.feats is None and s.ids.dim() == 1 and s.ids.dtype == torch.long
        else:
            assert s.ids is None and s.feats.dim() == 2 and s.feats.dtype == torch.float32
        assert _payload(s).device.type == "cpu"
    repeat = adapter.sample(prompts, seeds, diversity)
    assert all(torch.equal(_payload(a), _payload(b)) for a, b in zip(repeat, samples))
    assert all(torch.equal(_pixels(a.image), _pixels(b.image)) for a, b in zip(repeat, samples))
    again = adapter.sample([PROMPTS[0]], [12], diversity)[0]  # alone, not in the batch it was first drawn in
    if exact:
        assert torch.equal(_payload(again), _payload(samples[1]))
        assert torch.equal(_pixels(again.image), _pixels(samples[1].image))
    else:
        torch.testing.assert_close(_payload(again), _payload(samples[1]), rtol=0.05, atol=0.05)
    return samples


def check_diversity(adapter: Adapter) -> None:
    """Diversity on (nucleus / DropDiv) gives different candidates per seed; off ('none') gives identical ones."""
    on = adapter.sample([PROMPTS[0]] * 2, [1, 2], DIVERSE[adapter.kind])
    assert not torch.equal(_payload(on[0]), _payload(on[1]))
    off = adapter.sample([PROMPTS[0]] * 2, [1, 2], Diversity(mode="none"))
    assert torch.equal(_payload(off[0]), _payload(off[1]))


def check_yes_no(adapter: Adapter, images: list[Image.Image]) -> None:
    """p(yes), p(no) are (B,) probabilities from one softmax, so p_yes + p_no <= 1."""
    questions = ["Is there a cat?", "Is the dog blue?", "Are there two apples?"][: len(images)]
    p_yes, p_no = adapter.answer_yes_no(images, questions)
    assert p_yes.shape == p_no.shape == (len(images),)
    assert bool(((p_yes >= 0) & (p_no >= 0) & (p_yes + p_no <= 1 + 1e-6)).all())


def check_policy_outputs_lora(adapter: Adapter, samples: list[Sample]) -> None:
    """Documented shape; after add_lora gradients reach LoRA parameters only, and reference() is the base model."""
    prompts = [s.prompt for s in samples]
    with torch.no_grad():
        base = adapter.policy_outputs(prompts, samples)
    if adapter.kind == "discrete":
        assert base.shape == (len(samples),)
    else:
        assert base.shape == (len(samples), *samples[0].feats.shape)
    adapter.add_lora(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])
    trainable = {n for n, p in adapter.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    _perturb_lora(adapter)
    out = adapter.policy_outputs(prompts, samples)
    out.float().pow(2).sum().backward()
    grads = {n: p.grad for n, p in adapter.model.named_parameters() if p.grad is not None}
    assert set(grads) <= trainable, (
        f"gradients reached frozen parameters: {sorted(set(grads) - trainable)[:3]}"
    )
    assert any(g.abs().sum() > 0 for g in grads.values())
    adapter.model.zero_grad(set_to_none=True)
    with torch.no_grad(), adapter.reference():
        ref = adapter.policy_outputs(prompts, samples)
    torch.testing.assert_close(ref, base)
    assert not torch.allclose(out.detach(), base)


def check_save_reload(adapter: Adapter, fresh: Adapter, samples: list[Sample], path: str) -> None:
    """A LoRA saved by one adapter and loaded into a fresh one (same base) gives identical outputs."""
    prompts = [s.prompt for s in samples]
    adapter.add_lora(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])
    _perturb_lora(adapter, seed=3)
    adapter.save_adapter(path)
    fresh.load_adapter(path)
    with torch.no_grad():
        torch.testing.assert_close(
            fresh.policy_outputs(prompts, samples), adapter.policy_outputs(prompts, samples)
        )
        with fresh.reference(), adapter.reference():
            torch.testing.assert_close(
                fresh.policy_outputs(prompts, samples), adapter.policy_outputs(prompts, samples)
            )


def check_merge(adapter: Adapter, samples: list[Sample]) -> None:
    """Merging folds the LoRA into the base: same outputs, nothing left to train, reference() = merged model."""
    prompts = [s.prompt for s in samples]
    adapter.add_lora(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])
    _perturb_lora(adapter, seed=5)
    with torch.no_grad():
        before = adapter.policy_outputs(prompts, samples)
        adapter.merge_adapter()
        after = adapter.policy_outputs(prompts, samples)
        with adapter.reference():
            ref = adapter.policy_outputs(prompts, samples)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ref, after)
    assert not any(p.requires_grad for p in adapter.model.parameters())


def check_foreign_adapter(adapter: Adapter, foreign_path: str) -> None:
    """An adapter folder made for another model is refused with a message naming both models."""
    try:
        adapter.load_adapter(foreign_path)
    except ValueError as e:
        assert "made for" in str(e) and adapter.name in str(e), str(e)
    else:
        raise AssertionError(f"{adapter.name} loaded the foreign adapter {foreign_path!r}")
