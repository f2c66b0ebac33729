"""The serving scenario's settings: defaults, checks beyond the schema, and its jobs.

Checked before any job like the rest of the config, each failure one line naming the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..defaults import DEFAULTS as ALL_DEFAULTS

SERVING_BACKENDS = ("vllm",)  # backends with a server the scenario can drive

DEFAULTS: dict[str, Any] = ALL_DEFAULTS["serving"]  # the schema states them (read once, in defaults)


def serving_enabled(config: dict[str, Any]) -> bool:
    return "serving" in config.get("scenarios", ["offline"])


def serving_jobs(config: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(model, quant, backend) of every serving job: each variant listed under a serving backend."""
    if not serving_enabled(config):
        return
    for model, entry in config["models"].items():
        for backend, quants in entry["backends"].items():
            if backend in SERVING_BACKENDS:
                for quant in quants:
                    yield model, quant, backend


def longest_length(spec: dict[str, Any]) -> int:
    return int(spec["value"] if spec["distribution"] == "fixed" else spec["max"])


def check_serving(config: dict[str, Any], positions: dict[str, int | None], error: type[Exception]) -> None:
    """Raise `error` (one line) on a serving section that cannot run; `positions`: model -> max positions."""
    if not serving_enabled(config):
        return
    serving = config["serving"]
    executor = ((config.get("backend_settings") or {}).get("vllm") or {}).get("server_executor", "mp")
    if executor not in ("mp", "uni"):
        raise error(
            f"backend_settings.vllm.server_executor: {executor!r} is not allowed; allowed: mp (vLLM's default), uni"
        )
    if not any(True for _ in serving_jobs(config)):
        raise error(
            f"scenarios: serving needs a model with a serving backend ({', '.join(SERVING_BACKENDS)}) "
            "in models.<name>.backends; add one or remove serving"
        )
    key = "rates" if serving["arrival"] == "poisson" else "concurrency"
    if not serving.get(key):
        raise error(
            f"serving.{key}: required for serving.arrival {serving['arrival']!r}; give a list, e.g. "
            + ("rates: [1.0, 4.0]" if key == "rates" else "concurrency: [1, 4]")
        )
    other = "concurrency" if key == "rates" else "rates"
    if serving.get(other):
        raise error(
            f"serving.{other}: not used with serving.arrival {serving['arrival']!r}; remove it or change arrival"
        )
    for name in ("prompt_tokens", "output_tokens"):
        spec = serving[name]
        if spec["distribution"] == "uniform" and spec["min"] > spec["max"]:
            raise error(f"serving.{name}: min {spec['min']} is above max {spec['max']}")
    longest = longest_length(serving["prompt_tokens"]) + longest_length(serving["output_tokens"])
    for model, _, _ in serving_jobs(config):
        limit = positions.get(model)
        if limit is not None and longest > limit:
            raise error(
                f"serving: the longest prompt + output ({longest} tokens) exceeds models.{model}'s "
                f"{limit} positions; shorten serving.prompt_tokens or serving.output_tokens"
            )
