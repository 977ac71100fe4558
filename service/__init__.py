"""Serving and acting: automation hooks now; the runtime and HTTP API build on them."""
