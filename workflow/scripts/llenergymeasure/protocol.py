"""The settings of one measure job, checked and resolved for its device before any work.

Everything here is cheap: a bad value is one line naming the field (`MeasureConfigError`,
or `energy.EnergySourceError` for a malformed LLEM_CPU_TDP_W) before a model loads.
Defaults come from `defaults.DEFAULTS`, read from the config schema (the one place they live).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import energy
from .defaults import DEFAULTS, cuda_visible, resolve_device
from .errors import ConfigError

PREFILL_WINDOW_CHOICES = ("always", "for-energy")


class MeasureConfigError(ConfigError):
    """A setting the protocol needs is missing or unusable (one line naming the field)."""


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The settings of one job, resolved for its device."""

    device: str
    batch_sizes: tuple[int, ...]
    prompt_tokens: tuple[int, ...]
    new_tokens: int
    seed: int
    trials: int
    warmup_runs: int
    warmup_min_s: float
    warmup_cv_threshold: float | None
    warmup_max_s: float
    min_window_s: float
    idle_baseline_s: float
    energy_source: str
    # always: a prefill window per trial; for-energy: only where it adds what the full window
    # cannot give (an energy split, or TTFT on a backend that does not stream in-window)
    prefill_window: str = "always"
    # shapes whose batch x prompt tokens exceed it are not measured (None: the whole grid)
    max_batch_tokens: int | None = None

    def shapes(self) -> list[tuple[int, int]]:
        """(batch size, prompt tokens) measured: the grid, less shapes over `max_batch_tokens`."""
        grid = [(b, p) for b in self.batch_sizes for p in self.prompt_tokens]
        return [(b, p) for b, p in grid if self.max_batch_tokens is None or b * p <= self.max_batch_tokens]


def _number(section: dict[str, Any], key: str, field: str, minimum: float = 0.0) -> float:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise MeasureConfigError(f"{field}: expected a number >= {minimum}, got {value!r}")
    return float(value)


def _per_device(section: dict[str, Any], key: str, device: str, allow_number: bool = False) -> float:
    value = section.get(key)
    if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(section, key, f"measurement.{key}")  # one figure for every device
    if not isinstance(value, dict) or device not in value:
        raise MeasureConfigError(
            f"measurement.{key}: give seconds per device, e.g. {{cuda: 5.0, cpu: 0.25}} (missing {device!r})"
        )
    return _number(value, device, f"measurement.{key}.{device}")


def _int_list(section: dict[str, Any], key: str, minimum: int) -> tuple[int, ...]:
    values = section.get(key)
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values)
    ):
        raise MeasureConfigError(f"workload.{key}: expected a non-empty list of integers >= {minimum}, got {values!r}")
    return tuple(values)


def resolve_protocol(config: dict[str, Any]) -> Protocol:
    """Check and resolve the workload and measurement settings before any expensive work."""
    device = resolve_device(config)
    if device not in ("cpu", "cuda"):
        raise MeasureConfigError(f"device: {device!r} is not a device; allowed: auto, cpu, cuda")
    if device == "cuda" and not cuda_visible():
        raise MeasureConfigError("device: 'cuda' requested but no NVIDIA GPU is visible; use device auto or cpu")
    workload = config.get("workload")
    measurement = config.get("measurement")
    if not isinstance(workload, dict):
        raise MeasureConfigError("workload: missing; give batch_sizes, prompt_tokens and new_tokens")
    if not isinstance(measurement, dict):
        raise MeasureConfigError("measurement: missing; give at least trials")
    measurement = {**DEFAULTS["measurement"], **measurement}  # the one place defaults live
    new_tokens = workload.get("new_tokens")
    if not isinstance(new_tokens, int) or isinstance(new_tokens, bool) or new_tokens < 2:
        raise MeasureConfigError(
            f"workload.new_tokens: expected an integer >= 2 (decode needs a second token), got {new_tokens!r}"
        )
    trials = measurement.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise MeasureConfigError(f"measurement.trials: expected an integer >= 1, got {trials!r}")
    warmup_runs = measurement.get("warmup_runs")
    if not isinstance(warmup_runs, int) or isinstance(warmup_runs, bool) or warmup_runs < 0:
        raise MeasureConfigError(f"measurement.warmup_runs: expected an integer >= 0, got {warmup_runs!r}")
    threshold = measurement.get("warmup_cv_threshold")
    if threshold is not None:
        threshold = _number(measurement, "warmup_cv_threshold", "measurement.warmup_cv_threshold", 1e-9)
    source = measurement.get("energy_source")
    if source not in energy.PREFER_CHOICES:
        raise MeasureConfigError(
            f"measurement.energy_source: {source!r} is not a source; allowed: {', '.join(energy.PREFER_CHOICES)}"
        )
    prefill_window = measurement.get("prefill_window")
    if prefill_window not in PREFILL_WINDOW_CHOICES:
        raise MeasureConfigError(
            f"measurement.prefill_window: {prefill_window!r}; allowed: {', '.join(PREFILL_WINDOW_CHOICES)}"
        )
    batch_sizes, prompt_tokens = _int_list(workload, "batch_sizes", 1), _int_list(workload, "prompt_tokens", 1)
    max_batch_tokens = workload.get("max_batch_tokens")
    if max_batch_tokens is not None:
        smallest = min(batch_sizes) * min(prompt_tokens)
        if not isinstance(max_batch_tokens, int) or isinstance(max_batch_tokens, bool) or max_batch_tokens < smallest:
            raise MeasureConfigError(
                f"workload.max_batch_tokens: {max_batch_tokens!r} leaves no shape to measure (the smallest "
                f"batch x prompt is {smallest}); raise it to at least {smallest} or remove it"
            )
    energy.stated_cpu_power()  # a malformed LLEM_CPU_TDP_W is refused here, whatever the source
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise MeasureConfigError(f"seed: expected an integer >= 0, got {seed!r}")
    return Protocol(
        device=device,
        batch_sizes=batch_sizes,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        seed=seed,
        trials=trials,
        warmup_runs=warmup_runs,
        warmup_min_s=_per_device(measurement, "warmup_min_s", device),
        warmup_cv_threshold=threshold,
        warmup_max_s=_per_device(measurement, "warmup_max_s", device, allow_number=True),
        min_window_s=_per_device(measurement, "min_window_s", device),
        idle_baseline_s=_per_device(measurement, "idle_baseline_s", device),
        energy_source=source,
        prefill_window=prefill_window,
        max_batch_tokens=max_batch_tokens,
    )


__all__ = ["PREFILL_WINDOW_CHOICES", "MeasureConfigError", "Protocol", "resolve_protocol"]
