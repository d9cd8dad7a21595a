"""Official scoring rules on hand-built cases with hand-worked answers (no models)."""

import numpy as np
import pytest

from eval import dpg_bench as dpg
from eval.common import EvalInputError
from eval.scorers import detection as det
from eval.scorers import parsing
from eval.scorers.blip_vqa import attribute_score
from eval.t2i_compbench import combine_complex
from silmm.adapters.blip import pre_question

D = det.Detection


def test_pos_2d_sides_and_next_to():
    left, right = (0, 0, 100, 100), (300, 0, 400, 100)  # centres 50 and 350: dx = 300, dy = 0
    assert det.pos_2d("on the left of", left, right) == 1.0
    assert det.pos_2d("on the right of", left, right) == 0.0
    assert det.pos_2d("on the right of", right, left) == 1.0
    top, bottom = (0, 0, 100, 100), (0, 300, 100, 400)  # y grows downward
    assert (
        det.pos_2d("on the top of", top, bottom) == 1.0 and det.pos_2d("on the bottom of", bottom, top) == 1.0
    )
    # next to: |dx| = 300 and |dy| = 300 -> 150 / 300
    assert det.pos_2d("next to", (0, 0, 100, 100), (300, 300, 400, 400)) == pytest.approx(0.5)
    assert det.pos_2d("near", left, right) == 1.0  # |dy| = 0 < 150
    # overlapping boxes: IoU = 50*100 / (2*10000 - 5000) = 1/3 -> 0.1 / (1/3) = 0.3
    assert det.pos_2d("on the left of", (0, 0, 100, 100), (50, 0, 150, 100)) == pytest.approx(0.3)
    assert det.pos_2d("on top of", top, bottom) == 0.0  # official: "on top of" is not a handled relation


def test_spatial_2d_score_weights_and_zeroing():
    dets = [
        D("dog", 0.8, (0, 0, 100, 100)),
        D("cat", 0.6, (300, 0, 400, 100)),
        D("dog", 0.9, (300, 0, 400, 100)),
    ]
    # highest-score dog is the one on the right: pos("on the left of") = 0 -> 0.25*0.9 + 0.25*0.6 = 0.375 -> zeroed
    assert det.spatial_2d_score("dog", "cat", "on the left of", dets) == 0.0
    # 0.25*0.9 + 0.25*0.6 + 0.5*pos("next to") with dx = 0 -> 0.375 + 0.5 = 0.875
    assert det.spatial_2d_score("dog", "cat", "next to", dets) == pytest.approx(0.875)
    assert det.spatial_2d_score("dog", "cow", "next to", dets) == 0.0  # one found: 0.25*0.9 < 0.5
    assert det.spatial_2d_score("dog", "cow", "next to", dets, zero_below=0.0) == pytest.approx(0.225)
    assert det.spatial_2d_score("dogs", "cat", "next to", dets, zero_below=0.0) == pytest.approx(
        0.15
    )  # exact match


def test_pos_3d_transposed_indexing_and_overlap():
    depth = np.zeros((100, 100))
    depth[0:50, :] = 1.0  # rows 0..49 near. Box A (x 0..50, y 50..100), box B (x 25..75, y 50..100)
    a, b = (0, 50, 50, 100), (25, 50, 75, 100)  # IoU = 25*50 / (2*2500 - 1250) = 1/3
    # transposed: A reads depth[0:50, 50:100] = 1, B reads depth[25:75, 50:100] = 0.5 -> A nearer
    assert det.pos_3d("in front of", a, b, depth) == pytest.approx((1 / 3) / 0.5)
    assert det.pos_3d("behind", a, b, depth) == 0.0
    # [y, x] indexing: both read rows 50..99 = 0 -> diff 0 -> neither relation holds
    assert det.pos_3d("in front of", a, b, depth, transposed=False) == 0.0
    assert det.pos_3d("in front of", (0, 0, 10, 10), (20, 20, 30, 30), depth) == 0.0  # no overlap, no reward
    # A reads depth[0:50, 0:60] = 1, B reads depth[0:60, 0:60] = 5/6; IoU = 3000/3600 > 0.5 -> full credit
    assert det.pos_3d("in front of", (0, 0, 50, 60), (0, 0, 60, 60), depth) == 1.0


def test_spatial_3d_scan_overwrites_first_match():
    depth = np.full((100, 100), 0.5)
    dets = [
        D("dog", 0.9, (0, 0, 10, 10)),
        D("hot dog", 0.7, (0, 0, 10, 10)),
        D("chair", 0.6, (50, 50, 60, 60)),
    ]
    # p1 = 0 ("dog"), then "hot dog" contains "dog" -> p1 = 1 before chair is found: 0.25*0.7 + 0.25*0.6 + 0
    assert det.spatial_3d_score("dog", "chair", "behind", dets, depth) == pytest.approx(0.325)
    assert det.spatial_3d_score("cow", "chair", "behind", dets, depth) == pytest.approx(
        0.15
    )  # one found, no zeroing


def test_numeracy_dedup_and_score():
    boxes = [D("cup", 0.9, (0, 0, 99, 99)), D("cup", 0.8, (1, 1, 99, 99)), D("cup", 0.7, (200, 200, 299, 299)),
             D("dog", 0.9, (0, 0, 99, 99))]  # fmt: skip
    kept = det.dedup_numeracy(boxes)  # second cup covers > 0.9 of the first -> dropped; dog is another label
    assert [d.score for d in kept if d.label == "cup"] == [0.9, 0.7]
    # cup: 2 found, target 2 -> 0.5 + 0.5; dog: found 1, target 3 -> 0.5; cat: not found -> 0; mean of 1, .5, 0
    assert det.numeracy_score([("cup", 2), ("dog", 3), ("cat", 1)], boxes) == pytest.approx(0.5)


def test_detector_frame_and_vocab_gate():
    assert det.detector_frame(512, 512) == (479, 479)
    assert det.detector_frame(1024, 512) == (480, 240)
    assert det.vocab_ok("person", exact=True) and not det.vocab_ok("wallet", exact=True)
    assert det.vocab_ok("table", exact=False) and not det.vocab_ok("table", exact=True)  # "dining table" only


def test_attribute_product_rule_with_a_probability_table():
    table = {"a green bench?": 0.81234, "a blue bowl?": 0.5}
    score, factors = attribute_score(["a green bench", "a blue bowl"], table.__getitem__)
    assert factors == [0.8123, 0.5] and score == pytest.approx(0.40615)
    nine = [f"p{i}" for i in range(9)]
    score, factors = attribute_score(nine, lambda q: 0.5)  # only the first 8 phrases count
    assert len(factors) == 8 and score == pytest.approx(0.5**8)
    assert attribute_score([], table.__getitem__)[0] == 1.0
    assert pre_question('A "Red" (Car): on; the road!?') == "a red car on the road?"


def test_complex_combination():
    assert combine_complex("spatial", attribute=0.4, spatial=0.8, clip=0.3) == pytest.approx(0.6)
    assert combine_complex("action", attribute=0.4, spatial=0.8, clip=0.3) == pytest.approx(0.35)
    assert combine_complex("spatialaction", attribute=0.4, spatial=0.8, clip=0.3) == pytest.approx(0.5)


def test_fallback_parsers_on_template_prompts():
    assert parsing.noun_phrases("a green bench and a blue bowl") == ["a green bench", "a blue bowl"]
    assert parsing.spatial_objects("a girl on the top of a frog", "on the top of") == ("person", "frog")
    assert parsing.spatial_objects("a dog hidden by a chair", "hidden") == ("dog", "chair")
    assert parsing.complex_spatial_objects("The red hat was on top of the brown coat rack.") == (
        "hat",
        "coat",
    )
    objects = [
        ("couch", "couches"),
        ("shrimp", "shrimp"),
        ("cup", "cups"),
        ("candle", "candles"),
        ("boy", "boys"),
    ]
    got = parsing.numeracy_targets("four couches, four shrimp, one cup and one candle", objects)
    assert got == [("couch", 4), ("shrimp", 4), ("cup", 1), ("candle", 1)]
    assert parsing.numeracy_targets("two boys", objects) == [("person", 2)]
    assert (
        parsing.remove_adjectives("The red hat was on top of the brown coat rack.")
        == "The hat was on top of the coat rack ."
    )


CSV = """item_id,text,keywords,proposition_id,dependency,category_broad,category_detailed,tuple,question_natural_language
A,t,k,1,0,entity,whole,entity - whole (dog),Is there a dog?
A,t,k,2,1,attribute,color,attribute - color (dog; red),Is the dog red?
A,t,k,3,2,relation,spatial,"relation - spatial (dog, cat; next to)",Is the dog next to the cat?
B,t,k,1,0,entity,whole,entity - whole (cat),Is there a cat?
B,t,k,2,0,global,,global - (photo),Is this a photo?
"""


def _tiles(*answers):
    return [dict(zip((1, 2, 3), a)) for a in answers]


def test_dpg_dependency_zeroing_and_both_aggregations():
    rows = dpg.parse_csv(CSV)
    fixed = dpg.build_questions(rows, official_quirks=False)
    quirky = dpg.build_questions(rows, official_quirks=True)
    assert [q.qid for q in quirky["A"]] == [2, 3]  # the first data row is dropped
    # A, tile answers: (no, yes, yes) cascades to (0, 0, 0); (yes, no, yes) -> (1, 0, 0); two all-yes tiles
    a_tiles = _tiles((0, 1, 1), (1, 0, 1), (1, 1, 1), (1, 1, 1))
    res_a = dpg.score_item(fixed["A"], a_tiles, official_quirks=False)
    assert res_a.score == pytest.approx((0 + 1 / 3 + 1 + 1) / 4)
    assert res_a.raw_last == {1: 1.0, 2: 1.0, 3: 1.0}
    b_tiles = [{1: 1, 2: 0}] * 3 + [{1: 0, 2: 1}]
    res_b = dpg.score_item(fixed["B"], b_tiles, official_quirks=False)
    assert res_b.score == pytest.approx(0.5)
    agg = dpg.aggregate({"A": res_a, "B": res_b}, fixed, official_quirks=False)
    assert agg["overall"] == pytest.approx(100 * ((7 / 12) + 0.5) / 2)
    # entity: A.q1 over 4 tiles (0,1,1,1) + B.q1 (1,1,1,0) -> 6/8
    assert agg["scores"]["entity"] == pytest.approx(75.0) and agg["scores"]["global"] == pytest.approx(25.0)
    # quirks: A depends on the dropped proposition 1 -> KeyError officially -> image skipped
    assert dpg.score_item(quirky["A"], a_tiles, official_quirks=True).score is None
    res_bq = dpg.score_item(quirky["B"], b_tiles, official_quirks=True)
    aggq = dpg.aggregate({"A": dpg.ItemResult(None), "B": res_bq}, quirky, official_quirks=True)
    assert aggq["overall"] == pytest.approx(50.0) and aggq["n_skipped"] == 1
    # categories from the LAST tile's raw answers only: B tile 4 = (0, 1)
    assert aggq["scores"] == {"entity": 0.0, "global": 100.0}


def test_dpg_csv_errors_name_the_problem():
    with pytest.raises(EvalInputError, match="lacks columns \\['tuple'"):
        dpg.parse_csv(CSV.replace(",tuple,", ",tuplo,"))
    with pytest.raises(EvalInputError, match="line 3"):
        dpg.parse_csv(CSV.replace("A,t,k,2,1,", "A,t,k,two,1,"))
    questions = dpg.build_questions(dpg.parse_csv(CSV), official_quirks=False)
    with pytest.raises(EvalInputError, match="no questions in the CSV: \\['C'\\]"):
        dpg.check_csv_matches(questions, ["A", "B", "C"])
    broken = dpg.build_questions(
        dpg.parse_csv(CSV.replace("A,t,k,3,2,", "A,t,k,3,7,")), official_quirks=False
    )
    with pytest.raises(EvalInputError, match="missing propositions \\[7\\]"):
        dpg.check_csv_matches(broken, ["A", "B"])
