"""T2I-CompBench++ evaluation: 8 categories, val splits, 10 images per prompt (seeds 42-51), official scorers.

Protocol (BENCHMARKS.md section 1): prompts from `<category>_val.txt` (300 each) at the pinned commit; image k of
prompt i is `samples/{prompt}_{10*i+k:06d}.png` (official scorers read the prompt and order from the file name).
Scorers: BLIP-VQA product (color, shape, texture), detector + official 2D rules (spatial), detector + DPT depth +
3D rules (3d_spatial), detector counting (numeracy), raw CLIP cosine (non_spatial), 3-in-1 by sub-split (complex).
The detector replaces UniDet: OWLv2 by default, or Grounding DINO. With several processes
(`silmm.runio.Processes`) each scores its own batches and the main process writes the results.
`mode="official"` keeps the official quirks (4-decimal factors, transposed depth, "on top of" scoring 0, UniDet
vocabulary gate); `mode="fixed"` removes them. Every substitute and quirk is listed in the results'
`protocol_deviations`. Categories have no official overall; `overall` here is their plain mean.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from eval.common import (
    DEFAULT_CACHE_DIR,
    EvalInputError,
    GenerateFn,
    RemoteFile,
    ScoreCache,
    batched,
    fetch_verified,  # fmt: skip
    read_prompt_lines,
    validate_image_folder,
    write_results,
)
from eval.scorers import detection as det
from eval.scorers import parsing
from silmm.runio import ONE_PROCESS, Processes

CATEGORIES = ("color", "shape", "texture", "spatial", "3d_spatial", "numeracy", "non_spatial", "complex")
COMMIT = "1b7094991a57f3c22abdd4f6e8ba6c1a15517073"
LEGACY_COMMIT = (
    "7728deac05e17903b3145befd9b7207c7c019573"  # color_val.txt before the 2025-09-03 de-duplication
)
_RAW = "https://raw.githubusercontent.com/Karine-Huang/T2I-CompBench/{commit}/examples/dataset/{name}"
BLOBS = {
    "color_val.txt": "700badf7bd0989c45eb307ff3573f127ecee0a53",
    "shape_val.txt": "b82835d72b25c2aa2962736f091fe04ee6a39a21",
    "texture_val.txt": "61d35c8e7127e530f221780fd117c905315ce00a",
    "spatial_val.txt": "e453b999d311ddc47f303d389db02818b63a256c",
    "3d_spatial_val.txt": "c799d256a56a68cea3fbc423d79c444c3819cf7a",
    "numeracy_val.txt": "f9246e9ceb6f58c578534f967108372823762fde",
    "non_spatial_val.txt": "046d5689c35fb1270fdce8aa003c068e4a360726",
    "complex_val.txt": "3667f7838c8ae5965ed4bd5bd8c32bff0604344a",
    "complex_val_spatial.txt": "19fd020b24905d3118f68f309f1f68db2e4ef1bc",
    "complex_val_action.txt": "fb0f4988e49d3da151dd0f421906261a67298a57",
    "new_objects.txt": "e83385ca27d2517c5968402ef38146c387bc6cb9",
}
LEGACY_COLOR_VAL = RemoteFile("legacy_pre_2025-09-03/color_val.txt", _RAW.format(commit=LEGACY_COMMIT, name="color_val.txt"),
                              "d1d3fa492f98454f118aef1ae2f08b369fbfe8f6")  # fmt: skip
NAMING_RULE = (
    "'{prompt}_{index:06d}.png' in <images>/<category>/samples/ (or <images>/<category>/), index = 10*i + k"
)


@dataclass(frozen=True)
class T2IConfig:
    categories: tuple[str, ...] = CATEGORIES
    limit: int | None = None  # score only the first N prompts per category (result marked incomplete)
    images_per_prompt: int = 10  # official: 10, seeds first_seed .. first_seed+9
    first_seed: int = 42
    mode: str = "official"  # "official" keeps the official quirks, "fixed" removes them
    vocab_gate: bool | None = None  # UniDet vocabulary gate; None = on in official mode, off in fixed mode
    det_threshold: float | None = None  # box threshold; None: the detector's default (OWLv2 0.1, G-DINO 0.35)
    text_threshold: float = 0.25  # Grounding DINO's phrase threshold (official 0.25); OWLv2 has none
    color_val: str = (
        "current"  # "current" (2025-09 file) or "legacy" (behind numbers published before 2025-09)
    )
    batch_size: int = 16
    blip_image_size: int = 480
    depth_input_size: int = 480
    prompts_dir: Path | None = None  # local copy of examples/dataset/ (else download + cache)
    cache_dir: Path = DEFAULT_CACHE_DIR

    def __post_init__(self):
        bad = [c for c in self.categories if c not in CATEGORIES]
        if bad or not self.categories:
            raise EvalInputError(f"unknown T2I-CompBench categories {bad}; valid: {list(CATEGORIES)}")
        if self.mode not in ("official", "fixed"):
            raise EvalInputError(f"mode {self.mode!r} is not one of ['official', 'fixed']")
        if self.color_val not in ("current", "legacy"):
            raise EvalInputError(f"color_val {self.color_val!r} is not one of ['current', 'legacy']")
        if self.limit is not None and self.limit < 1:
            raise EvalInputError(f"limit={self.limit} must be >= 1")
        if self.images_per_prompt < 1 or self.batch_size < 1:
            raise EvalInputError("images_per_prompt and batch_size must be >= 1")

    @property
    def gate(self) -> bool:
        return self.mode == "official" if self.vocab_gate is None else self.vocab_gate


@dataclass
class T2IJudges:
    """Scorer objects (eval.scorers.*); None where no requested category needs one."""

    blip: object | None = None
    clip: object | None = None
    detector: object | None = None
    depth: object | None = None
    names: dict = field(default_factory=dict)


NEEDS = {"color": {"blip"}, "shape": {"blip"}, "texture": {"blip"}, "spatial": {"detector"},
         "3d_spatial": {"detector", "depth"}, "numeracy": {"detector"}, "non_spatial": {"clip"},
         "complex": {"blip", "detector", "clip"}}  # fmt: skip


def load_judges(
    categories, *, blip: str, clip: str, detector: str, depth: str, cfg: T2IConfig, device: str = "cpu"
) -> T2IJudges:
    """Load only the judges the categories need (hub id or local folder each), before any scoring."""
    from eval.scorers.blip_vqa import BlipVqa
    from eval.scorers.clip_score import ClipScorer
    from eval.scorers.depth import DptDepth

    need = set().union(*(NEEDS[c] for c in categories))
    j = T2IJudges(
        names={
            k: v for k, v in dict(blip=blip, clip=clip, detector=detector, depth=depth).items() if k in need
        }
    )
    if "blip" in need:
        j.blip = BlipVqa.from_pretrained(blip, device=device, image_size=cfg.blip_image_size)
    if "clip" in need:
        j.clip = ClipScorer.from_pretrained(clip, device=device)
    if "detector" in need:
        j.detector = det.load_detector(detector, threshold=cfg.det_threshold, text_threshold=cfg.text_threshold,
                                       device=device)  # fmt: skip
    if "depth" in need:
        j.depth = DptDepth.from_pretrained(depth, device=device, input_size=cfg.depth_input_size)
    return j


def _remote(name: str) -> RemoteFile:
    return RemoteFile(name, _RAW.format(commit=COMMIT, name=name), BLOBS[name])


def load_prompts(category: str, cfg: T2IConfig) -> list[str]:
    """The val-split prompts of one category (verified official file), in file order, duplicates kept."""
    remote = (
        LEGACY_COLOR_VAL
        if (category == "color" and cfg.color_val == "legacy")
        else _remote(f"{category}_val.txt")
    )
    return read_prompt_lines(
        fetch_verified(remote, local_dir=cfg.prompts_dir, cache_dir=cfg.cache_dir / "t2i_compbench")
    )


def _extra_lines(name: str, cfg: T2IConfig) -> list[str]:
    return read_prompt_lines(
        fetch_verified(_remote(name), local_dir=cfg.prompts_dir, cache_dir=cfg.cache_dir / "t2i_compbench")
    )


def image_names(prompts: list[str], n: int) -> list[str]:
    return [f"{p}_{n * i + k:06d}.png" for i, p in enumerate(prompts) for k in range(n)]


def generate_category(generate_fn: GenerateFn, prompts: list[str], folder: Path, cfg: T2IConfig,
                      shard: Processes = ONE_PROCESS) -> None:  # fmt: skip
    """Write every missing image of this process's batches (resumable: existing files are kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = cfg.images_per_prompt
    todo = [(p, cfg.first_seed + idx % n, name) for idx, p, name in _items(prompts, n)]
    for batch in shard.mine(list(batched(todo, cfg.batch_size))):
        chunk = [t for t in batch if not (folder / t[2]).is_file()]
        if not chunk:
            continue
        images = generate_fn([p for p, _, _ in chunk], [s for _, s, _ in chunk])
        if len(images) != len(chunk):
            raise RuntimeError(f"generate_fn returned {len(images)} images for {len(chunk)} prompts")
        for (_, _, name), image in zip(chunk, images):
            tmp = folder / f".{name}.tmp.png"
            image.save(tmp)
            tmp.replace(folder / name)


def _gated(names: list[str], gate: bool, *, exact: bool) -> list[str]:
    return [n for n in names if not gate or det.vocab_ok(n, exact=exact)]


def _detect(judges: T2IJudges, images, queries: list[list[str]]) -> list[list[det.Detection]]:
    asked = [(i, q) for i, q in enumerate(queries) if q]
    found = judges.detector.detect([images[i] for i, _ in asked], [q for _, q in asked]) if asked else []
    out: list[list[det.Detection]] = [[] for _ in images]
    for (i, _), dets in zip(asked, found):
        out[i] = dets
    return out


def _dets_json(dets: list[det.Detection]) -> list:
    return [
        [d.label, round(d.score, 4), [round(v, 1) for v in d.box]]
        for d in sorted(dets, key=lambda d: -d.score)[:10]
    ]


def score_attribute(judges, prompts, images, cfg) -> list[tuple[float, dict]]:
    from eval.scorers.blip_vqa import attribute_score

    phrases = [parsing.noun_phrases(p) for p in prompts]
    questions = [[f"{ph}?" for ph in phs[:8]] for phs in phrases]
    ratios = judges.blip.yes_ratio(images, questions)
    decimals = 4 if cfg.mode == "official" else None
    out = []
    for phs, qs, rs in zip(phrases, questions, ratios):
        score, factors = attribute_score(phs, dict(zip(qs, rs)).__getitem__, decimals=decimals)
        out.append((score, {"phrases": phs[:8], "factors": factors}))
    return out


def score_non_spatial(judges, prompts, images, cfg) -> list[tuple[float, dict]]:
    return [(float(s), {}) for s in judges.clip.cosine(images, prompts)]


def score_spatial(judges, prompts, images, cfg, *, complex_prompts: bool = False) -> list[tuple[float, dict]]:
    rels = [det.first_relation(p, det.RELATIONS_2D) for p in prompts]
    if cfg.mode == "fixed":
        rels = ["on the top of" if r == "on top of" else r for r in rels]
    objs = [parsing.complex_spatial_objects(p) if complex_prompts else parsing.spatial_objects(p, r or "")
            for p, r in zip(prompts, rels)]  # fmt: skip
    dets = _detect(
        judges, images, [_gated(list(dict.fromkeys(o)), cfg.gate, exact=True) if o else [] for o in objs]
    )
    return [(det.spatial_2d_score(o[0], o[1], r, d) if o else 0.0, {"objects": o, "relation": r, "detections": _dets_json(d)})
            for o, r, d in zip(objs, rels, dets)]  # fmt: skip


def score_3d_spatial(judges, prompts, images, cfg) -> list[tuple[float, dict]]:
    rels = [det.first_relation(p, det.RELATIONS_3D) for p in prompts]
    objs = [parsing.spatial_objects(p, r or "") for p, r in zip(prompts, rels)]
    dets = _detect(
        judges, images, [_gated(list(dict.fromkeys(o)), cfg.gate, exact=False) if o else [] for o in objs]
    )
    depths = judges.depth.depth_maps(images)
    transposed = cfg.mode == "official"
    return [(det.spatial_3d_score(o[0], o[1], r, d, m, transposed=transposed) if o else 0.0,
             {"objects": o, "relation": r, "detections": _dets_json(d)})
            for o, r, d, m in zip(objs, rels, dets, depths)]  # fmt: skip


def score_numeracy(
    judges, prompts, images, cfg, *, objects: list[tuple[str, str]]
) -> list[tuple[float, dict]]:
    targets = [parsing.numeracy_targets(p, objects) for p in prompts]
    queries = [_gated(list(dict.fromkeys(n for n, _ in t)), cfg.gate, exact=False) for t in targets]
    dets = _detect(judges, images, queries)
    return [
        (det.numeracy_score(t, d), {"targets": t, "detections": _dets_json(d)}) for t, d in zip(targets, dets)
    ]


def score_complex(judges, prompts, images, cfg, *, subsplit: dict[str, str]) -> list[tuple[float, dict]]:
    """3-in-1: (spatial+attr)/2, (clip+attr)/2 or (attr+spatial+clip)/3 by the prompt's sub-split."""
    attr = score_attribute(judges, prompts, images, cfg)
    spatial = score_spatial(judges, prompts, images, cfg, complex_prompts=True)
    clip = judges.clip.cosine(images, [parsing.remove_adjectives(p) for p in prompts]).tolist()
    out = []
    for p, (a, _), (s, sd), c in zip(prompts, attr, spatial, clip):
        kind = subsplit.get(p.split(".")[0].lower(), "spatialaction")
        score = combine_complex(kind, attribute=a, spatial=s, clip=c)
        out.append(
            (score, {"subsplit": kind, "attribute": a, "spatial": s, "clip": c, "objects": sd["objects"]})
        )
    return out


def combine_complex(kind: str, *, attribute: float, spatial: float, clip: float) -> float:
    if kind == "spatial":
        return (spatial + attribute) / 2
    if kind == "action":
        return (clip + attribute) / 2
    return (attribute + spatial + clip) / 3


def _scorer(category: str, cfg: T2IConfig) -> Callable:
    if category in ("color", "shape", "texture"):
        return score_attribute
    if category == "numeracy":
        objects = parsing.parse_object_list(_extra_lines("new_objects.txt", cfg))
        return lambda j, p, im, c: score_numeracy(j, p, im, c, objects=objects)
    if category == "complex":
        subsplit = {line.split(".")[0].lower(): kind for kind in ("spatial", "action")
                    for line in _extra_lines(f"complex_val_{kind}.txt", cfg)}  # fmt: skip
        return lambda j, p, im, c: score_complex(j, p, im, c, subsplit=subsplit)
    return {"spatial": score_spatial, "3d_spatial": score_3d_spatial, "non_spatial": score_non_spatial}[
        category
    ]


def _items(prompts: list[str], n: int) -> list[tuple[int, str, str]]:
    return [(n * i + k, p, f"{p}_{n * i + k:06d}.png") for i, p in enumerate(prompts) for k in range(n)]


def _cache(
    category: str, judges: T2IJudges, cfg: T2IConfig, path: Path, shard: Processes = ONE_PROCESS
) -> ScoreCache:
    detector = judges.detector.settings if judges.detector is not None else None
    signature = {"category": category, "mode": cfg.mode, "gate": cfg.gate, "detector": detector,
                 "judges": judges.names, "blip_px": cfg.blip_image_size, "parser": parsing.parser_name()}  # fmt: skip
    return ScoreCache(path, signature, shard)


def score_category(category: str, prompts: list[str], paths: dict[str, Path], judges: T2IJudges, cfg: T2IConfig,
                   cache_path: Path, shard: Processes = ONE_PROCESS) -> None:  # fmt: skip
    """Score this process's batches of one category; images cached with the same settings are skipped."""
    from PIL import Image

    cache = _cache(category, judges, cfg, cache_path, shard)
    done = cache.load()
    scorer = _scorer(category, cfg)
    for batch in shard.mine(list(batched(_items(prompts, cfg.images_per_prompt), cfg.batch_size))):
        chunk = [it for it in batch if it[2] not in done]
        if not chunk:
            continue
        images = [Image.open(paths[name]).convert("RGB") for _, _, name in chunk]
        results = scorer(judges, [p for _, p, _ in chunk], images, cfg)
        records = [{"key": name, "category": category, "index": idx, "prompt": p, "score": s, "details": d}
                   for (idx, p, name), (s, d) in zip(chunk, results)]  # fmt: skip
        cache.append(records)


def category_records(
    category: str, prompts: list[str], judges: T2IJudges, cfg: T2IConfig, cache_path: Path
) -> list[dict]:
    """Every image's record, in index order, from the cache files of all processes."""
    done = _cache(category, judges, cfg, cache_path).load()
    items = _items(prompts, cfg.images_per_prompt)
    missing = [name for _, _, name in items if name not in done]
    if missing:
        raise RuntimeError(
            f"{len(missing)} {category} images have no score in {cache_path} (e.g. {missing[0]!r})"
        )
    return [{k: v for k, v in done[name].items() if k != "sig"} for _, _, name in items]


def _category_folder(images_dir: Path, category: str) -> Path:
    samples = Path(images_dir) / category / "samples"
    return samples if samples.is_dir() else Path(images_dir) / category


def deviations(cfg: T2IConfig, judges: T2IJudges) -> list[str]:
    out = []
    if "detector" in judges.names:
        out.append(f"detector: {judges.detector.describe()}; it replaces UniDet RS200/R50 (detectron2), and its "
                   "confidences enter the 0.25*conf terms on its own scale")  # fmt: skip
        out.append("detector: UniDet vocabulary gate " + ("ON (2D exact label, 3D/numeracy substring; mimics UniDet)" if cfg.gate
                   else "OFF: open vocabulary, 2D/3D/numeracy scores not comparable with published numbers"))  # fmt: skip
        out.append(
            "numeracy: plain word tokens and a built-in number-word table (no spaCy tokens, no word2number)"
        )
    if "blip" in judges.names:
        out.append(f"BLIP-VQA: transformers port ({judges.names['blip']}) at {cfg.blip_image_size} px with interpolated "
                   "position embeddings and the [ENC] first token; expect +-0.01-level differences")  # fmt: skip
    if "depth" in judges.names:
        out.append(
            f"depth: transformers DPT ({judges.names['depth']}); depth map and boxes in UniDet's 479-px frame"
        )
    if "clip" in judges.names:
        out.append(
            "CLIP: transformers port; texts truncated to 77 tokens (official clip.tokenize would raise)"
        )
    if parsing.parser_name() == parsing.FALLBACK_NAME:
        out.append(
            "noun phrases / objects / adjectives: rule-based fallback parser (spaCy en_core_web_sm not installed)"
        )
    if cfg.mode == "fixed":
        out.append("mode=fixed: depth indexed [y, x] (official: transposed), 'on top of' scored as 'on the top of' "
                   "(official: 0), BLIP factors not rounded to 4 decimals")  # fmt: skip
    if "color" in cfg.categories:
        out.append(f"color_val.txt: {cfg.color_val} version" + (" (numbers published before 2025-09 used the legacy file)"
                   if cfg.color_val == "current" else ""))  # fmt: skip
    if cfg.limit is not None:
        out.append(
            f"--limit {cfg.limit}: only the first {cfg.limit} prompts per category (partial, not comparable)"
        )
    if cfg.images_per_prompt != 10 or cfg.first_seed != 42:
        out.append(
            f"{cfg.images_per_prompt} images per prompt from seed {cfg.first_seed} (official: 10 from 42)"
        )
    return out


def run(cfg: T2IConfig, load_judges: Callable[[], T2IJudges], *, out_dir: Path, model: str,
        generate_fn: GenerateFn | None = None, images_dir: Path | None = None, shard: Processes = ONE_PROCESS) -> dict:  # fmt: skip
    """Generate (or take) the images, validate them all, score every category, write the result files.

    With several processes each generates and scores its own batches; the main process writes the results."""
    if (generate_fn is None) == (images_dir is None):
        raise EvalInputError("give exactly one of generate_fn (a model) or images_dir (a folder of images)")
    start = time.time()
    out_dir = Path(out_dir)
    if images_dir is not None and (absent := [c for c in cfg.categories if not _category_folder(images_dir, c).is_dir()]):
        raise EvalInputError(f"image folder {images_dir} has no folder for {absent}: expected "
                             f"{images_dir}/CATEGORY/samples/ or {images_dir}/CATEGORY/")  # fmt: skip
    # 1. prompts, verified
    prompts = {c: load_prompts(c, cfg)[: cfg.limit] for c in cfg.categories}
    # 2. images: generate what is missing, then validate every folder before scoring
    folders = {}
    for c in cfg.categories:
        folders[c] = out_dir / c / "samples" if generate_fn is not None else _category_folder(images_dir, c)
        if generate_fn is not None:
            generate_category(generate_fn, prompts[c], folders[c], cfg, shard)
    shard.wait()  # every process's images are written before any folder is validated
    full = {c: load_prompts(c, replace(cfg, limit=None)) for c in cfg.categories} if cfg.limit else prompts
    paths = {c: validate_image_folder(folders[c], image_names(prompts[c], cfg.images_per_prompt),
                                      allowed=image_names(full[c], cfg.images_per_prompt), rule=NAMING_RULE)
             for c in cfg.categories}  # fmt: skip
    # 3. judges (one clear error if any is missing), 4. scores, resumable
    judges = load_judges()
    for c in cfg.categories:
        score_category(c, prompts[c], paths[c], judges, cfg, out_dir / c / "scores.jsonl", shard)
    shard.wait()  # 5. every process's scores are cached; gather them
    records, scores = [], {}
    for c in cfg.categories:
        recs = category_records(c, prompts[c], judges, cfg, out_dir / c / "scores.jsonl")
        scores[c] = statistics.fmean(r["score"] for r in recs)
        records += recs
    summary = {
        "benchmark": "t2i-compbench", "model": model, "scores": scores, "overall": statistics.fmean(scores.values()),
        "n_prompts": sum(len(p) for p in prompts.values()), "n_prompts_per_category": {c: len(p) for c, p in prompts.items()},
        "images_per_prompt": cfg.images_per_prompt, "seeds": [cfg.first_seed + k for k in range(cfg.images_per_prompt)],
        "n_images": len(records), "seconds": round(time.time() - start, 2), "judge": judges.names.get("blip"),
        "detector": judges.names.get("detector"), "detector_settings": judges.detector.settings if judges.detector else None,
        "clip": judges.names.get("clip"), "depth": judges.names.get("depth"),
        "mode": cfg.mode, "vocab_gate": cfg.gate, "noun_phrases": parsing.parser_name(), "color_val": cfg.color_val,
        "overall_note": "mean of the category scores (the official tables report no overall)",
        "protocol_deviations": deviations(cfg, judges),
        "complete": cfg.limit is None and cfg.images_per_prompt == 10 and all(len(prompts[c]) == len(full[c]) for c in prompts),
    }  # fmt: skip
    return write_results(out_dir, summary, records) if shard.is_main else summary
