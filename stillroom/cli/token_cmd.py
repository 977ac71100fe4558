"""`stillroom token`: the local token, for clients to pass as their API key."""

from __future__ import annotations

import sys

from stillroom.paths import Paths


def token() -> None:
    """Print the local token: clients pass it as their API key (Authorization: Bearer, or
    x-api-key) where stillroom holds the provider key, and for the /stillroom/ routes.

    It lives in a private file in the config folder, created on first use; the gateway of
    `stillroom serve` and `stillroom daemon` reads the same file.
    """
    from stillroom.service.gateway.safety import load_token

    paths = Paths.resolve().ensure()
    sys.stdout.write(load_token(paths.token_file) + "\n")
