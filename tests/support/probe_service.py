"""A small service built with the runtime, for testing the runtime itself.

It serves EncoderService with behaviour chosen by the request text:
``slow:<seconds>`` sleeps then answers, ``missing`` raises a domain NotFound,
``boom`` raises an unexpected error. Run as a process for shutdown tests:
``python -m tests.support.probe_service`` (settings from the environment).
"""

from __future__ import annotations

import asyncio

import grpc

from styleloop.runtime.errors import NotFound
from styleloop.runtime.logging import configure
from styleloop.runtime.server import run, serve
from styleloop.runtime.settings import ServiceSettings, load_settings
from styleloop.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc

SERVICE_NAME = encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name


class ProbeEncoder(encoder_pb2_grpc.EncoderServiceServicer):
    async def EmbedTexts(self, request, context):  # noqa: N802 - generated name
        text = request.texts[0] if request.texts else ""
        if text.startswith("slow:"):
            await asyncio.sleep(float(text.split(":", 1)[1]))
        elif text == "missing":
            raise NotFound(
                "no item with id 'missing'", reason="ITEM_NOT_FOUND", metadata={"id": "x"}
            )
        elif text == "boom":
            raise RuntimeError("secret internal detail")
        return encoder_pb2.EmbedTextsResponse(
            model_id="probe",
            results=[
                encoder_pb2.EmbeddingResult(embedding=common_pb2.Embedding(values=[1.0]))
                for _ in request.texts
            ],
        )


def register(server: grpc.aio.Server) -> None:
    encoder_pb2_grpc.add_EncoderServiceServicer_to_server(ProbeEncoder(), server)


class ProbeSettings(ServiceSettings):
    service_name: str = "probe"
    ready_delay_s: float = 0.0


async def main() -> None:
    settings = load_settings(ProbeSettings)
    configure(settings.service_name, settings.log_level)

    async def on_ready() -> None:
        await asyncio.sleep(settings.ready_delay_s)

    await serve(settings, register, [SERVICE_NAME], on_ready)


if __name__ == "__main__":
    run(main)
