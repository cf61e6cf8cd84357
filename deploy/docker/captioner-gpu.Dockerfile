# syntax=docker/dockerfile:1
# StyleLoop captioner on a GPU: attribute captions of product photos. CUDA runtime base, onnxruntime-gpu and CUDA
# torch; run on the GPU pool (deploy/k8s/components/captioner-gpu).
# Build from the repository root:
#   docker build -f deploy/docker/captioner-gpu.Dockerfile -t styleloop/captioner-gpu:0.1.0 .
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cu128 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    HOME=/tmp

# Python 3.11 (the project's version) from the deadsnakes PPA; apt packages follow the
# pinned base image's release, so they are not pinned one by one.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install --yes --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository --yes ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install --yes --no-install-recommends python3.11 python3.11-venv \
 && apt-get purge --yes --auto-remove software-properties-common gpg-agent \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv \
 && groupadd --system --gid 10001 styleloop \
 && useradd --system --uid 10001 --gid styleloop --no-create-home --shell /usr/sbin/nologin styleloop

WORKDIR /app
COPY deploy/docker/requirements/captioner-gpu.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --requirement /tmp/requirements.txt
COPY styleloop/ styleloop/
COPY services/__init__.py services/__init__.py
COPY services/captioner/ services/captioner/

USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["python", "-m", "services.captioner"]
