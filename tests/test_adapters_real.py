"""Janus-Pro and Qwen-Image adapters and the external judges, on tiny random models built in code (CPU, offline).

The conformance suite (tests/conformance.py) runs over each adapter builder; the family-specific tests check
what the suite cannot see: teacher forcing reproduces what the sampler drew, DropDiv leaves no hooks behind,
loading by folder, and the one clear error when weights are missing. Real-weight tests carry `gpu` and are
skipped without CUDA, never faked.
"""

import os
import re

import conformance as C
import pytest
import tiny_real_models as T
import torch
from PIL import Image

from silmm.adapters.base import Diversity
from silmm.adapters.hf_common import WeightsNotFoundError, lm_only_targets, parse_prompt, parse_questions
from silmm.adapters.janus import JanusAdapter
from silmm.adapters.judges import BlipJudge, QwenVLJudge, load_judge
from silmm.adapters.qwen_image import QwenImageAdapter

QWEN_KW = {"height": 32, "width": 32, "steps": 2, "feature_tokens": 16, "vqa_pixels": 56 * 56}


def make_janus(seed: int = 0) -> JanusAdapter:
    return JanusAdapter(*T.build_janus(seed))


def make_qwen_image(seed: int = 0) -> QwenImageAdapter:
    return QwenImageAdapter(T.build_qwen_image(seed), **QWEN_KW)


BUILDERS = {"janus-pro": make_janus, "qwen-image": make_qwen_image}
FOREIGN = {"janus-pro": make_qwen_image, "qwen-image": make_janus}
IMAGES = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "green")]


# --- conformance ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", BUILDERS)
def test_conformance_read_only(family):
    adapter = BUILDERS[family]()
    C.check_protocol(adapter)
    C.check_text_skills(adapter)
    samples = C.check_sample(adapter)
    C.check_diversity(adapter)
    C.check_yes_no(adapter, [s.image for s in samples])


@pytest.mark.parametrize("family", BUILDERS)
def test_conformance_lora(family, tmp_path):
    adapter = BUILDERS[family]()
    samples = adapter.sample(C.PROMPTS, [1, 2], Diversity(mode="none"))
    C.check_policy_outputs_lora(adapter, samples)
    C.check_save_reload(BUILDERS[family](), BUILDERS[family](), samples, str(tmp_path / "lora"))
    C.check_merge(BUILDERS[family](), samples)
    foreign = FOREIGN[family]()
    foreign.add_lora(r=2, alpha=4, dropout=0.0, target_modules=["q_proj"])
    foreign.save_adapter(str(tmp_path / "foreign"))
    C.check_foreign_adapter(adapter, str(tmp_path / "foreign"))


def test_load_adapter_from_a_bigger_janus_is_refused(tmp_path):
    other = JanusAdapter(*T.build_janus(hidden=32))
    other.add_lora(r=2, alpha=4, dropout=0.0)
    other.save_adapter(str(tmp_path))
    with pytest.raises(ValueError, match="'hidden_size': 32"):
        make_janus().load_adapter(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="silmm_adapter.json"):
        make_janus().load_adapter(str(tmp_path / "nothing"))


# --- Janus ----------------------------------------------------------------------------------------------


def test_janus_teacher_forcing_matches_what_the_sampler_drew():
    """policy_outputs on a mixed, left-padded batch = the conditional log-probs recorded while sampling."""
    adapter = make_janus()
    prompts = ["a red cat", "two green apples on the left of a blue cup"]
    samples = adapter.sample(prompts, [3, 4], Diversity(mode="nucleus", top_p=0.9, temperature=1.3))
    with torch.no_grad():
        logps = adapter.policy_outputs(prompts, samples)
    recorded = torch.tensor([s.extra["cond_logp"] for s in samples])
    torch.testing.assert_close(logps, recorded, rtol=1e-5, atol=1e-4)
    assert samples[0].ids.shape == (16,) and samples[0].image.size == (64, 64)


def test_janus_greedy_is_seed_independent_and_top_p_tiny_is_greedy_on_unguided_logits():
    adapter = make_janus()
    greedy = adapter.sample(["a red cat"] * 2, [0, 99], Diversity(mode="none"))
    nearly = adapter.sample(["a red cat"], [5], Diversity(mode="nucleus", top_p=1e-6))
    assert torch.equal(greedy[0].ids, greedy[1].ids) and torch.equal(nearly[0].ids, greedy[0].ids)


def test_janus_bad_input_names_the_value():
    adapter = make_janus()
    with pytest.raises(ValueError, match="'dropdiv' does not apply to Janus"):
        adapter.sample(["a cat"], [0], Diversity(mode="dropdiv"))
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        adapter.sample(["a", "b"], [0], Diversity())
    with pytest.raises(ValueError, match="'colour' is not one of"):
        adapter.write_prompts("colour", 1, seed=0)
    with pytest.raises(ValueError, match="guidance=1.0 must be > 1"):
        JanusAdapter(*T.build_janus(), guidance=1.0)


def test_janus_loads_by_folder_with_identical_outputs(tmp_path):
    T.save_janus(str(tmp_path))
    loaded = JanusAdapter.from_pretrained(str(tmp_path), device="cpu")
    assert loaded.model.dtype == torch.float32
    d = Diversity()
    assert torch.equal(
        loaded.sample(["a red cat"], [1], d)[0].ids, make_janus().sample(["a red cat"], [1], d)[0].ids
    )
    torch.testing.assert_close(
        loaded.answer_yes_no(IMAGES[:1], ["Is it red?"]),
        make_janus().answer_yes_no(IMAGES[:1], ["Is it red?"]),
    )


# --- Qwen-Image -----------------------------------------------------------------------------------------


def test_qwen_image_dropdiv_hooks_are_removed_and_policy_equals_undropped_features():
    adapter = make_qwen_image()
    layers = adapter.model.model.language_model.layers
    off = adapter.sample(["a red cat"], [1], Diversity(mode="none"))[0]
    adapter.sample(["a red cat"], [1], Diversity(mode="dropdiv", dropout=0.5, layers=2))
    assert all(not layer.mlp._forward_hooks for layer in layers)
    with torch.no_grad():
        policy = adapter.policy_outputs(["a red cat", "two green apples on the left"], [off, off])
    assert policy.shape == (2, 16, 16)
    torch.testing.assert_close(policy[0], off.feats)
    n = off.extra["length"]  # "a red cat" + "<|im_end|>\n<|im_start|>assistant\n" = 3 + 5 tokens
    assert n == 8 and off.feats[n:].abs().sum() == 0 and off.feats[:n].abs().sum() > 0


def test_qwen_image_noise_mode_and_frozen_decoder():
    adapter = make_qwen_image()
    noisy = adapter.sample(["a red cat"] * 2, [1, 2], Diversity(mode="noise", noise_std=0.5))
    clean = adapter.sample(["a red cat"], [1], Diversity(mode="none"))[0]
    assert not torch.equal(noisy[0].feats, noisy[1].feats)
    delta = noisy[0].feats - clean.feats
    assert delta[:8].abs().sum() > 0 and delta[8:].abs().sum() == 0  # noise only on real tokens
    adapter.add_lora(r=2, alpha=4, dropout=0.0)
    C._perturb_lora(adapter)
    adapter.policy_outputs(["a red cat"], [clean]).sum().backward()
    for part in (adapter.pipe.transformer, adapter.pipe.vae):
        assert all(p.grad is None and not p.requires_grad for p in part.parameters())
    vision = [p for n, p in adapter.model.named_parameters() if "visual" in n]
    assert vision and all(p.grad is None and not p.requires_grad for p in vision)


def test_qwen_image_bad_input_names_the_value():
    adapter = make_qwen_image()
    with pytest.raises(ValueError, match="'nucleus' does not apply to Qwen-Image"):
        adapter.sample(["a cat"], [0], Diversity(mode="nucleus"))
    with pytest.raises(ValueError, match="layers=9 must lie in \\[1, 4\\]"):
        adapter.sample(["a cat"], [0], Diversity(mode="dropdiv", layers=9))
    with pytest.raises(ValueError, match="multiples of 8"):
        QwenImageAdapter(T.build_qwen_image(), height=36, width=32)


def test_qwen_image_loads_by_folder_with_identical_outputs(tmp_path):
    T.save_qwen_image(str(tmp_path))
    loaded = QwenImageAdapter.from_pretrained(str(tmp_path), device="cpu", **QWEN_KW)
    d = Diversity(mode="dropdiv")
    a, b = loaded.sample(["a red cat"], [1], d)[0], make_qwen_image().sample(["a red cat"], [1], d)[0]
    assert torch.equal(a.feats, b.feats) and torch.equal(C._pixels(a.image), C._pixels(b.image))


# --- judges ---------------------------------------------------------------------------------------------


def test_qwen_judge_shares_each_image_prefix_and_equals_the_whole_prompt():
    """Each image's prefix is computed once and its questions continue from its KV cache; the answers equal one
    whole prompt per question, as Qwen's processor builds it (image tokens marked, so 3D positions)."""
    from silmm.adapters.hf_common import VQA_TEMPLATE
    from silmm.adapters.judges import QWEN_VQA_CHAT

    model, tok = T.build_qwen_vl()
    with torch.no_grad():  # larger random weights, so that a wrong position or a leaking pad changes the answer
        generator = torch.Generator().manual_seed(1)
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0, 0.3, generator=generator)
    judge = QwenVLJudge(model, tok, T.qwen_image_processor(), batch_size=2)
    images = [IMAGES[0], IMAGES[1], IMAGES[0], IMAGES[2], IMAGES[0]]  # image 0 asked three times, across calls
    questions = ["Red?", "Is the large striped object to the left of the circle?", "Is it red?", "Red?", "Blue?"]
    p_yes, p_no = judge.answer_yes_no(images, questions)

    def whole_prompt(image, question, *, marked=True):
        vis = judge.image_processor(images=[image], return_tensors="pt")
        pads = "<|image_pad|>" * (int(vis["image_grid_thw"][0].prod()) // judge.image_processor.merge_size**2)
        text = QWEN_VQA_CHAT.format(image_pads=pads, question=VQA_TEMPLATE.format(question=question))
        enc = tok([text], return_tensors="pt")
        marks = {"mm_token_type_ids": (enc.input_ids == model.config.image_token_id).int()} if marked else {}
        with torch.no_grad():
            logits = model(**enc, **vis, **marks, logits_to_keep=1).logits[0, -1]
        probs = logits.softmax(-1)
        return probs[judge.yes_ids].sum(), probs[judge.no_ids].sum()

    for i, (image, question) in enumerate(zip(images, questions)):
        want_yes, want_no = whole_prompt(image, question)
        torch.testing.assert_close(p_yes[i], want_yes, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(p_no[i], want_no, rtol=1e-4, atol=1e-7)
    # the check can fail: unmarked image tokens (plain 1D positions) answer differently
    assert (whole_prompt(images[1], questions[1], marked=False)[0] - p_yes[1]).abs() > 10 * 1e-4 * p_yes[1]


@pytest.mark.parametrize("save, cls", [(T.save_qwen_vl, QwenVLJudge), (T.save_blip, BlipJudge)])
def test_external_judge_loads_by_folder_and_answers(tmp_path, save, cls):
    judge = load_judge(save(str(tmp_path)), device="cpu")
    assert isinstance(judge, cls) and judge.name == str(tmp_path)
    C.check_yes_no(judge, IMAGES)
    p_yes, _ = judge.answer_yes_no(IMAGES, ["Is it red?"] * 3)
    assert len(set(p_yes.tolist())) > 1  # the image reaches the answer
    alone, _ = judge.answer_yes_no(IMAGES[1:2], ["Is it red?"])
    torch.testing.assert_close(alone, p_yes[1:2], rtol=1e-5, atol=1e-6)  # batching changes nothing
    mixed = ["Is it red?", "Is the large striped object to the left of the circle?", "Red?"]
    p_mixed, _ = judge.answer_yes_no(IMAGES, mixed)
    for i, q in enumerate(mixed):  # questions of different lengths: padding must not reach the answer
        alone, _ = judge.answer_yes_no(IMAGES[i : i + 1], [q])
        torch.testing.assert_close(alone, p_mixed[i : i + 1], rtol=1e-5, atol=1e-6)
    # one image object asked several questions, between other images' (its pixels are encoded once)
    p_shared, _ = judge.answer_yes_no([IMAGES[0], IMAGES[1], IMAGES[0], IMAGES[0]], [*mixed, "Is it red?"])
    for i, (image, q) in enumerate(zip([IMAGES[0], IMAGES[1], IMAGES[0], IMAGES[0]], [*mixed, "Is it red?"])):
        alone, _ = judge.answer_yes_no([image], [q])
        torch.testing.assert_close(alone, p_shared[i : i + 1], rtol=1e-5, atol=1e-6)


def test_judge_of_an_unsupported_family_names_the_supported_ones(tmp_path):
    with pytest.raises(ValueError, match=r"model_type 'janus'; supported judges: \['blip', 'qwen2_5_vl'\]"):
        load_judge(T.save_janus(str(tmp_path)))


# --- loading errors and helpers -------------------------------------------------------------------------

LOADERS = {
    "janus": JanusAdapter.from_pretrained,
    "qwen-image": QwenImageAdapter.from_pretrained,
    "judge": load_judge,
}


@pytest.mark.parametrize("load", LOADERS.values(), ids=LOADERS.keys())
def test_missing_weights_give_one_clear_error(load, tmp_path):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # tests/conftest.py: the hub is never contacted
    with pytest.raises(WeightsNotFoundError, match="model folder .* does not exist.*local folder"):
        load(str(tmp_path / "no-such-model"))
    with pytest.raises(WeightsNotFoundError, match="could not load .*'someone/not-cached'.*HF_HUB_OFFLINE=1"):
        load("someone/not-cached")


def test_parsers_and_targets():
    assert parse_prompt('\n- "a red cat and a blue dog"\nmore') == "a red cat and a blue dog"
    assert parse_prompt("   \n") == ""
    text = "Questions:\n1. Is there a cat?\n- Is the cat red? Why? Q3: Is it big?\nIs there a cat?\nno question here"
    assert parse_questions(text) == ["Is there a cat?", "Is the cat red?", "Is it big?"]
    assert parse_questions(text, max_questions=1) == ["Is there a cat?"]
    regex = lm_only_targets(["q_proj", "v_proj"])
    assert re.fullmatch(regex, "model.language_model.layers.3.self_attn.q_proj")
    assert not re.fullmatch(regex, "model.vision_model.encoder.layers.0.self_attn.q_proj")
    assert not re.fullmatch(regex, "model.language_model.layers.3.self_attn.o_proj")


# --- real weights and CUDA ------------------------------------------------------------------------------


@pytest.mark.gpu
def test_janus_pro_1b_real_weights():
    """Needs deepseek-community/Janus-Pro-1B in the HF cache (or HF_HUB_OFFLINE=0 and a reachable hub)."""
    adapter = JanusAdapter.from_pretrained("deepseek-community/Janus-Pro-1B")
    C.check_protocol(adapter)
    samples = C.check_sample(adapter)
    assert samples[0].ids.shape == (576,) and samples[0].image.size == (384, 384)
    p_yes, p_no = adapter.answer_yes_no([Image.new("RGB", (384, 384), "red")], ["Is this image red?"])
    assert p_yes.item() > p_no.item() and p_yes.item() + p_no.item() > 0.5


@pytest.mark.gpu
@pytest.mark.parametrize("family", BUILDERS)
def test_tiny_models_on_cuda_bf16(family):
    """The GPU code path (bf16 weights, CUDA generators) on the tiny models."""
    adapter = BUILDERS[family]()
    if family == "janus-pro":
        adapter = JanusAdapter(adapter.model.to("cuda", torch.bfloat16), adapter.processor)
    else:
        adapter = QwenImageAdapter(adapter.pipe.to("cuda", torch.bfloat16), **QWEN_KW)
    samples = C.check_sample(adapter, exact=False)
    C.check_yes_no(adapter, [s.image for s in samples])
    adapter.add_lora(r=2, alpha=4, dropout=0.0)
    adapter.policy_outputs([s.prompt for s in samples], samples).float().sum().backward()


# --- the whole loop -------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", BUILDERS)
def test_one_loop_iteration_end_to_end(family, tmp_path):
    """Prompts from a file, whole-prompt questions (a random model writes no parsable ones), N=2, one DPO step."""
    from silmm import loop
    from silmm.config import load_config

    (tmp_path / "prompts.txt").write_text("a red cat\ntwo blue dogs on the left of a tree\n")
    mode = "nucleus" if family == "janus-pro" else "dropdiv"
    cfg = load_config(
        None,
        [
            f"run.name={family}", f"run.out_dir={tmp_path}", "run.iterations=1", f"model.name={family}",
            f"prompts.file={tmp_path / 'prompts.txt'}", "prompts.file_mode=replace", "questions.mode=whole",
            "sampling.n=2", f"sampling.mode={mode}", "sampling.dropout=0.3", "pairs.min_gap=0.0",
            "train.batch_size=2", "train.epochs=1", "train.lr=1e-3", "lora.target_modules=[q_proj, v_proj]",
        ],
    )  # fmt: skip
    summary = loop.run(cfg, BUILDERS[family](), log=lambda line: None)
    assert [e["iteration"] for e in summary] == [0, 1]
    assert summary[1]["pairs"] >= 1 and summary[1]["train"]["optimizer_steps"] >= 1
    assert (tmp_path / family / "iter_1" / "pairs.jsonl").is_file()
    assert (tmp_path / family / "iter_1" / "adapter" / "silmm_adapter.json").is_file()
