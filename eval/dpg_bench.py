"""DPG-Bench evaluation: 1,065 dense prompts, 4 images per prompt in a 2x2 grid, DSG questions with dependencies.

Protocol (BENCHMARKS.md section 2): prompts and `dpg_bench.csv` from TencentQQGYLab/ELLA at the pinned commit,
each verified by its git blob hash; the grid `<stem>.png` holds tiles top-left, top-right, bottom-left,
bottom-right. A yes/no judge answers every question on every tile; a question whose parent was answered "no"
is zeroed (in CSV order, so zeroing cascades); image score = mean over tiles of the mean question score;
DPG score = 100 x mean over prompts. Categories (5 L1, 13 L2 from the `tuple` column) are question-weighted.
Default: all CSV rows, categories from all 4 tiles after dependency zeroing. `official_quirks=True` reproduces
the official script's two bugs: it drops the first CSV row (ELLA #61; an image whose question depends on the
dropped one is skipped) and computes categories from the last tile's raw answers (ELLA #60). Judge answers are
cached per image, so both variants are computed from the same answers and reported. With several processes
(`silmm.runio.Processes`) each generates and judges its own batches of grids; the main process writes the results.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from eval.common import (
    DEFAULT_CACHE_DIR,
    EvalInputError,
    GenerateFn,
    RemoteFile,
    ScoreCache,
    batched,
    fetch_verified,  # fmt: skip
    git_blob_sha1,
    validate_image_folder,
    write_results,
)
from silmm.runio import ONE_PROCESS, Processes

COMMIT = "3c228f1dc6c4d3cad0a47493816151a419f14db3"
CSV_BLOB = "98457fc9901943f51ff9a30367250fc292533bed"
_RAW = "https://raw.githubusercontent.com/TencentQQGYLab/ELLA/{commit}/dpg_bench/{path}"
CSV_COLUMNS = ("item_id", "text", "keywords", "proposition_id", "dependency", "category_broad", "category_detailed",
               "tuple", "question_natural_language")  # fmt: skip
L1_CATEGORIES = ("entity", "attribute", "relation", "global", "other")
TILES = 4  # official PIC_NUM: a 2x2 grid
NAMING_RULE = "'<prompt file stem>.png' (e.g. 'partiprompts97.png'), a square 2x2 grid of 4 tiles"


@dataclass(frozen=True)
class Question:
    qid: int  # proposition_id, 1-based within its item
    text: str
    parents: tuple[int, ...]  # 0 = no parent
    l2: str  # e.g. "entity - whole"
    l1: str  # e.g. "entity"


@dataclass(frozen=True)
class DpgConfig:
    limit: int | None = None  # first N prompt stems (sorted); result marked incomplete
    first_seed: int = 42  # official protocol has no seed policy (ELLA #67); tiles use seeds 42..45
    official_quirks: bool = False
    batch_size: int = 4  # grids per judge batch (x4 tiles)
    prompts_dir: Path | None = None  # local copy of dpg_bench/prompts/ (else download + cache)
    csv_path: Path | None = None  # local dpg_bench.csv (else download + cache)
    verify_csv: bool = True
    cache_dir: Path = DEFAULT_CACHE_DIR

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise EvalInputError(f"limit={self.limit} must be >= 1")
        if self.batch_size < 1:
            raise EvalInputError(f"batch_size={self.batch_size} must be >= 1")


@dataclass
class ItemResult:
    score: float | None  # None: the official script would skip this image (missing parent)
    raw_last: dict[int, float] = field(default_factory=dict)  # last tile, before zeroing
    zeroed: list[dict[int, float]] = field(default_factory=list)  # every tile, after zeroing


def manifest() -> dict[str, str]:
    return json.loads((Path(__file__).with_name("dpg_bench_manifest.json")).read_text())["files"]


def selected_stems(files: dict[str, str], cfg: DpgConfig) -> list[str]:
    """The prompt stems a run covers: the first `limit` of the manifest's `files`, sorted."""
    return sorted(files)[: cfg.limit]


def load_prompts(cfg: DpgConfig) -> dict[str, str]:
    """{stem: prompt} for the (first `limit`) official prompt files, each verified by its git blob hash."""
    files = manifest()

    def one(stem):
        remote = RemoteFile(f"{stem}.txt", _RAW.format(commit=COMMIT, path=f"prompts/{stem}.txt"), files[stem])
        path = fetch_verified(
            remote, local_dir=cfg.prompts_dir, cache_dir=cfg.cache_dir / "dpg_bench" / "prompts"
        )
        return stem, path.read_text(encoding="utf-8").strip()

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, selected_stems(files, cfg)))


def load_csv(cfg: DpgConfig) -> list[dict]:
    """Rows of dpg_bench.csv (verified unless verify_csv=False), with parsed ids; one error for any bad row."""
    remote = RemoteFile("dpg_bench.csv", _RAW.format(commit=COMMIT, path="dpg_bench.csv"), CSV_BLOB)
    if cfg.csv_path is not None:
        path = Path(cfg.csv_path)
        if not path.is_file():
            raise EvalInputError(f"DPG-Bench CSV {path} does not exist")
        if cfg.verify_csv and (got := git_blob_sha1(path.read_bytes())) != CSV_BLOB:
            raise EvalInputError(f"{path} is not the official dpg_bench.csv: git blob {got}, expected {CSV_BLOB} "
                                 "(pass --no-verify-csv to score with a modified CSV; recorded as a deviation)")  # fmt: skip
    else:
        path = fetch_verified(
            remote, local_dir=None, cache_dir=cfg.cache_dir / "dpg_bench", verify=cfg.verify_csv
        )
    return parse_csv(path.read_text(encoding="utf-8"), source=str(path))


def parse_csv(text: str, *, source: str = "dpg_bench.csv") -> list[dict]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise EvalInputError(f"{source} lacks columns {missing}; expected columns {list(CSV_COLUMNS)}")
    rows, bad = [], []
    for n, row in enumerate(reader, start=2):  # line 1 is the header
        try:
            qid = int(row["proposition_id"])
            parents = tuple(int(float(p)) for p in str(row["dependency"]).split(","))
            l2 = row["tuple"].split("(")[0].strip()
            if not row["item_id"] or not row["question_natural_language"] or not l2:
                raise ValueError("empty item_id, question or tuple")
        except (ValueError, TypeError, AttributeError) as err:
            bad.append(f"line {n}: {err}")
            continue
        rows.append({"item_id": row["item_id"], "qid": qid, "parents": parents, "l2": l2,
                     "question": row["question_natural_language"]})  # fmt: skip
    if bad:
        raise EvalInputError(f"{source} has {len(bad)} malformed rows: " + "; ".join(bad[:10]))
    return rows


def build_questions(rows: list[dict], *, official_quirks: bool) -> dict[str, list[Question]]:
    """Questions per item in CSV order; the official script skips the first data row (ELLA #61)."""
    out: dict[str, list[Question]] = {}
    for i, r in enumerate(rows):
        if official_quirks and i == 0:
            continue
        l1 = r["l2"].split("-")[0].strip()
        out.setdefault(r["item_id"], []).append(Question(r["qid"], r["question"], r["parents"], r["l2"], l1))
    return out


def check_csv_matches(questions: dict[str, list[Question]], stems: list[str]) -> None:
    """Every prompt has questions, ids are unique per item, every parent exists (else one clear error)."""
    problems = []
    lacking = [s for s in stems if s not in questions]
    if lacking:
        problems.append(f"{len(lacking)} prompts have no questions in the CSV: {lacking[:10]}")
    for item, qs in questions.items():
        ids = [q.qid for q in qs]
        if len(set(ids)) != len(ids):
            problems.append(f"item {item!r} repeats proposition ids {sorted(ids)}")
        dangling = sorted({p for q in qs for p in q.parents if p != 0 and p not in ids})
        if dangling:
            problems.append(f"item {item!r} depends on missing propositions {dangling}")
    if problems:
        raise EvalInputError("dpg_bench.csv does not match the prompts: " + "; ".join(problems[:10]))


def score_item(
    questions: list[Question], tile_answers: list[dict[int, bool]], *, official_quirks: bool
) -> ItemResult:
    """Dependency zeroing per tile (cascading, CSV order), mean over questions, mean over tiles.

    In quirk mode a parent missing from the item (the dropped first row) makes the official script raise
    KeyError and skip the whole image: score None. Otherwise a missing parent cannot occur (checked at load).
    """
    tile_scores, zeroed, raw = [], [], {}
    for answers in tile_answers:
        s = {q.qid: 1.0 if answers[q.qid] else 0.0 for q in questions}
        raw = dict(s)
        for q in questions:
            for p in q.parents:  # official: any(p != 0 and s[p] == 0 for p in parents), short-circuiting
                if p == 0:
                    continue
                if p not in s:
                    return ItemResult(None)
                if s[p] == 0:
                    s[q.qid] = 0.0
                    break
        zeroed.append(s)
        tile_scores.append(statistics.fmean(s.values()))
    return ItemResult(statistics.fmean(tile_scores), raw, zeroed)


def aggregate(
    results: dict[str, ItemResult], questions: dict[str, list[Question]], *, official_quirks: bool
) -> dict:
    """DPG score and L1/L2 category scores (x100). Quirks: categories from the last tile's raw answers."""
    scored = {k: r for k, r in results.items() if r.score is not None}
    by_l2: dict[str, list[float]] = {}
    for item, r in scored.items():
        for q in questions[item]:
            values = [r.raw_last[q.qid]] if official_quirks else [tile[q.qid] for tile in r.zeroed]
            by_l2.setdefault(q.l2, []).extend(values)
    l2 = {c: 100 * statistics.fmean(v) for c, v in sorted(by_l2.items())}
    l1 = {}
    for c in L1_CATEGORIES:
        values = [x for name, v in by_l2.items() if name.startswith(c) for x in v]
        if values:
            l1[c] = 100 * statistics.fmean(values)
    overall = 100 * statistics.fmean(r.score for r in scored.values()) if scored else 0.0
    return {
        "overall": overall,
        "scores": l1,
        "scores_l2": l2,
        "n_scored": len(scored),
        "n_skipped": len(results) - len(scored),
    }


def make_grid(images: list) -> object:
    """2x2 grid (tile order: top-left, top-right, bottom-left, bottom-right), tiles resized to the first's size."""
    from PIL import Image

    w, h = images[0].size
    grid = Image.new("RGB", (2 * w, 2 * h))
    for k, im in enumerate(images):
        grid.paste(im.convert("RGB").resize((w, h)), ((k % 2) * w, (k // 2) * h))
    return grid


def split_grid(grid) -> list:
    r = grid.size[0] // 2  # official: tiles (0,0,r,r), (r,0,2r,r), (0,r,r,2r), (r,r,2r,2r)
    return [
        grid.crop(box) for box in ((0, 0, r, r), (r, 0, 2 * r, r), (0, r, r, 2 * r), (r, r, 2 * r, 2 * r))
    ]


def generate(generate_fn: GenerateFn, prompts: dict[str, str], folder: Path, cfg: DpgConfig,
             shard: Processes = ONE_PROCESS) -> None:  # fmt: skip
    """Write `<stem>.png` grids for every prompt of this process's batches without one (resumable)."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds = [cfg.first_seed + k for k in range(TILES)]
    for batch in shard.mine(list(batched(list(prompts), cfg.batch_size))):
        chunk = [s for s in batch if not (folder / f"{s}.png").is_file()]
        if not chunk:
            continue
        images = generate_fn([prompts[s] for s in chunk for _ in seeds], seeds * len(chunk))
        if len(images) != TILES * len(chunk):
            raise RuntimeError(f"generate_fn returned {len(images)} images for {TILES * len(chunk)} requests")
        for j, stem in enumerate(chunk):
            tmp = folder / f".{stem}.tmp.png"
            make_grid(images[TILES * j : TILES * (j + 1)]).save(tmp)
            tmp.replace(folder / f"{stem}.png")


def _check_square(paths: dict[str, Path]) -> None:
    from PIL import Image

    bad = []
    for name, path in paths.items():
        with Image.open(path) as im:
            if im.size[0] != im.size[1] or im.size[0] % 2:
                bad.append(f"{name} {im.size[0]}x{im.size[1]}")
    if bad:
        raise EvalInputError(
            f"DPG-Bench images must be square 2x2 grids with an even side; not so: {bad[:10]}"
        )


def collect_answers(judge, prompts: dict[str, str], paths: dict[str, Path], questions: dict[str, list[Question]],
                    cfg: DpgConfig, cache_path: Path, shard: Processes = ONE_PROCESS) -> dict[str, dict]:  # fmt: skip
    """Judge answers {stem: {"answers": [[0/1 per question] per tile], "qids": [...]}}, cached per image.

    Each process judges its own batches of grids; after a barrier the answers of all processes are read back."""
    from PIL import Image

    cache = ScoreCache(cache_path, {"judge": judge.name, "tiles": TILES}, shard)
    done = cache.load()
    for batch in shard.mine(list(batched(list(prompts), cfg.batch_size))):
        chunk = [s for s in batch if s not in done]
        if not chunk:
            continue
        tiles = [t for s in chunk for t in split_grid(Image.open(paths[f"{s}.png"]).convert("RGB"))]
        asked = [[q.text for q in questions[s]] for s in chunk for _ in range(TILES)]
        answers = judge.answer(tiles, asked)
        records = [{"key": s, "prompt": prompts[s], "qids": [q.qid for q in questions[s]],
                    "answers": [[int(a) for a in answers[TILES * j + t]] for t in range(TILES)]}
                   for j, s in enumerate(chunk)]  # fmt: skip
        cache.append(records)
    shard.wait()
    done = cache.load()
    missing = [s for s in prompts if s not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} grids have no answers in {cache_path} (e.g. {missing[0]!r})")
    return {s: done[s] for s in prompts}


def _results(
    cached: dict[str, dict], questions: dict[str, list[Question]], quirks: bool
) -> dict[str, ItemResult]:
    out = {}
    for stem, rec in cached.items():
        tiles = [dict(zip(rec["qids"], tile)) for tile in rec["answers"]]
        out[stem] = score_item(questions[stem], tiles, official_quirks=quirks)
    return out


def run(cfg: DpgConfig, load_judge: Callable[[], object], *, out_dir: Path, model: str, generate_fn: GenerateFn | None = None,
        images_dir: Path | None = None, shard: Processes = ONE_PROCESS) -> dict:  # fmt: skip
    """Generate (or take) the grids, validate prompts, CSV and images, judge every tile, write the results.

    With several processes each generates and judges its own batches; the main process writes the results."""
    if (generate_fn is None) == (images_dir is None):
        raise EvalInputError("give exactly one of generate_fn (a model) or images_dir (a folder of images)")
    start = time.time()
    out_dir = Path(out_dir)
    folder = out_dir / "images" if generate_fn is not None else Path(images_dir)

    def checked_folder() -> dict[str, Path]:  # names come from the shipped manifest: nothing to download
        files = manifest()
        names = [f"{s}.png" for s in selected_stems(files, cfg)]
        paths = validate_image_folder(folder, names, allowed=[f"{s}.png" for s in files], rule=NAMING_RULE)
        _check_square(paths)
        return paths

    if generate_fn is None:  # a given folder is checked before any download
        paths = checked_folder()
    # 1. prompts and questions, verified and cross-checked
    prompts = load_prompts(cfg)
    rows = load_csv(cfg)
    questions = build_questions(rows, official_quirks=False)
    check_csv_matches(questions, list(prompts))
    # 2. generated images: what is missing is drawn, then the folder is validated before scoring
    if generate_fn is not None:
        generate(generate_fn, prompts, folder, cfg, shard)
        shard.wait()  # every process's grids are written before the folder is validated
        paths = checked_folder()
    # 3. judge (loaded now: one clear error if missing), answers cached per image
    judge = load_judge()
    cached = collect_answers(judge, prompts, paths, questions, cfg, out_dir / "answers.jsonl", shard)
    # 4. both aggregations from the same answers
    quirky = build_questions(rows, official_quirks=True)
    variants = {q: aggregate(_results(cached, quirky if q else questions, q), quirky if q else questions, official_quirks=q)
                for q in (False, True)}  # fmt: skip
    main, alt = variants[cfg.official_quirks], variants[not cfg.official_quirks]
    per_item = _results(cached, quirky if cfg.official_quirks else questions, cfg.official_quirks)
    records = [{"key": s, "prompt": prompts[s], "score": per_item[s].score, "answers": cached[s]["answers"],
                "qids": cached[s]["qids"]} for s in prompts]  # fmt: skip
    summary = {
        "benchmark": "dpg-bench", "model": model, "scores": main["scores"], "overall": main["overall"],
        "scores_l2": main["scores_l2"], "n_prompts": len(prompts), "n_scored": main["n_scored"],
        "n_skipped": main["n_skipped"], "images_per_prompt": TILES, "seeds": [cfg.first_seed + k for k in range(TILES)],
        "seconds": round(time.time() - start, 2), "judge": judge.name, "detector": None,
        "official_quirks": cfg.official_quirks, "alternative": {"official_quirks": not cfg.official_quirks, **alt},
        "protocol_deviations": deviations(cfg, judge),
        # quirk mode skips images by design (as the official script does); that still counts as complete
        "complete": cfg.limit is None and len(prompts) == len(manifest()),
    }  # fmt: skip
    return write_results(out_dir, summary, records) if shard.is_main else summary


def deviations(cfg: DpgConfig, judge) -> list[str]:
    out = [f"judge: {judge.name} replaces mPLUG-large (ModelScope); {judge.rule} instead of mPLUG's free-form answer "
           "== 'yes'; absolute scores are not comparable with published DPG numbers",
           f"seeds {cfg.first_seed}..{cfg.first_seed + TILES - 1} for the 4 tiles (the official protocol has none)"]  # fmt: skip
    if cfg.official_quirks:
        out.append(
            "official quirks ON: first CSV row dropped (ELLA #61); categories from the last tile's raw answers (#60)"
        )
    else:
        out.append("official quirks OFF: all CSV rows; categories from all 4 tiles after dependency zeroing "
                   "(published per-category numbers come from the buggy path; see 'alternative')")  # fmt: skip
    if not cfg.verify_csv:
        out.append("dpg_bench.csv NOT verified against the official git blob (--no-verify-csv)")
    if cfg.limit is not None:
        out.append(f"--limit {cfg.limit}: only the first {cfg.limit} prompts (partial, not comparable)")
    return out
