"""The one error type of a bad configuration, shared by every stage that checks a setting.

`ConfigError` is raised by study validation (`config.load_config`), by the settings each
stage re-reads (`protocol.MeasureConfigError`, `variants.QuantiseError`,
`energy.EnergySourceError`, `hardware.HardwareTableError`, `flops.FlopsConfigError`) and by
the memory preflight: each is a subclass, so the CLI and the Snakefile print one line for any
of them. Its message is that line: the field, what is wrong, and the fix. No imports, so any
module may raise it without an import circle.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem, described in one line naming the field and the fix."""
