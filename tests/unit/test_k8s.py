"""`styleloop k8s check` (make k8s) on the repository's own Dockerfiles and overlays, and on
copies of them broken on purpose: each kind of breakage must be reported by the check meant
to catch it. Real tools throughout: kubectl kustomize, kubernetes-validate, hadolint,
checkov (.venv-k8s), pip's resolver."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from styleloop import k8s

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = ROOT / ".venv-k8s" / "bin" / "checkov"

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders overlays")


def needs_checkov() -> str:
    if not CHECKOV.exists():
        pytest.fail("checkov is not installed: run `make install` (it creates .venv-k8s)")
    return str(CHECKOV)


def copy_repo(tmp_path: Path) -> Path:
    """What the check reads: pyproject.toml and deploy/."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(ROOT / "deploy", root / "deploy")
    return root


def edit(root: Path, relative: str, old: str, new: str) -> None:
    path = root / relative
    text = path.read_text()
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1))


def test_both_overlays_pass_every_check() -> None:
    out = io.StringIO()
    problems = k8s.check(ROOT, k8s.OVERLAYS, needs_checkov(), out)
    assert problems == [], "\n".join(map(str, problems))
    report = out.getvalue()
    assert "local: " in report and "production: " in report
    production = k8s.render(ROOT / "deploy/k8s/overlays/production")
    kinds = {d["kind"] for d in production}
    # The real distributed engines and the platform objects the issue asks for.
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "ServiceMonitor", "Ingress"} <= kinds
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    gpu = [d["metadata"]["name"] for d in production if "nvidia.com/gpu" in str(d)]
    assert {"triton", "captioner", "llm"} <= set(gpu)


def test_the_vllm_variant_of_production_passes_every_check(tmp_path: Path) -> None:
    """The llm on vLLM (components/vllm instead of llm-gpu), as deploy/k8s/README.md says."""
    root = copy_repo(tmp_path)
    edit(
        root,
        "deploy/k8s/overlays/production/kustomization.yaml",
        "  - ../../components/llm-gpu\n",
        "  - ../../components/vllm\n",
    )
    problems = k8s.check(root, ["production"], needs_checkov(), io.StringIO())
    assert problems == [], "\n".join(map(str, problems))
    docs = k8s.render(root / "deploy/k8s/overlays/production")
    llm = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "llm-config"
    )
    assert (
        llm["data"]["BACKEND"] == "openai"
        and llm["data"]["OPENAI_BASE_URL"] == "http://vllm:8000/v1"
    )
    vllm = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "vllm")
    assert "--enable-lora" in vllm["spec"]["template"]["spec"]["containers"][0]["args"]


BREAKAGES: dict[str, tuple[str, str, str, str, str]] = {
    # name: (overlay, file, old, new, what the report says)
    "unknown field": (
        "local",
        "deploy/k8s/base/encoder.yaml",
        "  revisionHistoryLimit: 5",
        "  revisionHistoryLimits: 5",
        "revisionHistoryLimits",
    ),
    "wrong type": (
        "local",
        "deploy/k8s/base/gateway.yaml",
        "            failureThreshold: 30",
        "            failureThreshold: thirty",
        "failureThreshold",
    ),
    "custom resource field of the wrong type": (
        "production",
        "deploy/k8s/overlays/production/kafka.yaml",
        "  partitions: 12",
        "  partitions: twelve",
        "'twelve' is not of type 'integer'",
    ),
    "custom resource enum": (
        "production",
        "deploy/k8s/overlays/production/kafka.yaml",
        "  roles: [controller, broker]",
        "  roles: [controller, borker]",
        "'borker' is not one of",
    ),
    "a writable root filesystem (checkov)": (
        "local",
        "deploy/k8s/base/llm.yaml",
        "            readOnlyRootFilesystem: true",
        "            readOnlyRootFilesystem: false",
        "CKV_K8S_22",
    ),
    "a container run as root (checkov)": (
        "local",
        "deploy/k8s/base/recommender.yaml",
        "        runAsNonRoot: true\n        runAsUser: 10001",
        "        runAsNonRoot: false\n        runAsUser: 0",
        "CKV_K8S_",
    ),
    "an unpinned apt install (hadolint)": (
        "local",
        "deploy/docker/gateway.Dockerfile",
        "WORKDIR /app\n",
        "RUN apt-get update && apt-get install -y curl\nWORKDIR /app\n",
        "DL3008",
    ),
    "a stale requirements file": (
        "local",
        "deploy/docker/requirements/recommender.txt",
        "qdrant-edge-py==0.9.0",
        "qdrant-edge-py==0.8.0",
        "differs from pyproject.toml",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_manifest_or_dockerfile_fails_the_check(tmp_path: Path, breakage: str) -> None:
    overlay, relative, old, new, said = BREAKAGES[breakage]
    root = copy_repo(tmp_path)
    edit(root, relative, old, new)
    checkov = needs_checkov() if "checkov" in breakage else None
    problems = k8s.check(root, [overlay], checkov, io.StringIO())
    assert problems, f"{breakage} went unnoticed"
    assert any(said in str(p) for p in problems), "\n".join(map(str, problems))


def test_an_overlay_that_does_not_render_is_a_clear_error(tmp_path: Path) -> None:
    root = copy_repo(tmp_path)
    edit(root, "deploy/k8s/overlays/local/kustomization.yaml", "  - kafka.yaml", "  - kafak.yaml")
    with pytest.raises(k8s.K8sError, match="does not render"):
        k8s.check(root, ["local"], None, io.StringIO())


DRIFTS: dict[str, Callable[[Path], None]] = {
    "a required setting left out": lambda r: edit(
        r, "deploy/k8s/base/recommender.yaml", "  ENCODER_ADDR: encoder:50051\n", ""
    ),
    "a misspelt setting": lambda r: edit(
        r, "deploy/k8s/base/llm.yaml", "  HISTORY_ITEMS:", "  HISTORY_ITEM:"
    ),
    "a probe on another port than the service listens on": lambda r: edit(
        r, "deploy/k8s/base/encoder.yaml", '  GRPC_PORT: "50051"', '  GRPC_PORT: "50052"'
    ),
    "a Service targeting a port nothing listens on": lambda r: edit(
        r,
        "deploy/k8s/base/gateway.yaml",
        "    - name: metrics\n      port: 9090\n      targetPort: metrics",
        "    - name: metrics\n      port: 9090\n      targetPort: 9091",
    ),
    "a Triton model prepare does not write": lambda r: edit(
        r,
        "deploy/k8s/components/triton/triton.yaml",
        "--load-model=text_encoder",
        "--load-model=text_encoder_v2",
    ),
    "an image whose module does not exist": lambda r: edit(
        r, "deploy/docker/trainer.Dockerfile", '"services.trainer"', '"services.trainers"'
    ),
    "a Job running a command that does not parse": lambda r: edit(
        r, "deploy/k8s/overlays/local/models-job.yaml", "--preset, offline", "--preset, offlin"
    ),
}
DRIFT_SAYS = {
    "a required setting left out": "ENCODER_ADDR has no default",
    "a misspelt setting": "HISTORY_ITEM is set but is no setting",
    "a probe on another port than the service listens on": "listens on [50052]",
    "a Service targeting a port nothing listens on": "targets 9091",
    "a Triton model prepare does not write": "text_encoder_v2",
    "an image whose module does not exist": "services.trainers, which does not exist",
    "a Job running a command that does not parse": "does not parse",
}


@pytest.mark.parametrize("drift", list(DRIFTS))
def test_the_consistency_check_catches_drift(tmp_path: Path, drift: str) -> None:
    root = copy_repo(tmp_path)
    overlay = "production" if "Triton" in drift else "local"
    assert k8s.check(root, [overlay], None, io.StringIO()) == []  # the copy is clean
    DRIFTS[drift](root)
    problems = k8s.check(root, [overlay], None, io.StringIO())
    assert any(DRIFT_SAYS[drift] in str(p) for p in problems), "\n".join(map(str, problems))


@pytest.mark.parametrize(
    "requirements", sorted(p.name for p in (ROOT / "deploy/docker/requirements").glob("*.txt"))
)
def test_each_images_install_step_resolves(requirements: str) -> None:
    """Exactly what the Dockerfile installs, resolved by pip (nothing is installed)."""
    dockerfiles = [
        p for p in (ROOT / "deploy/docker").glob("*.Dockerfile") if requirements in p.read_text()
    ]
    assert dockerfiles, f"no Dockerfile installs {requirements}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--requirement",
            str(ROOT / "deploy/docker/requirements" / requirements),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_service_has_a_cpu_image_and_the_model_services_a_gpu_one() -> None:
    names = {
        p.name.removesuffix(".Dockerfile") for p in (ROOT / "deploy/docker").glob("*.Dockerfile")
    }
    assert set(k8s.SERVICES) | {"tools"} | {f"{s}-gpu" for s in k8s.GPU_IMAGES} == names
    for service in k8s.SERVICES:
        text = (ROOT / f"deploy/docker/{service}.Dockerfile").read_text()
        assert "USER 10001:10001" in text
        # Dependencies before source: the requirements layer comes before any COPY of code.
        assert text.index("pip install") < text.index("COPY styleloop/")
    for service in k8s.GPU_IMAGES:
        text = (ROOT / f"deploy/docker/{service}-gpu.Dockerfile").read_text()
        assert "FROM nvidia/cuda:" in text and "-runtime-" in text
        assert (
            "onnxruntime-gpu"
            in (ROOT / f"deploy/docker/requirements/{service}-gpu.txt").read_text()
        )
