"""The synthetic nation: 31 source systems' feeds with ground truth (see docs/nation.md)."""

from usmis.synth.generator import SynthSummary, generate
from usmis.synth.options import FraudRates, NoiseRates, SynthOptions

__all__ = ["FraudRates", "NoiseRates", "SynthOptions", "SynthSummary", "generate"]
