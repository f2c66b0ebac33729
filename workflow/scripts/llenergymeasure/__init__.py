"""llenergymeasure: what LLM inference really costs, per implementation choice.

The library behind the Snakemake workflow: model materialisation, quantised variants,
backends, the measurement protocol, energy meters, exact analytical FLOPs,
aggregation, analyses and figures. See docs/ARCHITECTURE.md for the stage contracts.
"""

__version__ = "0.1.0"
