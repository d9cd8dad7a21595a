"""Each scorer end to end on tiny random judges saved with save_pretrained and loaded by local folder."""

import numpy as np
import pytest
import torch
from PIL import Image

from eval.bench import build_tiny_judges
from eval.common import JudgeUnavailableError
from eval.scorers.blip_vqa import BlipVqa
from eval.scorers.clip_score import ClipScorer
from eval.scorers.depth import DptDepth
from eval.scorers.detection import Detection, OwlDetector, detector_frame
from eval.scorers.vqa import load_vqa_judge


@pytest.fixture(scope="module")
def judges(tmp_path_factory):
    return build_tiny_judges(tmp_path_factory.mktemp("judges"))


def _images(n, size=(96, 64)):
    rng = np.random.RandomState(0)
    return [Image.fromarray(rng.randint(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def test_blip_vqa_batched_equals_single_and_product_rule(judges):
    vqa = BlipVqa.from_pretrained(str(judges["blip"]), image_size=64)
    assert vqa.enc_id is not None and vqa.enc_id != vqa.tokenizer.cls_token_id  # [ENC] replaces [CLS]
    ims = _images(3)
    qs = [["a green bench?", "a blue bowl?"], ["a dog?"], []]
    batched = vqa.yes_ratio(ims, qs)
    single = [vqa.yes_ratio([im], [q])[0] for im, q in zip(ims, qs)]
    assert [len(r) for r in batched] == [2, 1, 0]
    for b, s in zip(batched, single):
        assert b == pytest.approx(s, abs=1e-3) and all(0 < x < 1 for x in b)
    (score, factors), _, (empty, _) = vqa.attribute_scores(
        ims, [["a green bench", "a blue bowl"], ["a dog"], []]
    )
    assert factors == [round(x, 4) for x in batched[0]] and score == pytest.approx(factors[0] * factors[1])
    assert empty == 1.0  # no noun phrase: the official product starts at 1


def test_clip_raw_cosine(judges):
    clip = ClipScorer.from_pretrained(str(judges["clip"]))
    ims = _images(2)
    cos = clip.cosine(ims, ["a red dog", "a cat on a bench"])
    assert cos.shape == (2,) and bool((cos.abs() <= 1).all())
    assert float(clip.cosine(ims[1:], ["a cat on a bench"])[0]) == pytest.approx(float(cos[1]), abs=1e-5)


def test_owlv2_boxes_in_unidet_frame(judges):
    owl = OwlDetector.from_pretrained(str(judges["owlv2"]), threshold=0.0)
    ims = _images(2, size=(128, 96))
    dets = owl.detect(ims, [["dog", "cat"], ["bench"]])
    assert (
        len(dets) == 2
        and {d.label for d in dets[0]} <= {"dog", "cat"}
        and {d.label for d in dets[1]} == {"bench"}
    )
    assert detector_frame(128, 96) == (480, 360) and all(isinstance(d, Detection) for d in dets[0])
    boxes = [d.box for ds in dets for d in ds]  # scaled from 128x96 image pixels, clipped to the frame
    assert all(0 <= x1 <= x2 <= 480 and 0 <= y1 <= y2 <= 360 for x1, y1, x2, y2 in boxes)


def test_dpt_depth_maps(judges):
    depth = DptDepth.from_pretrained(str(judges["dpt"]), input_size=64)
    maps = depth.depth_maps(_images(2, size=(128, 96)))
    assert [m.shape for m in maps] == [(360, 480)] * 2  # rows = height of the detector frame
    assert all(0.0 <= m.min() and m.max() <= 1.0 for m in maps)


def test_dpg_blip_judge_answers_booleans(judges):
    judge = load_vqa_judge(str(judges["blip"]))
    answers = judge.answer(
        _images(2, size=(64, 64)), [["is there a dog?", "is it red?"], ["is there a cat?"]]
    )
    assert [len(a) for a in answers] == [2, 1] and all(isinstance(x, bool) for a in answers for x in a)


def test_missing_judge_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(JudgeUnavailableError) as err:
        BlipVqa.from_pretrained(str(tmp_path / "no-such-blip"))
    msg = str(err.value)
    assert "no-such-blip" in msg and "--judge /path/to/folder" in msg and "HF_HUB_OFFLINE=1" in msg
    with pytest.raises(JudgeUnavailableError, match="--detector"):
        OwlDetector.from_pretrained("google/owlv2-base-patch16-ensemble", threshold=0.1)
    torch.set_num_threads(1)
