"""Schemathesis hooks for the gateway's contract run (``SCHEMATHESIS_HOOKS``).

JSON Schema cannot say that a ``page_token`` must be one the server issued, that
``min_price`` may not exceed ``max_price``, that an upload's bytes must decode as the
photo its part claims to be, or that a chat's last message is the shopper's and not
blank. For exactly those rules the gateway answers 400 with a documented ``reason``; this
check is the built-in ``positive_data_acceptance`` with those answers (and only those)
accepted. Any other 400 to schema-valid data still fails.
"""

from __future__ import annotations

import json

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

# The reasons whose rule lies beyond the schema; each is in the OpenAPI 400 description.
SEMANTIC_REASONS = frozenset(
    {
        "BAD_PAGE_TOKEN",  # a token this server did not issue for this call
        "BAD_FILTER",  # min_price above max_price
        "IMAGE_UNREADABLE",  # bytes that are no JPEG, PNG or WebP
        "IMAGE_CORRUPT",  # a truncated or damaged image
        "IMAGE_FORMAT_UNSUPPORTED",  # an image in another format than its part says
        "IMAGE_TOO_MANY_PIXELS",  # a decompression bomb
        "IMAGE_EMPTY",  # an empty part (minLength cannot bound binary parts for every tool)
        "EMPTY_MESSAGE",  # a chat whose last message is blank
        "LAST_NOT_USER",  # a chat whose last message is not the shopper's
        "PROMPT_TOO_LONG",  # a conversation over the model's prompt budget
    }
)


@schemathesis.check
def positive_data_acceptance_beyond_the_schema(ctx, response, case):  # type: ignore[no-untyped-def]
    if response.status_code == 400:
        try:
            reason = json.loads(response.content).get("reason")
        except (ValueError, AttributeError):
            reason = None
        if reason in SEMANTIC_REASONS:
            return None
    return positive_data_acceptance(ctx, response, case)
