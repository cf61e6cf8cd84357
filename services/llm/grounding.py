"""Grounding: citations are constrained while decoding, then guarded once more.

An answer cites retrieved item cards as ``[n]``. :class:`CitationRules` knows, for one
tokenizer, which tokens touch citation syntax; :class:`CitationState` follows one answer
as it is generated. Together they decide, before every token, which tokens may come
next: outside a citation any token but a stray ``]`` or a ``[`` whose tail could not begin
a valid citation; inside one, only the digits and ``]`` that keep it a prefix of a card
number between 1 and the number of cards. An invented reference can therefore not be
generated. :func:`guard` checks the finished text all the same: anything outside the
retrieved set is dropped and counted (``llm_citations_dropped_total``, which stays 0).

No torch here beyond what the caller passes in: the masks are lists of token ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from prometheus_client import Counter

CITATION = re.compile(r"\[\s*(\d+)\s*\]")
DROPPED = Counter(
    "llm_citations_dropped_total",
    "Citations of items outside the retrieved set, removed by the final guard (stays 0).",
)


def _valid_prefix(text: str, cards: int) -> bool:
    """True when ``text`` (what follows ``[``) can still become ``n]`` for 1 <= n <= cards."""
    return any(f"{n}]".startswith(text) for n in range(1, cards + 1))


def _complete(text: str, cards: int) -> int | None:
    match = re.fullmatch(r"(\d+)\]", text)
    if match and 1 <= int(match.group(1)) <= cards:
        return int(match.group(1))
    return None


@dataclass
class CitationState:
    """Where one answer stands: outside a citation (``inside is None``) or inside one with
    ``inside`` written since its ``[``."""

    cards: int
    inside: str | None = None
    cited: int = 0  # citations completed so far

    def feed(self, piece: str) -> list[int]:
        """Advance over generated text; the card numbers of citations it completed."""
        done = []
        for char in piece:
            if self.inside is None:
                if char == "[":
                    self.inside = ""
            elif char == "]":
                number = _complete(self.inside + "]", self.cards)
                if number is not None:
                    done.append(number)
                    self.cited += 1
                self.inside = None
            elif char == "[":
                self.inside = ""
            else:
                self.inside += char
        return done


class CitationRules:
    """The tokens of one vocabulary that touch citation syntax, and what they may do."""

    def __init__(self, token_texts: Sequence[str], eos_ids: Sequence[int] = ()) -> None:
        self.texts = list(token_texts)
        self.eos_ids = list(eos_ids)
        # Tokens holding a bracket: each is checked against the state before it may come.
        self.bracketed = [
            (i, t) for i, t in enumerate(token_texts) if ("[" in t or "]" in t) and i not in eos_ids
        ]
        # Tokens that can continue an open citation: digits and a closing bracket only.
        self.pieces = [(i, t) for i, t in enumerate(token_texts) if re.fullmatch(r"\d+\]?|\]", t)]
        # Tokens that open a citation and hold nothing else ("[", " [").
        self.openers = [i for i, t in enumerate(token_texts) if t.strip() == "["]
        self._outside = lru_cache(maxsize=128)(self._banned_outside)

    def _banned_outside(self, cards: int) -> tuple[int, ...]:
        if cards < 1:  # nothing to cite: no '[' at all
            return tuple(i for i, _ in self.bracketed)
        banned = []
        for i, text in self.bracketed:
            # No stray ']' before any '['; after it, a valid prefix of a citation, or a
            # whole citation with nothing bracketed after it.
            ok = "]" not in text.split("[", 1)[0]
            if ok:
                ok = self._tail_ok(text[text.index("[") + 1 :], cards)
            if not ok:
                banned.append(i)
        return tuple(banned)

    @staticmethod
    def _tail_ok(tail: str, cards: int) -> bool:
        if "]" in tail:
            head, _, rest = tail.partition("]")
            return _complete(head + "]", cards) is not None and "[" not in rest and "]" not in rest
        return "[" not in tail and (tail == "" or _valid_prefix(tail, cards))

    def banned(self, state: CitationState) -> tuple[int, ...] | None:
        """Token ids that must not come next outside a citation; ``None`` inside one (use
        :meth:`allowed` then)."""
        if state.inside is None:
            return self._outside(state.cards)
        return None

    def allowed(self, state: CitationState) -> list[int]:
        """Inside a citation: the only token ids that may come next."""
        assert state.inside is not None
        return [
            i
            for i, text in self.pieces
            if _valid_prefix(state.inside + text, state.cards)
            or _complete(state.inside + text, state.cards) is not None
        ]


@dataclass
class Guarded:
    text: str
    cited: list[int] = field(default_factory=list)  # card numbers, first citation order
    dropped: int = 0


def guard(text: str, cards: int) -> Guarded:
    """The final check: citations of card numbers outside 1..cards are removed from the
    text and counted; the rest are listed once each, in order."""
    cited: list[int] = []
    dropped = 0

    def keep(match: re.Match[str]) -> str:
        nonlocal dropped
        number = int(match.group(1))
        if 1 <= number <= cards:
            if number not in cited:
                cited.append(number)
            return match.group(0)
        dropped += 1
        return ""

    clean = CITATION.sub(keep, text)
    if dropped:
        DROPPED.inc(dropped)
    return Guarded(clean, cited, dropped)
