"""SILMM: self-improving large multimodal models for compositional text-to-image generation (Qu et al., CVPR 2025).

A model writes compositional prompts, draws N images per prompt, asks itself yes/no questions about them,
scores them with its own answers, and trains on its best-vs-worst pairs (DPO for image tokens, KC-DPO for
continuous features). Run it with `python -m silmm run CONFIG.yaml [key=value ...] [--resume]`.
Importing this package loads no weights and touches no network.
"""

__version__ = "0.1.0"
