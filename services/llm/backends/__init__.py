"""Where answers are generated, behind one small interface: in-process transformers
(:mod:`services.llm.backends.local`) or an OpenAI-compatible server
(:mod:`services.llm.backends.openai`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class GenerationRequest:
    """One answer to generate."""

    messages: tuple[tuple[Role, str], ...]
    cards: int  # citations may name cards 1..cards only
    max_new_tokens: int
    temperature: float = 0.0
    adapter_id: str = ""  # "" is the base model alone


@dataclass(frozen=True)
class Finished:
    """The end of a generation."""

    reason: Literal["stop", "length", "cancelled"]
    prompt_tokens: int
    completion_tokens: int
    adapter_id: str = ""


class Backend(Protocol):
    """Generates grounded answers; citations are constrained while decoding."""

    model_id: str
    model_version: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def check(self, request: GenerationRequest) -> None:
        """Raise ``InvalidArgument`` (``PROMPT_TOO_LONG``) for a prompt over the budget."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finished]:
        """Text pieces as they are decoded, then one :class:`Finished`. Closing the
        iterator early cancels the generation and frees its slot."""
        ...
