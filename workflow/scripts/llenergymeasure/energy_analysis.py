"""Energy in the analyses: which joules may enter, the quantisation effect, prefill/decode shares.

* Only **sensor energy** enters an analysis or figure: a row whose ``energy_is_estimate`` is
  false and whose ``energy_source`` names a sensor (not ``unavailable``, not an
  ``estimate-*``). Every other row's energy numbers are blanked by `sensor_energy_only`
  before any analysis sees them, unless the study opts in with
  ``analysis.use_estimated_energy: true``. A table without the provenance columns is not
  known to hold sensor energy and is treated as holding none.
* The **quantisation effect** of a variant is its energy per output token over that of the
  unquantised variant of the same model on the same backend, platform and workload
  (`BASELINE_QUANTS`: ``gguf-f16`` for llama.cpp, ``none-float32`` for the PyTorch-like
  backends); never over another backend, which would fold the backend into "quantisation".
* Intervals are order-statistic intervals of medians (`intervals.py`), over trials, or over
  replicate medians where a configuration has several replicates.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from . import intervals
from .ranking import frame, usable
from .stats import CONFIG_KEYS, WORKLOAD_KEYS, replicates_of, require_columns

SENSORLESS_SOURCES = frozenset({"unavailable", "", "none"})
PROVENANCE_COLUMNS = frozenset({"energy_source", "energy_is_estimate", "energy_per_device_json"})
# Unquantised variant of each backend, in order of preference; other backends use DEFAULT.
BASELINE_QUANTS: dict[str, tuple[str, ...]] = {"llamacpp": ("gguf-f16", "gguf-f32")}
DEFAULT_BASELINE_QUANTS: tuple[str, ...] = ("none-float32", "none-float16", "none-bfloat16")

COLUMNS: dict[str, list[str]] = {
    "quantisation_energy": [
        "platform_id",
        "model",
        "backend",
        "quant",
        *WORKLOAD_KEYS,
        "baseline_quant",
        "baseline_backend",
        "energy_ratio",
        "ci_low",
        "ci_high",
        "ci_coverage",
        "ci_method",
        "energy_is_estimate",
    ],
    "energy_phase_shares": [
        *CONFIG_KEYS,
        "n_trials",
        "energy_prefill_j_median",
        "energy_decode_j_median",
        "prefill_share_median",
        "prefill_share_ci_low",
        "prefill_share_ci_high",
        "prefill_share_ci_coverage",
        "ci_method",
        "decode_share_median",
        "energy_is_estimate",
    ],
}


def has_sensor_energy(table: pd.DataFrame) -> np.ndarray:
    """Whether each row's energy was measured by a sensor."""
    if "energy_source" not in table.columns or "energy_is_estimate" not in table.columns:
        return np.zeros(len(table), dtype=bool)
    source = table["energy_source"].astype(object)
    sensor = source.map(lambda s: isinstance(s, str) and s not in SENSORLESS_SOURCES and not s.startswith("estimate"))
    measured = (
        table["energy_is_estimate"].astype(object).map(lambda v: v is not None and not pd.isna(v) and not bool(v))
    )
    return (sensor & measured).to_numpy(dtype=bool)


def energy_columns(table: pd.DataFrame) -> list[str]:
    """The energy numbers of a per-trial or summary table (not their provenance)."""
    return [c for c in table.columns if c.startswith("energy_") and c not in PROVENANCE_COLUMNS]


def sensor_energy_only(table: pd.DataFrame, use_estimated: bool = False) -> pd.DataFrame:
    """`table` with the energy numbers of every row without sensor energy emptied (a copy);
    unchanged when `use_estimated`."""
    if use_estimated:
        return table
    blank = ~has_sensor_energy(table)
    if not blank.any():
        return table
    out = table.copy()
    for column in energy_columns(out):
        out[column] = pd.to_numeric(out[column], errors="coerce").astype(float).mask(blank)
    return out


def sensorless_platforms(table: pd.DataFrame) -> dict[str, str]:
    """Platform -> its energy sources, for every platform none of whose rows has sensor energy."""
    sensor = pd.Series(has_sensor_energy(table), index=table.index)
    out = {}
    for platform, rows in table.groupby("platform_id", sort=True):
        if not sensor[rows.index].any():
            sources = rows["energy_source"].dropna().astype(str).unique() if "energy_source" in rows else []
            out[str(platform)] = ", ".join(sorted(sources)) or "no energy source recorded"
    return out


def unit_values(measurements: pd.DataFrame, column: str) -> dict[tuple, tuple[np.ndarray, str]]:
    """Per configuration key: the values an interval is taken over, and their kind: the
    successful trials' finite values, or each replicate's median where there are several."""
    ok = measurements[(measurements["status"].astype(object) == "ok").to_numpy(dtype=bool)]
    ok = ok.assign(_replicate=replicates_of(ok), _value=pd.to_numeric(ok[column], errors="coerce").astype(float))
    out = {}
    for key, group in ok.groupby(CONFIG_KEYS, sort=False):
        finite = group[np.isfinite(group["_value"])]
        if finite["_replicate"].nunique() >= 2:
            out[key] = (finite.groupby("_replicate")["_value"].median().to_numpy(float), intervals.MEDIAN_REPLICATES)
        else:
            out[key] = (finite["_value"].to_numpy(float), intervals.MEDIAN_TRIALS)
    return out


def baseline_quant(summary_keys: set[tuple], config: Mapping) -> str | None:
    """The unquantised variant measured beside `config` (same platform, model, backend and
    workload), or None. `summary_keys` holds every measured `CONFIG_KEYS` tuple."""
    for quant in BASELINE_QUANTS.get(config["backend"], DEFAULT_BASELINE_QUANTS):
        key = tuple(quant if k == "quant" else config[k] for k in CONFIG_KEYS)
        if key in summary_keys:
            return quant
    return None


def quantisation_energy_effect(measurements: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Energy per output token of every variant over its backend's unquantised variant of the
    same model (`baseline_quant`) at the same platform and workload, with an interval of the
    ratio of medians. Pairs without energy on either side are left out."""
    require_columns(measurements, [*CONFIG_KEYS, "status", "energy_j_per_output_token"], "measurements")
    units = unit_values(measurements, "energy_j_per_output_token")
    configs = usable(summary)
    keys = {tuple(row[k] for k in CONFIG_KEYS) for _, row in configs.iterrows()}
    rows: list[dict] = []
    for _, config in configs.iterrows():
        base = baseline_quant(keys, config)
        if base is None or base == config["quant"]:
            continue
        key = tuple(config[k] for k in CONFIG_KEYS)
        base_key = tuple(base if k == "quant" else config[k] for k in CONFIG_KEYS)
        if key not in units or base_key not in units:
            continue
        (top, kind), (bottom, base_kind) = units[key], units[base_key]
        ratio, low, high, coverage = intervals.ratio_of_medians(top, bottom)
        if not np.isfinite(ratio):
            continue  # no energy on one side (source unavailable): nothing to compare
        rows.append(
            {
                **{k: config[k] for k in ("platform_id", "model", "backend", "quant", *WORKLOAD_KEYS)},
                "baseline_quant": base,
                "baseline_backend": config["backend"],
                "energy_ratio": ratio,
                "ci_low": low,
                "ci_high": high,
                "ci_coverage": coverage,
                "ci_method": f"{intervals.RATIO_OF_INTERVALS}({kind}/{base_kind})" if np.isfinite(low) else None,
                "energy_is_estimate": config.get("energy_is_estimate"),
            }
        )
    return frame(COLUMNS["quantisation_energy"], rows)


def energy_phase_shares(measurements: pd.DataFrame) -> pd.DataFrame:
    """Per configuration, the share of one generate call's energy spent in prefill (median of
    prefill / (prefill + decode) over trials or replicate medians, with its interval) and in
    decode. Trials without both phases measured are left out; shares are not clipped to
    [0, 1], so noise that makes a phase negative stays visible. A table without phase
    energies gives an empty table."""
    if not {"energy_prefill_j", "energy_decode_j"} <= set(measurements.columns):
        return frame(COLUMNS["energy_phase_shares"], [])
    require_columns(measurements, [*CONFIG_KEYS, "status"], "measurements")
    prefill = pd.to_numeric(measurements["energy_prefill_j"], errors="coerce").astype(float)
    decode = pd.to_numeric(measurements["energy_decode_j"], errors="coerce").astype(float)
    both = prefill.notna() & decode.notna() & ((prefill + decode) > 0)
    table = measurements.assign(
        _share=(prefill / (prefill + decode)).where(both), _prefill=prefill.where(both), _decode=decode.where(both)
    )
    shares, prefills, decodes = (unit_values(table, c) for c in ("_share", "_prefill", "_decode"))
    estimate = (
        measurements.groupby(CONFIG_KEYS, sort=False)["energy_is_estimate"].first().to_dict()
        if "energy_is_estimate" in measurements.columns
        else {}
    )
    ok = (table["status"].astype(object) == "ok").to_numpy(dtype=bool)
    counts = table[ok & both.to_numpy(dtype=bool)].groupby(CONFIG_KEYS, sort=False).size().to_dict()
    rows: list[dict] = []
    for key in sorted(shares, key=lambda k: tuple(map(str, k))):
        share, kind = shares[key]
        if share.size == 0:
            continue
        low, high, coverage = intervals.median_interval(share)
        median = float(np.median(share))
        flag = estimate.get(key)
        rows.append(
            {
                **dict(zip(CONFIG_KEYS, key, strict=True)),
                "n_trials": int(counts.get(key, 0)),
                "energy_prefill_j_median": float(np.median(prefills[key][0])),
                "energy_decode_j_median": float(np.median(decodes[key][0])),
                "prefill_share_median": median,
                "prefill_share_ci_low": low,
                "prefill_share_ci_high": high,
                "prefill_share_ci_coverage": coverage,
                "ci_method": kind if np.isfinite(low) else None,
                "decode_share_median": 1.0 - median,
                "energy_is_estimate": None if flag is None or pd.isna(flag) else bool(flag),
            }
        )
    return frame(COLUMNS["energy_phase_shares"], rows)


def study_energy(data: Mapping[str, object]) -> tuple[pd.DataFrame, dict[str, str]]:
    """For figures and tables: the study's summary with only the energy it may show, and the
    platforms without sensor energy (empty when the study opted in to estimates). `data` is
    the figures' mapping of tables; ``data["use_estimated_energy"]`` (a bool, set by
    `figures.load_study`) opts in."""
    use_estimated = bool(data.get("use_estimated_energy", False))
    summary = data["summary"]
    return sensor_energy_only(summary, use_estimated), {} if use_estimated else sensorless_platforms(summary)
