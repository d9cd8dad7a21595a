"""Scorer throughput: images scored per second per scorer, batched versus one image at a time.

    .venv/bin/python -m eval.bench                 # tiny random judges (64 px), CPU, about a minute
    .venv/bin/python -m eval.bench --real-size     # judges at their real architecture sizes (random weights), GPU

Each scorer runs the same images in batches of `--batch` and one by one, `--repeats` times; the medians and their
ratio are printed in one table (and written as JSON with --json). Real-size mode builds BLIP ViT-B/16 at 480 px,
CLIP ViT-B/32, OWLv2 B/16 at 960 px, Grounding DINO Swin-T + BERT-base at 800 px and DPT-hybrid at 480 px from
their default configs with random weights: compute cost equals the real checkpoints', so per-image times give
wall-time estimates (docs/EVAL.md). The DPG judge has two rows, each image asked its own 16 questions as DPG-Bench
does: one where an image is one generated image (a tile; `python -m eval dpg-bench` judges 4 grids = 16 tiles per
call), and one where it is a 2x2 grid of 4 such images (so its "one at a time" already batches 4 images).
`build_tiny_judges` is also what the tests use: it saves every judge with save_pretrained to local folders.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from eval.common import keep_freed_memory

YES_NO_WORDS = [
    "yes",
    "no",
    "a",
    "an",
    "the",
    "red",
    "green",
    "blue",
    "bench",
    "bowl",
    "dog",
    "cat",
    "?",
    "is",
    "there",
]


def _bert_tokenizer(folder: Path, extra: list[str]):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *YES_NO_WORDS,
        *list("abcdefghijklmnopqrstuvwxyz"),
        *extra,
    ]
    # unique lines: a repeated word would shift the ids, and the added [DEC] would then share the last word's id
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    return BertTokenizerFast(str(folder / "vocab.txt"), bos_token="[DEC]", model_max_length=64)


def _clip_tokenizer(folder: Path):
    """Character-level CLIP BPE tokenizer written in code (no hub)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,?!'-")
    vocab = {
        t: i for i, t in enumerate([*chars, *[c + "</w>" for c in chars], "<|startoftext|>", "<|endoftext|>"])
    }
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>",
                         model_max_length=77)  # fmt: skip


def build_tiny_judges(root: Path, *, image_size: int = 64) -> dict[str, Path]:
    """Tiny random BLIP-VQA, CLIP, OWLv2, Grounding DINO and DPT, saved with save_pretrained under `root`."""
    import torch
    from transformers import (
        BlipConfig,
        BlipForQuestionAnswering,
        BlipImageProcessorPil,
        BlipTextConfig,
        BlipVisionConfig,
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        CLIPTextConfig,
        CLIPVisionConfig,
        DPTConfig,
        DPTForDepthEstimation,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessorPil,  # fmt: skip
        Owlv2TextConfig,
        Owlv2VisionConfig,
    )

    root = Path(root)
    torch.manual_seed(0)
    side = {"height": image_size, "width": image_size}
    folders = {k: root / k for k in ("blip", "clip", "owlv2", "grounding_dino", "dpt")}

    tok = _bert_tokenizer(folders["blip"], [])
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    text = BlipTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, encoder_hidden_size=32, bos_token_id=tok.bos_token_id,
                          pad_token_id=tok.pad_token_id, sep_token_id=tok.sep_token_id)  # fmt: skip
    vision = BlipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=image_size, patch_size=16)  # fmt: skip
    BlipForQuestionAnswering(
        BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())
    ).save_pretrained(folders["blip"])
    tok.save_pretrained(folders["blip"])
    BlipImageProcessorPil(size=side).save_pretrained(folders["blip"])

    ctok = _clip_tokenizer(folders["clip"])
    ctext = dict(vocab_size=len(ctok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=77, bos_token_id=ctok.bos_token_id, eos_token_id=ctok.eos_token_id,
                 pad_token_id=ctok.pad_token_id)  # fmt: skip
    cvision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=image_size,
                   patch_size=16)  # fmt: skip
    clip = CLIPModel(CLIPConfig(text_config=CLIPTextConfig(**ctext).to_dict(),
                                vision_config=CLIPVisionConfig(**cvision).to_dict(), projection_dim=16))  # fmt: skip
    clip.save_pretrained(folders["clip"])
    ctok.save_pretrained(folders["clip"])
    CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size=side).save_pretrained(folders["clip"])

    otok = _clip_tokenizer(folders["owlv2"])
    owl = Owlv2ForObjectDetection(Owlv2Config(text_config=Owlv2TextConfig(**{**ctext, "max_position_embeddings": 16}).to_dict(),
                                              vision_config=Owlv2VisionConfig(**cvision).to_dict(), projection_dim=32))  # fmt: skip
    owl.save_pretrained(folders["owlv2"])
    otok.model_max_length = 16
    otok.save_pretrained(folders["owlv2"])
    Owlv2ImageProcessorPil(size=side).save_pretrained(folders["owlv2"])

    _save_grounding_dino(folders["grounding_dino"], tiny=True, image_size=image_size)

    dpt = DPTForDepthEstimation(DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                                          image_size=image_size, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                                          neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=32,
                                          reassemble_factors=[4, 2, 1, 0.5], is_hybrid=False))  # fmt: skip
    dpt.save_pretrained(folders["dpt"])
    return folders


def _save_grounding_dino(folder: Path, *, tiny: bool, image_size: int = 64) -> None:
    """Grounding DINO (Swin + BERT) with a BERT tokenizer written in code; tiny per STACK.md, or Swin-T/BERT-base."""
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        SwinConfig,
    )

    tok = _bert_tokenizer(folder, [".", "person", "chair", "hot"])
    if tiny:  # ../shared/docs/STACK.md 2b (decoder_layers >= 2, else tie_weights fails)
        swin = SwinConfig(embed_dim=16, depths=[1] * 4, num_heads=[1] * 4, window_size=4, image_size=image_size,
                          out_features=["stage2", "stage3", "stage4"])  # fmt: skip
        bert = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=64)  # fmt: skip
        config = GroundingDinoConfig(backbone_config=swin.to_dict(), text_config=bert.to_dict(), d_model=32, encoder_layers=1,
                                     decoder_layers=2, num_queries=10, num_feature_levels=3, encoder_n_points=2,
                                     decoder_n_points=2, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
                                     decoder_attention_heads=2, max_text_len=32)  # fmt: skip
        processor = GroundingDinoImageProcessorPil(
            size={"shortest_edge": image_size, "longest_edge": image_size}
        )
    else:  # the default config is IDEA-Research/grounding-dino-tiny's: Swin-T, BERT-base, 900 queries; 800 px input
        config, processor = GroundingDinoConfig(), GroundingDinoImageProcessorPil()
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_real_size_judges(root: Path) -> dict[str, Path]:
    """BLIP ViT-B/16 + BERT-base, CLIP ViT-B/32, OWLv2 B/16 (960 px), Grounding DINO (Swin-T), DPT-hybrid: real
    sizes, random weights."""
    import torch
    from transformers import (
        BitConfig,
        BlipConfig,
        BlipForQuestionAnswering,
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        DPTConfig,
        DPTForDepthEstimation,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessorPil,  # fmt: skip
    )

    root = Path(root)
    torch.manual_seed(0)
    folders = {k: root / k for k in ("blip", "clip", "owlv2", "grounding_dino", "dpt")}
    tok = _bert_tokenizer(folders["blip"], [])
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    blip = BlipConfig(
        vision_config={"image_size": 384}, text_config={"vocab_size": 30524, "bos_token_id": tok.bos_token_id}
    )
    BlipForQuestionAnswering(blip).save_pretrained(folders["blip"])
    tok.save_pretrained(folders["blip"])
    ctok = _clip_tokenizer(folders["clip"])
    CLIPModel(CLIPConfig(text_config={"eos_token_id": ctok.eos_token_id})).save_pretrained(folders["clip"])
    ctok.save_pretrained(folders["clip"])
    CLIPImageProcessorPil(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    ).save_pretrained(folders["clip"])
    otok = _clip_tokenizer(folders["owlv2"])
    Owlv2ForObjectDetection(Owlv2Config(text_config={"eos_token_id": otok.eos_token_id},
                                        vision_config={"image_size": 960, "patch_size": 16})).save_pretrained(folders["owlv2"])  # fmt: skip
    otok.model_max_length = 16
    otok.save_pretrained(folders["owlv2"])
    Owlv2ImageProcessorPil(size={"height": 960, "width": 960}).save_pretrained(folders["owlv2"])
    _save_grounding_dino(folders["grounding_dino"], tiny=False)
    bit = BitConfig(global_padding="same", layer_type="bottleneck", depths=[3, 4, 9], out_features=["stage1", "stage2", "stage3"],
                    embedding_dynamic_padding=True)  # fmt: skip
    DPTForDepthEstimation(DPTConfig(is_hybrid=True, backbone_config=bit, image_size=384, neck_hidden_sizes=[256, 512, 768, 768],
                                    backbone_featmap_shape=[1, 1024, 24, 24])).save_pretrained(folders["dpt"])  # fmt: skip
    return folders


def _scorers(folders: dict[str, Path], *, device: str, real: bool) -> dict:
    from eval.scorers.blip_vqa import BlipVqa
    from eval.scorers.clip_score import ClipScorer
    from eval.scorers.depth import DptDepth
    from eval.scorers.detection import OwlDetector
    from eval.scorers.grounding_dino import GroundingDinoDetector
    from eval.scorers.vqa import BlipYesNoJudge

    blip480 = BlipVqa.from_pretrained(str(folders["blip"]), device=device, image_size=480 if real else 64)
    blip384 = BlipVqa.from_pretrained(str(folders["blip"]), device=device, image_size=384 if real else 64)
    clip = ClipScorer.from_pretrained(str(folders["clip"]), device=device)
    # Random real-size detectors pass hundreds of boxes an image, whose per-box post-processing a trained detector
    # never pays (`python -m scripts.detector_postprocess_cost`): at real size no box passes, so the rows time
    # preprocessing and the forward, as for a trained detector.
    owl = OwlDetector.from_pretrained(str(folders["owlv2"]), threshold=1.0 if real else 0.1, device=device)
    gdino = GroundingDinoDetector.from_pretrained(str(folders["grounding_dino"]), device=device,
                                                  **({"threshold": 1.0} if real else {}))  # fmt: skip
    depth = DptDepth.from_pretrained(str(folders["dpt"]), device=device, input_size=480 if real else 64)
    judge = BlipYesNoJudge(blip384)
    questions = ["a green bench?", "a blue bowl?", "a red dog?"]
    own_questions: dict[int, list[str]] = {}  # each image its own 16 questions (DPG mean ~ 15), as in DPG-Bench

    def asked(im) -> list[str]:
        n = len(own_questions)
        return own_questions.setdefault(id(im), [f"is there a red dog number {n}-{k}?" for k in range(16)])

    def dpg_tiles(ims):
        return judge.answer(list(ims), [asked(im) for im in ims])

    def dpg_grids(ims):
        from eval.dpg_bench import split_grid

        tiles = [(t, asked(im)) for im in ims for t in split_grid(im)]
        return judge.answer([t for t, _ in tiles], [q for _, q in tiles])

    return {
        "blip_vqa attribute (3 questions)": lambda ims: blip480.yes_ratio(ims, [questions] * len(ims)),
        "clip non-spatial": lambda ims: clip.cosine(ims, ["a green bench and a blue bowl"] * len(ims)),
        "owlv2 detection (2 queries)": lambda ims: owl.detect(ims, [["dog", "cat"]] * len(ims)),
        "grounding dino detection (2 queries)": lambda ims: gdino.detect(ims, [["dog", "cat"]] * len(ims)),
        "dpt depth": lambda ims: depth.depth_maps(ims),
        "dpg judge (1 image = 1 tile, 16 q)": dpg_tiles,
        "dpg judge (2x2 grid = 4 tiles x 16 q)": dpg_grids,
    }


def measure(fn, images: list, *, batch: int, repeats: int, sync) -> tuple[float, float]:
    """Median seconds for all images: batched, then one at a time."""
    fn(images[:batch])  # warm-up
    times = {"batched": [], "single": []}
    for _ in range(repeats):
        for mode, size in (("batched", batch), ("single", 1)):
            sync()
            t0 = time.perf_counter()
            for start in range(0, len(images), size):
                fn(images[start : start + size])
            sync()
            times[mode].append(time.perf_counter() - t0)
    return statistics.median(times["batched"]), statistics.median(times["single"])


def main(argv: list[str] | None = None) -> dict:
    import tempfile

    import numpy as np
    import torch
    from PIL import Image

    p = argparse.ArgumentParser(prog="python -m eval.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--real-size", action="store_true", help="judges at real architecture sizes (use a GPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the table here")
    p.add_argument("--only", help="measure only scorers whose name contains this text (e.g. owlv2)")
    p.add_argument("--default-allocator", action="store_true",
                   help="keep glibc's default thresholds (python -m eval sets them: eval.common.keep_freed_memory)")  # fmt: skip
    args = p.parse_args(argv)
    allocator = "glibc defaults"
    if not args.default_allocator and keep_freed_memory():
        allocator = "freed memory kept (as python -m eval)"
    if args.device == "cpu":
        torch.set_num_threads(1)
    torch.backends.cuda.matmul.allow_tf32 = True
    side = 512 if args.real_size else 64
    rng = np.random.RandomState(0)
    images = [
        Image.fromarray(rng.randint(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(args.images)
    ]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} thread)"
    print(f"{'real-size' if args.real_size else 'tiny'} random judges, {side}px images, {args.images} images, batch "
          f"{args.batch}, median of {args.repeats}, device {device}, allocator: {allocator}")  # fmt: skip
    print(f"{'scorer':40s} {'batched img/s':>14s} {'single img/s':>13s} {'ms/img':>8s} {'ratio':>6s}", flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = (build_real_size_judges if args.real_size else build_tiny_judges)(Path(tmp))
        scorers = _scorers(folders, device=args.device, real=args.real_size)
        for name, fn in scorers.items():
            if args.only and args.only not in name:
                continue
            try:
                batched_s, single_s = measure(fn, images, batch=args.batch, repeats=args.repeats, sync=sync)
            except Exception as e:  # one failing scorer must not lose the others' timings (a device run is costly)
                rows[name] = {"error": f"{type(e).__name__}: {e}"}
                print(f"{name:40s} FAILED: {rows[name]['error']}", flush=True)
                continue
            rows[name] = r = {"batched_img_per_s": args.images / batched_s, "single_img_per_s": args.images / single_s,
                              "ms_per_img_batched": 1000 * batched_s / args.images, "ratio": single_s / batched_s}  # fmt: skip
            print(f"{name:40s} {r['batched_img_per_s']:14.1f} {r['single_img_per_s']:13.1f} "
                  f"{r['ms_per_img_batched']:8.2f} {r['ratio']:6.2f}", flush=True)  # fmt: skip
    result = {
        "device": device,
        "real_size": args.real_size,
        "image_side": side,
        "batch": args.batch,
        "allocator": allocator,
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    main()
