"""The OpenAI-compatible backend against a real server: `transformers serve` on the tiny
model, started on 127.0.0.1 and stopped with the test (never a mock)."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.llm.backends import Finished, GenerationRequest
from services.llm.backends.openai import OpenAIBackend
from services.llm.cards import CardItem, build_messages
from services.llm.config import LlmSettings
from services.llm.grounding import CITATION, CitationState
from styleloop.broker import wait_listening
from styleloop.processes import spawn, stop
from tests.conftest import free_ports

QUESTIONS = ("puma tee", "a red skirt", "shoes for men", "what goes with a white shirt", "bags")


@pytest.fixture(scope="module")
def server(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_ports(1)[0]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cli = Path(sys.executable).with_name("transformers")
    with log.open("w") as out:
        process = spawn(
            [str(cli), "serve", str(tiny_models / "llm"), "--host", "127.0.0.1"]
            + ["--port", str(port), "--device", "cpu"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:  # uvicorn listens once the app has started
            wait_listening(process, port, 120, "transformers serve")
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{log.read_text()}")
        with urllib.request.urlopen(f"{url}/health", timeout=10) as reply:
            assert reply.status == 200, log.read_text()
        yield url
    finally:
        stop(process, 20)


@pytest.fixture
async def backend(server: str, tiny_models: Path, tmp_path: Path):
    settings = LlmSettings(
        models_dir=tiny_models,
        recommender_addr="127.0.0.1:1",
        backend="openai",
        openai_base_url=f"{server}/v1",
        openai_model=str(tiny_models / "llm"),
        openai_dialect="transformers",
        adapters_dir=tmp_path,
    )
    b = OpenAIBackend(settings, tiny_models / "llm")
    await b.start()
    yield b
    await b.stop()


def request(question: str, cards: int = 3, tokens: int = 24) -> GenerationRequest:
    items = [CardItem(str(n), title=f"{question} {n}", brand="Puma") for n in range(cards)]
    return GenerationRequest(build_messages(question, items), cards, tokens)


async def test_the_server_chooses_only_among_the_allowed_citation_tokens(backend: OpenAIBackend):
    rules = backend.rules
    assert rules is not None
    state = CitationState(3, inside="")  # just after '['
    allowed = rules.allowed(state)
    assert {rules.texts[i] for i in allowed} == {"1", "2", "3"}
    free, constrained = set(), set()
    for question in QUESTIONS:
        prompt = question + " ["
        text, _ = await backend._complete(backend._body(request(question), prompt, 1))
        free.add(text)
        text, _ = await backend._complete(backend._body(request(question), prompt, 1, only=allowed))
        constrained.add(text)
    assert constrained <= {"1", "2", "3"}, constrained
    assert not free <= {"1", "2", "3"}, free  # without the bias the model says other things


@pytest.mark.parametrize("reports_usage", [True, False], ids=["usage", "no-usage"])
async def test_answers_stream_and_cite_only_retrieved_cards(
    backend: OpenAIBackend, reports_usage: bool, monkeypatch: pytest.MonkeyPatch
):
    if not reports_usage:  # a server that ignores stream_options: the text is re-counted
        body = backend._body

        def without_usage(*args, **kwargs):
            out = body(*args, **kwargs)
            out.pop("stream_options", None)
            return out

        monkeypatch.setattr(backend, "_body", without_usage)
    for question in QUESTIONS[:3]:
        pieces: list[str] = []
        finished = None
        async for piece in backend.generate(request(question)):
            if isinstance(piece, Finished):
                finished = piece
            else:
                pieces.append(piece)
        assert finished is not None and finished.prompt_tokens > 0
        text = "".join(pieces)
        cited = [int(n) for n in CITATION.findall(text)]
        assert cited and all(1 <= n <= 3 for n in cited), text  # it owes one citation
        # Every '[' opens a valid citation (the last may be cut short by the token limit).
        assert "[" not in re.sub(r"\[\d*$", "", CITATION.sub("", text)), text
        assert finished.completion_tokens <= 24


async def test_a_closed_stream_stops_asking_the_server(backend: OpenAIBackend):
    stream = backend.generate(request("puma tee", tokens=200))
    first = await anext(stream)
    assert isinstance(first, str)
    await stream.aclose()  # no exception, nothing left running
