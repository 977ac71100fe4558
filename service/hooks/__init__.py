"""Automations: deciders pick an action for an event; the executor journals and runs it."""
