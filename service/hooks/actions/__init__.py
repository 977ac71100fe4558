"""The file actions, one module each; REGISTRY maps a config `kind` to its class."""

from __future__ import annotations

from stillroom.errors import ActionError
from stillroom.service.hooks.actions.base import Action, Plan, checkpoint
from stillroom.service.hooks.actions.command import Command
from stillroom.service.hooks.actions.convert_image import ConvertImage
from stillroom.service.hooks.actions.copy import Copy
from stillroom.service.hooks.actions.move import Move
from stillroom.service.hooks.actions.rename import Rename

REGISTRY: dict[str, type[Action]] = {
    cls.kind: cls for cls in (Move, Rename, Copy, ConvertImage, Command)
}


def action_for(kind: str) -> Action:
    """An instance of the action class registered for `kind`."""
    try:
        return REGISTRY[kind]()
    except KeyError:
        raise ActionError(f"unknown action kind {kind!r}") from None


__all__ = ["REGISTRY", "Action", "Plan", "action_for", "checkpoint"]
