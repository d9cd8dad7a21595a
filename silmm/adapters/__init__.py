"""Model families behind the one protocol in `base.py`, listed in a literal dict. Importing loads no weights.

`load_adapter(name_or_path)` takes a registered name (`world-discrete`, `world-continuous`, `janus-pro`,
`qwen-image`), a world model folder, or, with `family=`, a hub id / folder of a real model.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"

# name -> (module, class, default weights: a folder under assets/ or a hub id)
ADAPTERS = {
    "world-discrete": ("silmm.adapters.world", "WorldAdapter", str(ASSETS / "world-discrete")),
    "world-continuous": ("silmm.adapters.world", "WorldAdapter", str(ASSETS / "world-continuous")),
    "janus-pro": ("silmm.adapters.janus", "JanusAdapter", "deepseek-community/Janus-Pro-1B"),
    "qwen-image": ("silmm.adapters.qwen_image", "QwenImageAdapter", "Qwen/Qwen-Image"),
}


def _resolve(name: str) -> tuple[str, str, str]:
    if name in ADAPTERS:
        return ADAPTERS[name]
    path = Path(name)
    if (path / "config.json").is_file():
        import json

        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("world_kind") in ("discrete", "continuous"):
            return ("silmm.adapters.world", "WorldAdapter", str(path))
    raise ValueError(
        f"unknown model {name!r}: use one of {sorted(ADAPTERS)} or the folder of a world model "
        f"(real models: a registered name plus weights=<hub id or folder>)"
    )


def load_adapter(
    name: str, *, weights: str | None = None, adapter_dir: str | None = None, device: str | None = None
):
    """Build the adapter for `name` (optionally other weights), then attach a saved LoRA from `adapter_dir`."""
    import importlib

    module, cls_name, default = _resolve(name)
    cls = getattr(importlib.import_module(module), cls_name)
    if module == "silmm.adapters.world":
        adapter = cls.from_pretrained(
            weights or default, device=device, name=name if name in ADAPTERS else None
        )
    else:
        adapter = cls.from_pretrained(weights or default, device=device)
    if adapter_dir is not None:
        for earlier in _earlier_iterations(Path(adapter_dir)):
            adapter.load_adapter(str(earlier))
            adapter.merge_adapter()
        adapter.load_adapter(str(adapter_dir))
    return adapter


def _earlier_iterations(adapter_dir: Path) -> list[Path]:
    """For runs/<name>/iter_<k>/adapter: the adapters of iterations 1..k-1, which the loop merged before
    training iteration k (so iteration k's LoRA only makes sense on top of them)."""
    it = adapter_dir.resolve().parent
    if adapter_dir.name != "adapter" or not it.name.startswith("iter_") or not it.name[5:].isdigit():
        return []
    earlier = [it.parent / f"iter_{i}" / "adapter" for i in range(1, int(it.name[5:]))]
    missing = [str(p) for p in earlier if not p.is_dir()]
    if missing:
        raise FileNotFoundError(f"{adapter_dir} builds on earlier iterations whose adapters are missing: {missing}")
    return earlier


def load_judge(spec: str, device: str | None = None):
    """An external VLM judge (hub id or folder of a Qwen2.5-VL or BLIP-VQA model) with `answer_yes_no`;
    "oracle" is the world's exact oracle (world models only; an ablation, a judge that is never wrong)."""
    if spec == "oracle":
        from silmm.world.measure import OracleJudge

        return OracleJudge()
    from silmm.adapters.judges import load_judge as _load

    return _load(spec, device=device)


def is_world(name: str) -> bool:
    """Whether `name` is a world model (registered name or folder); raises ValueError for an unknown name."""
    return _resolve(name)[0] == "silmm.adapters.world"


def measurement_for(name: str, *, images_per_prompt: int):
    """Ground-truth measurement hooks for world models (None for real models); `images_per_prompt` per held-out
    prompt in the evaluation after every iteration (the default is `RunConfig.heldout_images`)."""
    if not is_world(name):
        return None
    from silmm.world.measure import WorldMeasure

    return WorldMeasure(images_per_prompt=images_per_prompt)
