"""A local Triton Inference Server for the encoder's model repository.

Production runs the official Triton image with its ONNX Runtime backend on the
repository that ``styleloop models prepare`` writes (``DIR/triton``). Here, with no
Docker, the ``nvidia-pytriton`` wheel provides a real ``tritonserver`` (Python backend
only): this script binds the same models — names, tensors, ``max_batch_size`` and
dynamic batching taken from the manifest — and runs the same ONNX files with ONNX
Runtime inside Triton. Triton's own dynamic batcher gathers the requests.

It runs in its own virtualenv (``make triton-venv``: numpy < 2, protobuf < 7) and so
imports nothing from StyleLoop:

    .venv-triton/bin/python services/encoder/triton_server.py --models-dir .models/tiny \\
        --grpc-port 8001 --http-port 8000 --metrics-port 8002

It stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("triton_server")

DTYPES = {"float32": np.float32, "int64": np.int64}


def ensure_libpython() -> None:
    """Triton's Python backend stub must load this interpreter's libpython, not the
    system's; re-exec with LD_LIBRARY_PATH fixed when it is not."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir and not current.startswith(libdir):
        env = {**os.environ, "LD_LIBRARY_PATH": f"{libdir}:{current}".rstrip(":")}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def tensors(specs: list[dict[str, Any]]) -> list[Any]:
    from pytriton.model_config import Tensor

    return [
        Tensor(
            name=spec["name"],
            dtype=DTYPES[spec["dtype"]],
            shape=tuple(d if isinstance(d, int) else -1 for d in spec["shape"][1:]),
        )
        for spec in specs
    ]


def make_infer(session: Any, input_names: list[str]) -> Any:
    from pytriton.decorators import batch

    @batch  # type: ignore[untyped-decorator]
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {name: inputs[name] for name in input_names}
        return {"embeddings": session.run(None, feeds)[0]}

    return infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    args = parser.parse_args()
    ensure_libpython()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import onnxruntime as ort
    from pytriton.model_config import DynamicBatcher, ModelConfig
    from pytriton.triton import Triton, TritonConfig

    manifest = json.loads((args.models_dir / "manifest.json").read_text())
    encoder = manifest["encoder"]
    config = TritonConfig(
        grpc_address="127.0.0.1",
        http_address="127.0.0.1",
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
    )
    with Triton(config=config) as triton:
        for tower in ("image", "text"):
            spec = encoder[tower]
            session = ort.InferenceSession(
                str(args.models_dir / spec["onnx"]), providers=["CPUExecutionProvider"]
            )
            triton.bind(
                model_name=spec["triton_model"],
                infer_func=make_infer(session, [t["name"] for t in spec["inputs"]]),
                inputs=tensors(spec["inputs"]),
                outputs=tensors(spec["outputs"]),
                config=ModelConfig(
                    max_batch_size=args.max_batch_size,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
                ),
                strict=True,
            )
        signal.signal(signal.SIGTERM, lambda *_: triton.stop())
        log.info("serving %s on grpc port %d", encoder["model_id"], args.grpc_port)
        triton.serve()


if __name__ == "__main__":
    main()
