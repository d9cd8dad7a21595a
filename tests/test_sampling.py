"""Sampling: derived seeds, saved PNGs, candidates regenerable from their seed alone."""

import dataclasses

import torch
from PIL import Image
from tiny_adapter import TinyAdapter

from silmm.adapters.base import Diversity
from silmm.config import SamplingConfig
from silmm.sampling import candidate_seed, diversity_from, draw


def test_draw_saves_pngs_and_records_regenerable_seeds(tmp_path):
    adapter = TinyAdapter("discrete")
    cfg = SamplingConfig(n=3, batch_size=4)
    records, tensors = draw(
        adapter, ["red and blue", "a green"], cfg, run_seed=5, iteration=2, iter_dir=tmp_path
    )
    assert [(r.prompt_index, r.k) for r in records] == [(p, k) for p in range(2) for k in range(3)]
    assert [r.seed for r in records] == [candidate_seed(5, 2, r.prompt_index, r.k) for r in records]
    assert set(tensors) == {f"{i}.ids" for i in range(6)}
    again = adapter.sample([records[4].prompt], [records[4].seed], diversity_from(cfg))[0]
    assert torch.equal(again.ids, tensors["4.ids"])
    with Image.open(tmp_path / records[4].image) as im:
        assert list(im.convert("RGB").getdata()) == list(again.image.getdata())


def test_dropdiv_gives_different_features_and_none_is_deterministic():
    adapter = TinyAdapter("continuous")
    drop = adapter.sample(["red and blue"] * 2, [1, 2], Diversity(mode="dropdiv", dropout=0.3))
    assert not torch.equal(drop[0].feats, drop[1].feats)
    assert torch.equal(
        adapter.sample(["red and blue"], [1], Diversity(mode="dropdiv", dropout=0.3))[0].feats, drop[0].feats
    )
    plain = adapter.sample(["red and blue"] * 2, [1, 2], Diversity(mode="none"))
    assert torch.equal(plain[0].feats, plain[1].feats)
    assert torch.equal(plain[0].feats, adapter.policy_outputs(["red and blue"], plain)[0])  # hooks removed


def test_include_plain_draws_candidate_zero_without_diversity(tmp_path):
    adapter = TinyAdapter("continuous")
    cfg = SamplingConfig(n=3, mode="dropdiv", dropout=0.3, include_plain=True, batch_size=4)
    prompts = ["red and blue", "a green"]
    records, tensors = draw(adapter, prompts, cfg, run_seed=5, iteration=1, iter_dir=tmp_path)
    plain = adapter.sample(prompts, [0, 0], Diversity(mode="none"))
    for r in records:
        feats = tensors[f"{r.index}.feats"]
        if r.k == 0:
            assert torch.equal(feats, plain[r.prompt_index].feats)
        else:  # the other candidates are DropDiv draws, regenerable from their seed
            assert not torch.equal(feats, plain[r.prompt_index].feats)
            again = adapter.sample([r.prompt], [r.seed], diversity_from(cfg))[0]
            assert torch.equal(again.feats, feats)


def test_decoded_feature_target_gives_the_drawn_codes_codebook_vectors(tmp_path):
    from silmm.adapters import load_adapter
    from silmm.world.model import code_features, features_to_codes
    from silmm.world.tokenizer import decode

    adapter = load_adapter("world-continuous")
    prompts = ["a striped triangle and a dotted circle", "two red squares"]
    kw = dict(run_seed=3, iteration=1, iter_dir=tmp_path)
    base = SamplingConfig(n=4, mode="dropdiv", dropout=0.3, layers=6, batch_size=8)
    records, sampled = draw(adapter, prompts, base, **kw)
    _, decoded = draw(adapter, prompts, dataclasses.replace(base, feature_target="decoded"), **kw)
    table = code_features()
    for r in records:
        codes = features_to_codes(sampled[f"{r.index}.feats"])
        assert torch.equal(decoded[f"{r.index}.feats"], table[codes])  # the codebook rows of what was drawn
        assert not torch.equal(decoded[f"{r.index}.feats"], sampled[f"{r.index}.feats"])
        with Image.open(tmp_path / r.image) as im:  # and the image is the one those codes render
            assert list(im.convert("RGB").getdata()) == list(decode(codes.tolist()).getdata())
