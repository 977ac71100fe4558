"""The OpenAI-compatible gateway: clients point their base_url here; each call is forwarded
to the provider (or answered by a proven student) and recorded as an llm.call event."""

from stillroom.service.gateway.answerer import Answerer, Decision, LocalReply
from stillroom.service.gateway.app import create_app
from stillroom.service.gateway.safety import load_token
from stillroom.service.gateway.server import GatewayThread, base_url, bind, freeze_heap

__all__ = [
    "Answerer",
    "Decision",
    "GatewayThread",
    "LocalReply",
    "base_url",
    "bind",
    "create_app",
    "freeze_heap",
    "load_token",
]
