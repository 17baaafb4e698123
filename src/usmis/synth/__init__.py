"""The synthetic nation: 31 source systems' feeds with ground truth (see docs/nation.md).

The generator (and mimesis, ~0.15 s of imports) loads on first use: every ``usmis``
command imports this package for its CLI, an ingest worker's start-up included.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from usmis.synth.generator import SynthSummary, generate
    from usmis.synth.options import FraudRates, NoiseRates, SynthOptions

__all__ = ["FraudRates", "NoiseRates", "SynthOptions", "SynthSummary", "generate"]
_HOME = {"SynthSummary": "generator", "generate": "generator", "FraudRates": "options",
         "NoiseRates": "options", "SynthOptions": "options"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"usmis.synth.{_HOME[name]}"), name)
