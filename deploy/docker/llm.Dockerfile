# syntax=docker/dockerfile:1
# StyleLoop llm: grounded chat with LoRA adapters. CPU image.
# Build from the repository root:
#   docker build -f deploy/docker/llm.Dockerfile -t styleloop/llm:0.1.0 .
# No model weights inside: MODELS_DIR points at the volume `styleloop models prepare` filled.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    PYTHONPATH=/app \
    HOME=/tmp

RUN groupadd --system --gid 10001 styleloop \
 && useradd --system --uid 10001 --gid styleloop --no-create-home --shell /usr/sbin/nologin styleloop

WORKDIR /app
# Dependencies first: this layer changes only when pyproject.toml's do
# (`styleloop k8s requirements` writes the file; `make k8s` checks it is current).
COPY deploy/docker/requirements/llm.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --requirement /tmp/requirements.txt
COPY styleloop/ styleloop/
COPY services/__init__.py services/__init__.py
COPY services/llm/ services/llm/

USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["python", "-m", "services.llm"]
