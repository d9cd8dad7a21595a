"""Each scorer end to end on tiny random judges saved with save_pretrained and loaded by local folder."""

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tiny_real_models as T
import torch
from PIL import Image

from eval.bench import build_tiny_judges
from eval.common import EvalInputError, JudgeUnavailableError
from eval.scorers import detection as det
from eval.scorers.blip_vqa import BlipVqa
from eval.scorers.clip_score import ClipScorer
from eval.scorers.depth import DptDepth
from eval.scorers.detection import Detection, OwlDetector, detector_frame, load_detector
from eval.scorers.grounding_dino import GroundingDinoDetector, caption
from eval.scorers.vqa import QwenYesNoJudge, load_vqa_judge
from silmm.adapters.blip import CLIP_MEAN, CLIP_STD, _layout, to_pixels


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
    single = [
        [vqa.yes_ratio([im], [[q]])[0][0] for q in qs_i] for im, qs_i in zip(ims, qs)
    ]  # one pair a call
    assert [len(r) for r in batched] == [2, 1, 0]
    for b, s in zip(batched, single):
        # no padding reaches the answer (transformers ignores BLIP cross-attention masks): same as one at a time
        assert b == pytest.approx(s, abs=1e-6) and all(0 < x < 1 for x in b)
    (score, factors), _, (empty, _) = vqa.attribute_scores(
        ims, [["a green bench", "a blue bowl"], ["a dog"], []]
    )
    assert factors == [round(x, 4) for x in batched[0]] and score == pytest.approx(factors[0] * factors[1])
    assert empty == 1.0  # no noun phrase: the official product starts at 1


def test_blip_questions_packed_per_image_equal_one_at_a_time(judges):
    vqa = BlipVqa.from_pretrained(str(judges["blip"]), image_size=64)
    embeds = vqa.encode_images(_images(2))
    qs = [["a green bench?", "a dog?", "a blue bowl?"], ["a red dog?"]]  # 6, 4, 6 and 5 tokens
    packed, unpacked = vqa.probs(embeds, qs, pack=True), vqa.probs(embeds, qs, pack=False)
    alone = [vqa.probs(embeds[i : i + 1], [[q]], pack=False) for i, row in enumerate(qs) for q in row]
    for k in (0, 1):  # P(yes), P(no)
        torch.testing.assert_close(packed[k], unpacked[k], rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(packed[k], torch.cat([a[k] for a in alone]), rtol=1e-5, atol=1e-8)
    # the rule: packing saves (questions - 1) x image tokens x width (32 here) of key/value work and costs
    # T^2 - sum L^2 of self-attention; two 5-token questions: 10^2 - 2 * 5^2 = 50
    rows = [[[0] * 5, [0] * 5]]
    assert not vqa._packing_pays(rows, image_tokens=1)  # saves 32 < 50
    assert vqa._packing_pays(rows, image_tokens=2)  # saves 64 > 50
    tile = [[[0] * 15] * 16]  # a DPG tile: 16 questions of 15 tokens, 577 image tokens (384 px)
    assert vqa._packing_pays(tile, image_tokens=577)


def test_blip_layout_by_hand():
    # row 0 packs questions [5, 6] and [7]; row 1 holds [8] and is padded with 0
    ids, pos, segment, row, first, length = _layout([[[5, 6], [7]], [[8]]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and pos.tolist() == [[0, 1, 0], [0, 0, 0]]
    assert segment.tolist() == [[0, 0, 1], [0, -1, -1]]
    assert (row.tolist(), first.tolist(), length.tolist()) == ([0, 0, 1], [0, 2, 0], [2, 1, 1])


def test_blip_pixels_equal_the_per_image_float_conversion():
    ims = _images(2, size=(40, 30))
    mean, std = np.array(CLIP_MEAN, dtype=np.float32), np.array(CLIP_STD, dtype=np.float32)
    for got, im in zip(to_pixels(ims, 64), ims):  # the previous per-image formula, in numpy
        ref = np.asarray(im.resize((64, 64), Image.Resampling.BICUBIC), dtype=np.float32) / 255
        assert np.array_equal(got.permute(1, 2, 0).numpy(), (ref - mean) / std)


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


def test_detector_family_and_default_threshold_from_the_checkpoint(judges):
    owl = load_detector(str(judges["owlv2"]), threshold=None, text_threshold=0.25)
    gdino = load_detector(str(judges["grounding_dino"]), threshold=None, text_threshold=0.25)
    assert isinstance(owl, OwlDetector) and owl.threshold == 0.1
    assert isinstance(gdino, GroundingDinoDetector)
    assert (gdino.threshold, gdino.text_threshold) == (0.35, 0.25)  # the official demo values
    assert load_detector(str(judges["grounding_dino"]), threshold=0.2, text_threshold=0.3).settings == {
        "family": "grounding-dino", "box_threshold": 0.2, "text_threshold": 0.3}  # fmt: skip
    with pytest.raises(EvalInputError, match="model_type 'blip'; supported: \\['grounding-dino', 'owlv2'\\]"):
        load_detector(str(judges["blip"]), threshold=None, text_threshold=0.25)


def test_grounding_dino_end_to_end_in_unidet_frame(judges):
    gdino = load_detector(str(judges["grounding_dino"]), threshold=0.0, text_threshold=0.0)
    ims = [*_images(1, size=(128, 96)), *_images(1, size=(64, 64))]
    queries = [["dog", "cat"], ["hot dog", "bench", "person"]]
    dets = gdino.detect(ims, queries)
    # every token passes text threshold 0, so each phrase holds the whole caption: the first name it contains wins
    assert [len(d) for d in dets] == [10, 10]  # all 10 queries of the tiny model pass box threshold 0
    assert {d.label for d in dets[0]} == {"dog"} and {d.label for d in dets[1]} == {"hot dog"}
    assert all(0 <= x1 <= x2 <= 480 and 0 <= y1 <= y2 <= 360 for x1, y1, x2, y2 in (d.box for d in dets[0]))
    # one forward per image size: batching changes nothing
    assert dets[1] == gdino.detect(ims[1:], queries[1:])[0]


@pytest.mark.parametrize("size", [(40, 30), (64, 64), (200, 150), (90, 300)])
def test_grounding_dino_torch_pixels_match_the_pil_processor(judges, size):
    """Up- and downscaled, square and long images: same shape as the PIL processor, values within 8-bit rounding."""
    gdino = load_detector(str(judges["grounding_dino"]), threshold=None, text_threshold=0.25)
    ims = _images(2, size=size)
    want = gdino.processor.image_processor(images=ims, return_tensors="pt").pixel_values
    got = gdino.pixels(ims)
    assert got.shape == want.shape
    # PIL rounds the resized image to 8 bits (in fixed point): back on the 0..255 scale, rounding ours matches
    proc = gdino.processor.image_processor
    mean, std = torch.tensor(proc.image_mean).view(1, 3, 1, 1), torch.tensor(proc.image_std).view(1, 3, 1, 1)
    ours, pil = ((got * std + mean) * 255).round(), ((want * std + mean) * 255).round()
    assert (ours - pil).abs().max() <= 1 and (ours == pil).float().mean() > 0.75


def test_grounding_dino_phrases_and_thresholds_on_hand_made_outputs(judges):
    """Official rules on logits chosen by hand: caption "dog. cat." = [CLS] dog . cat . [SEP] (positions 0..5)."""
    gdino = load_detector(str(judges["grounding_dino"]), threshold=None, text_threshold=0.25)  # 0.35 / 0.25
    names = ["dog", "cat"]
    ids = gdino.processor.tokenizer([caption(names)], return_tensors="pt").input_ids
    assert caption(names) == "dog. cat." and ids.shape == (1, 6)
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    logits = torch.full((1, 5, 32), -30.0)
    logits[0, 0, 1] = logit(0.9)  # "dog" 0.9 -> dog, score 0.9
    logits[0, 1, 3] = logit(0.6)  # with "dog" at 0.3 the phrase is "dog cat" -> first name in it: dog, 0.6
    logits[0, 1, 1] = logit(0.3)
    logits[0, 2, 3] = logit(0.3)  # best token 0.3 < box threshold 0.35 -> dropped
    logits[0, 3, 2] = logit(0.5)  # only "." passes the text threshold -> empty phrase -> dropped
    logits[0, 4, 3] = logit(0.8)  # "cat" 0.8 -> cat
    # (cx, cy, w, h) relative to the image
    boxes = torch.tensor([[[0.25, 0.5, 0.2, 0.4], [0.5, 0.5, 1.2, 0.2], [0.5, 0.5, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1],
                           [0.75, 0.5, 0.2, 0.4]]])  # fmt: skip
    image = Image.new("RGB", (200, 100))  # UniDet frame 480 x 240: x 2.4
    out = types.SimpleNamespace(logits=logits, pred_boxes=boxes)
    (dets,) = gdino.to_detections(out, ids, [image], [names])
    assert [(d.label, round(d.score, 4)) for d in dets] == [("dog", 0.9), ("dog", 0.6), ("cat", 0.8)]
    # image pixels (30, 30, 70, 70) -> (72, 72, 168, 168); the wide box is clipped to the frame
    assert dets[0].box == pytest.approx((72, 72, 168, 168), abs=1e-3)
    assert dets[1].box == pytest.approx((0, 96, 480, 144), abs=1e-3)
    assert dets[2].box == pytest.approx((312, 72, 408, 168), abs=1e-3)
    # official 2D rule: dog (0.9) left of cat (0.8), no overlap -> 0.25*0.9 + 0.25*0.8 + 0.5*1
    assert det.spatial_2d_score("dog", "cat", "on the left of", dets) == pytest.approx(0.925, abs=1e-6)
    # numeracy: 2 dogs (no 0.9 overlap) for target 1 -> 0.5; 1 cat for target 1 -> 1; mean 0.75
    assert det.numeracy_score([("dog", 1), ("cat", 1)], dets) == 0.75


def test_dpt_depth_maps(judges):
    depth = DptDepth.from_pretrained(str(judges["dpt"]), input_size=64)
    maps = depth.depth_maps(_images(2, size=(128, 96)))
    assert [m.shape for m in maps] == [(360, 480)] * 2  # rows = height of the detector frame
    assert all(0.0 <= m.min() and m.max() <= 1.0 for m in maps)
    for m in maps:  # 8-bit levels as float32 / 255, as np.asarray(frame, dtype=np.float32) / 255 gives them
        assert m.dtype == np.float32 and np.array_equal(m, np.round(m * 255).astype(np.float32) / 255)


def test_dpg_blip_judge_answers_booleans(judges):
    judge = load_vqa_judge(str(judges["blip"]))
    answers = judge.answer(
        _images(2, size=(64, 64)), [["is there a dog?", "is it red?"], ["is there a cat?"]]
    )
    assert [len(a) for a in answers] == [2, 1] and all(isinstance(x, bool) for a in answers for x in a)


def test_dpg_qwen_judge_reuses_the_loop_judge(tmp_path):
    judge = load_vqa_judge(T.save_qwen_vl(str(tmp_path)))
    assert (
        isinstance(judge, QwenYesNoJudge)
        and judge.name == str(tmp_path)
        and "Please answer yes or no" in judge.rule
    )
    ims = _images(2, size=(64, 64))
    questions = [["is there a dog?", "is it red?", "is there a cat?"], ["is there a dog?"]]
    answers = judge.answer(ims, questions)
    assert [len(a) for a in answers] == [3, 1] and all(isinstance(x, bool) for a in answers for x in a)
    # one prompt per pair, each image preprocessed once per batch: the same numbers as one pair at a time
    pairs = [(ims[i], q) for i, qs in enumerate(questions) for q in qs]
    p_yes, p_no = judge.judge.answer_yes_no([im for im, _ in pairs], [q for _, q in pairs], judge.template)
    alone = [judge.judge.answer_yes_no([im], [q], judge.template) for im, q in pairs]
    torch.testing.assert_close(p_yes, torch.cat([y for y, _ in alone]), rtol=1e-5, atol=1e-7)
    assert [x for a in answers for x in a] == (p_yes > p_no).tolist()
    assert len(set(p_yes.tolist())) > 1  # questions and images reach the answer


def test_missing_judge_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(JudgeUnavailableError) as err:
        BlipVqa.from_pretrained(str(tmp_path / "no-such-blip"))
    msg = str(err.value)
    assert "no-such-blip" in msg and "--judge /path/to/folder" in msg and "HF_HUB_OFFLINE=1" in msg
    with pytest.raises(JudgeUnavailableError, match="--detector"):
        OwlDetector.from_pretrained("google/owlv2-base-patch16-ensemble", threshold=0.1)
    torch.set_num_threads(1)


FAULTS_SCRIPT = """
import resource, sys
import numpy as np
if sys.argv[1] == "kept":
    from eval.common import keep_freed_memory
    assert keep_freed_memory()
def rounds(n):  # like a batched call: several MiB of activations, all freed at the end
    for _ in range(n):
        blocks = [np.ones(1 << 20) for _ in range(8)]  # 8 x 8 MiB, written
        del blocks
rounds(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator")
def test_keep_freed_memory_stops_the_page_faults_of_repeated_batches(tmp_path):
    """With glibc's defaults each round of 64 MiB is trimmed and faulted in again (~16k faults per round); with
    keep_freed_memory the freed blocks are reused. Separate processes: the setting is process-wide."""
    script = tmp_path / "faults.py"
    script.write_text(FAULTS_SCRIPT)
    root = Path(__file__).resolve().parents[1]
    faults = {mode: int(subprocess.run([sys.executable, str(script), mode], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                                       capture_output=True, text=True, check=True).stdout) for mode in ("default", "kept")}  # fmt: skip
    assert faults["default"] > 10 * 2048  # 10 rounds of 64 MiB are 163,840 pages; measured 40,880 faults
    assert faults["kept"] < faults["default"] / 20


def test_dpt_roofline_counts_hand_worked_flops():
    """scripts.dpt_roofline: Conv2d 3->4 (3x3) on 8x8 = 256 outputs x 27 MACs; ConvTranspose 4->2 (k2, s2) = 256
    inputs x 8 MACs; Linear 2->5 over 16x16 positions = 256 x 10 MACs; FLOPs = 2 x MACs."""
    from scripts.dpt_roofline import count_flops

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.up = torch.nn.ConvTranspose2d(4, 2, 2, stride=2)
            self.head = torch.nn.Linear(2, 5)

        def forward(self, pixel_values):
            return self.head(self.up(self.conv(pixel_values)).permute(0, 2, 3, 1))

    assert count_flops(Net(), torch.zeros(1, 3, 8, 8)) == 2 * (256 * 27 + 256 * 8 + 256 * 10)
