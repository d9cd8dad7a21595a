"""Tiny random versions of the real model families, built in code (no hub): Janus, Qwen-Image, Qwen2.5-VL, BLIP.

Sizes follow ../shared/docs/STACK.md (2a, 2b and the Addendum). Every builder is deterministic given `seed`
(torch's global RNG is seeded here, in test code only) and returns real transformers / diffusers objects, so the
adapters under test run the same code paths as with real weights. `save_*` helpers write a folder that the
adapters' `from_pretrained` / `load_judge` read back.
"""

from __future__ import annotations

import json
import os
import re

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors

WORDS = (
    "a an the is are there of on in to and with left right above below behind front near "
    "red blue green yellow black white purple orange brown pink gray "
    "cat dog car apple ball cup book bird chair table tree house flower bowl "
    "round square metallic wooden fluffy glass leather plastic "
    "one two three four five many "
    "yes Yes no No ? , . : image prompt question questions write"
).split()

# --- Janus ----------------------------------------------------------------------------------------------

# The chat template of the transformers-format Janus-Pro repos (convert_janus_weights_to_hf.py), verbatim.
JANUS_CHAT_TEMPLATE = (
    "{%set seps=['\n\n','<\uff5cend\u2581of\u2581sentence\uff5c>']%}"
    "{%set i=0%}"
    "{%for message in messages%}"
    "{%if message['role']|lower=='user'%}"
    "<|User|>: "
    "{%elif message['role']|lower=='assistant'%}"
    "<|Assistant|>:{%if not (loop.last and not add_generation_prompt and message['content'][0]['type']=='text' "
    "and message['content'][0]['text']=='')%} {%endif%}"
    "{%else%}"
    "{{message['role'].capitalize()}}: "
    "{%endif%}"
    "{%for content in message['content']%}"
    "{%if content['type']=='image'%}"
    "{%if not loop.first%}{{'\n'}}{%endif%}"
    "<image_placeholder>"
    "{%if not loop.last%}{{'\n'}}{%endif%}"
    "{%elif content['type']=='text'%}"
    "{%set text=content['text']%}"
    "{%if loop.first%}{%set text=text.lstrip()%}{%endif%}"
    "{%if loop.last%}{%set text=text.rstrip()%}{%endif%}"
    "{%if not loop.first and message['content'][loop.index0-1]['type']=='text'%}"
    "{{' '+text}}"
    "{%else%}"
    "{{text}}"
    "{%endif%}"
    "{%endif%}"
    "{%endfor%}"
    "{%if not loop.last or add_generation_prompt%}"
    "{%if message['role']|lower=='user'%}"
    "{{seps[0]}}"
    "{%else%}"
    "{{seps[1]}}"
    "{%endif%}"
    "{%endif%}"
    "{%endfor%}"
    "{%if add_generation_prompt%}<|Assistant|>:{%endif%}"
)
JANUS_SPECIALS = [
    "<pad>",
    "<unk>",
    "<bos>",
    "<eos>",
    "<image_placeholder>",
    "<begin_of_image>",
    "<end_of_image>",
]


def janus_tokenizer(vocab_size: int = 0):
    """WordLevel tokenizer over WORDS; `vocab_size` pads it with filler words (to match a real-size model)."""
    from transformers import PreTrainedTokenizerFast

    chat = ["<|User|>", "<|Assistant|>"]
    vocab = {t: i for i, t in enumerate(JANUS_SPECIALS + chat + list(dict.fromkeys(WORDS)))}
    for i in range(len(vocab), vocab_size):
        vocab[f"w{i}"] = i
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={
            "image_token": "<image_placeholder>",
            "boi_token": "<begin_of_image>",
            "eoi_token": "<end_of_image>",
        },
    )
    tok.add_tokens(chat, special_tokens=True)
    return tok


def build_janus(seed: int = 0, hidden: int = 64):
    """(JanusForConditionalGeneration, JanusProcessor): 64x64 images, 16 image tokens, codebook 128."""
    from transformers import (
        JanusConfig,
        JanusForConditionalGeneration,
        JanusImageProcessorPil,
        JanusProcessor,
        JanusVisionConfig,
        JanusVQVAEConfig,
        LlamaConfig,
    )

    tok = janus_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<bos>", "<eos>", "<pad>", "<begin_of_image>")}
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        bos_token_id=ids["<bos>"],
        eos_token_id=ids["<eos>"],
        pad_token_id=ids["<pad>"],
    )
    vis = JanusVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=64,
        patch_size=16,
        projection_dim=hidden,
        num_image_tokens=16,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=128,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1, 1, 1, 1, 1],
        num_res_blocks=1,
        projection_dim=hidden,
        image_token_embed_dim=hidden,
    )
    torch.manual_seed(seed)
    cfg = JanusConfig(
        text_config=text,
        vision_config=vis,
        vq_config=vq,
        image_token_id=tok.convert_tokens_to_ids("<image_placeholder>"),
    )
    model = JanusForConditionalGeneration(cfg).eval()
    gc = model.generation_config
    gc.generation_kwargs = {"boi_token_id": ids["<begin_of_image>"]}
    gc.bos_token_id, gc.pad_token_id, gc.eos_token_id = ids["<bos>"], ids["<pad>"], ids["<eos>"]
    image_processor = JanusImageProcessorPil(
        size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    proc = JanusProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        num_image_tokens=16,
        chat_template=JANUS_CHAT_TEMPLATE,
        use_default_system_prompt=True,
    )
    return model, proc


def save_janus(folder: str, seed: int = 0, hidden: int = 64) -> str:
    model, proc = build_janus(seed, hidden)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


# --- Qwen2.5-VL and Qwen-Image --------------------------------------------------------------------------

QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_IMAGE_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
QWEN_IMAGE_DROP_IDX = 34  # QwenImagePipeline.prompt_template_encode_start_idx


def qwen_tokenizer():
    """A byte-level BPE Qwen2Tokenizer whose merge chains make each word of the templates one token.

    So the Qwen-Image system prefix is exactly 34 tokens, as with the real tokenizer (STACK.md Addendum 1).
    """
    from transformers import Qwen2Tokenizer

    probe = Qwen2Tokenizer(vocab={"<|endoftext|>": 0}, merges=[])
    pre = probe.backend_tokenizer.pre_tokenizer
    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    text = (
        QWEN_IMAGE_TEMPLATE.replace("{}", " ".join(WORDS))
        + " You are a helpful assistant. "
        + " ".join(WORDS)
    )
    segments = re.split("|".join(re.escape(t) for t in QWEN_SPECIALS), text)  # specials are added tokens
    pieces = [p for seg in segments for p, _ in pre.pre_tokenize_str(seg)]
    pieces += [p for w in ("yes", "Yes", "no", "No") for p, _ in pre.pre_tokenize_str(f"{w} {w}")]
    vocab = {t: i for i, t in enumerate(QWEN_SPECIALS)}
    for ch in sorted(byte_chars):
        vocab.setdefault(ch, len(vocab))
    merges: list[tuple[str, str]] = []
    for piece in dict.fromkeys(pieces):
        for k in range(2, len(piece) + 1):
            if piece[:k] not in vocab:
                vocab[piece[:k]] = len(vocab)
                merges.append((piece[: k - 1], piece[k - 1]))
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, extra_special_tokens=QWEN_SPECIALS[1:])
    prefix = QWEN_IMAGE_TEMPLATE.split("{}")[0]
    n = len(tok(prefix).input_ids)
    assert n == QWEN_IMAGE_DROP_IDX, f"tiny Qwen tokenizer gives a {n}-token system prefix, expected 34"
    return tok


def qwen_image_processor():
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)


def build_qwen_vl(seed: int = 0, tok=None):
    """(Qwen2_5_VLForConditionalGeneration, tokenizer): hidden 16, 4 layers, mrope [1,1,2]."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok = tok or qwen_tokenizer()
    cid = tok.convert_tokens_to_ids
    cfg = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 4,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": len(tok),
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default"},
            "rope_theta": 1000000.0,
            "bos_token_id": cid("<|endoftext|>"),
            "eos_token_id": cid("<|im_end|>"),
            "pad_token_id": cid("<|endoftext|>"),
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
        },
        image_token_id=cid("<|image_pad|>"),
        video_token_id=cid("<|video_pad|>"),
        vision_start_token_id=cid("<|vision_start|>"),
        vision_end_token_id=cid("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = cid("<|endoftext|>")
    model.generation_config.eos_token_id = cid("<|im_end|>")
    return model, tok


def build_qwen_image(seed: int = 0):
    """A QwenImagePipeline of tiny random parts (diffusers' fast-test sizes); images must be multiples of 8 px."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    text_encoder, tok = build_qwen_vl(seed)
    torch.manual_seed(seed + 1)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        axes_dims_rope=(8, 4, 4),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=24,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    pipe = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae.eval(),
        text_encoder=text_encoder,
        tokenizer=tok,
        transformer=transformer.eval(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_qwen_image(folder: str, seed: int = 0) -> str:
    build_qwen_image(seed).save_pretrained(folder)
    return folder


def save_qwen_vl(folder: str, seed: int = 0) -> str:
    """A Qwen2.5-VL judge folder: model, tokenizer and image processor (preprocessor_config.json)."""
    model, tok = build_qwen_vl(seed)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    qwen_image_processor().save_pretrained(folder)
    return folder


# --- BLIP VQA -------------------------------------------------------------------------------------------


def build_blip(seed: int = 0, folder: str | None = None):
    """(BlipForQuestionAnswering, BlipProcessor) at 64x64, with a BERT WordPiece vocab written in code."""
    import tempfile

    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForQuestionAnswering,
        BlipImageProcessorPil,
        BlipProcessor,
        BlipTextConfig,
        BlipVisionConfig,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + [
        w.lower() for w in dict.fromkeys(WORDS)
    ]
    words = list(dict.fromkeys(words))
    vocab_dir = folder or tempfile.mkdtemp()
    path = os.path.join(vocab_dir, "vocab.txt")
    with open(path, "w") as f:
        f.write("\n".join(words) + "\n")
    tok = BertTokenizerFast(path, bos_token="[DEC]", model_max_length=32)
    torch.manual_seed(seed)
    cfg = BlipConfig(
        text_config=BlipTextConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            encoder_hidden_size=32,
            bos_token_id=tok.convert_tokens_to_ids("[DEC]"),
            pad_token_id=tok.pad_token_id,
            sep_token_id=tok.sep_token_id,
        ).to_dict(),
        vision_config=BlipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=64,
            patch_size=16,
            initializer_range=0.02,  # the default 1e-10 makes a random vision tower output ~0: images ignored
        ).to_dict(),
    )
    model = BlipForQuestionAnswering(cfg).eval()
    proc = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 64, "width": 64}), tokenizer=tok
    )
    return model, proc


def save_blip(folder: str, seed: int = 0) -> str:
    model, proc = build_blip(seed, folder)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)
