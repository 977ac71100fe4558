"""Estimated spend on a model provider, from the price table in the config."""

from __future__ import annotations

from collections.abc import Mapping

from stillroom.config import Price


def price_of(prices: Mapping[str, Price], model: str) -> Price | None:
    """The price of a model: its exact name, else the longest name it starts with (so
    "gpt-4o-mini-2024-07-18" is priced as "gpt-4o-mini"), else None (unknown)."""
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(name)]
    return prices[max(matches, key=len)] if matches else None


def cost_usd(
    prices: Mapping[str, Price], model: str, input_tokens: int, output_tokens: int
) -> float | None:
    """US dollars for one call, or None when the model has no price."""
    price = price_of(prices, model)
    if price is None:
        return None
    return (input_tokens * price.input + output_tokens * price.output) / 1_000_000


def estimate_tokens(text: str) -> int:
    """A provider-neutral token estimate (about 4 characters a token in English)."""
    return max(1, (len(text) + 3) // 4) if text else 0
