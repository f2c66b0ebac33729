"""The quantise step's inputs, checked before anything expensive: the model directory, the
settings sections, the texts and their token windows.

`plan_build` turns (model_dir, quant, settings) into a `BuildPlan` or raises one
`QuantiseError` line naming the field and the fix; `plan_calibration` does the same for the
calibration of checkpoint variants.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.loading import resolve_torch_device
from ..paths import REPO_ROOT
from ..variants import DTYPES, VARIANTS, QuantiseError, VariantSpec, check_supported, require


@dataclass(frozen=True)
class TextWindows:
    """A config text (`field` names it) cut into windows of `length` tokens."""

    text: str  # the path as configured
    path: Path  # where it was found
    length: int
    count: int  # max_sequences (evaluation) or samples (calibration)


@dataclass(frozen=True)
class BuildPlan:
    """Everything one variant build reads, checked."""

    model_dir: Path
    quant: str
    spec: VariantSpec
    model_type: str
    device: str
    bnb_compute: str  # quantisation.bnb_compute_dtype
    trust_remote_code: bool
    model_manifest: dict[str, Any]
    evaluation: TextWindows
    quantisation: dict[str, Any]


def plan_build(model_dir: str | Path, quant: str, settings: dict[str, Any]) -> BuildPlan:
    """Check every input of a build; `settings` holds `quantisation`, `evaluation` and `device`."""
    spec = VARIANTS.get(quant)
    require(spec is not None, f"quant: unknown variant {quant!r}; allowed: {', '.join(VARIANTS)}")
    require(
        not quant.startswith("gguf-"), f"quant: {quant!r} is built by the gguf rule (llama.cpp), not the quantise step"
    )
    model_path = Path(model_dir)
    model_type = read_model_type(model_path)
    device = resolve_torch_device(settings.get("device", "auto"))
    problem = check_supported(quant, device == "cuda", model_type)
    require(problem is None, f"quant: {problem}")

    quantisation = _settings_section(settings, "quantisation")
    evaluation = _settings_section(settings, "evaluation")
    compute = quantisation.get("bnb_compute_dtype", "float32")
    require(
        compute in DTYPES,
        f"quantisation.bnb_compute_dtype: {compute!r} is not allowed; allowed values: {', '.join(DTYPES)}",
    )
    windows = TextWindows(
        text=str(evaluation.get("text", "")),
        path=_text_path(evaluation.get("text", ""), "evaluation.text"),
        length=_positive_int(evaluation, "sequence_length", "evaluation"),
        count=_positive_int(evaluation, "max_sequences", "evaluation"),
    )
    manifest = read_model_manifest(model_path)
    trust_remote_code = bool(manifest.get("trust_remote_code", False))
    evaluation_windows(model_path, windows, trust_remote_code)
    return BuildPlan(
        model_path, quant, spec, model_type, device, compute, trust_remote_code, manifest, windows, quantisation
    )


def plan_calibration(plan: BuildPlan) -> TextWindows:
    """The checked calibration settings of a checkpoint variant."""
    calibration = _settings_section(plan.quantisation, "calibration")
    return TextWindows(
        text=str(calibration.get("text", "")),
        path=_text_path(calibration.get("text", ""), "quantisation.calibration.text"),
        count=_positive_int(calibration, "samples", "quantisation.calibration"),
        length=_positive_int(calibration, "sequence_length", "quantisation.calibration"),
    )


def _settings_section(settings: dict[str, Any], name: str) -> dict[str, Any]:
    section = settings.get(name)
    require(
        isinstance(section, dict),
        f"{name}: missing from the settings given to the quantise step; pass the config's {name} section",
    )
    return section


def _text_path(path: str, field: str) -> Path:
    """A config text path, relative to the working directory or the repository."""
    candidate = Path(path)
    for resolved in (candidate, REPO_ROOT / candidate):
        if resolved.is_file():
            return resolved
    raise QuantiseError(f"{field}: file {path!r} does not exist; ship the text or fix the path")


def _positive_int(section: dict[str, Any], key: str, field: str) -> int:
    value = section.get(key)
    require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{field}.{key}: {value!r} must be a positive integer",
    )
    return int(value)


# -- the model directory -----------------------------------------------------------------------


def read_model_manifest(model_dir: str | Path) -> dict[str, Any]:
    """`model_manifest.json` of a materialised model directory ({} if absent)."""
    path = Path(model_dir) / "model_manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def read_model_type(model_dir: Path) -> str:
    config = model_dir / "config.json"
    require(config.is_file(), f"model_dir: {str(model_dir)!r} has no config.json; build it with the model rule first")
    return str(json.loads(config.read_text()).get("model_type", ""))


def load_tokenizer(model_dir: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)


def library_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# -- token windows -----------------------------------------------------------------------------


def evaluation_windows(model_dir: Path, text: TextWindows, trust_remote_code: bool) -> int:
    """Check the evaluation text gives at least one window; return the number of windows."""
    from ..quality import EvaluationError, token_windows, tokenize_text

    ids = tokenize_text(load_tokenizer(model_dir, trust_remote_code), text.path.read_text(encoding="utf-8"))
    try:
        return len(token_windows(ids, text.length, text.count))
    except EvaluationError as exc:
        raise QuantiseError(str(exc)) from None


def calibration_windows(model_dir: Path, text: TextWindows, trust_remote_code: bool) -> list[list[int]]:
    """`text.count` consecutive windows of `text.length` tokens from the calibration text."""
    from ..quality import EvaluationError, token_windows, tokenize_text

    samples, length = text.count, text.length
    ids = tokenize_text(load_tokenizer(model_dir, trust_remote_code), text.path.read_text(encoding="utf-8"))
    if len(ids) < samples * length:
        raise QuantiseError(
            f"quantisation.calibration: {samples} samples x {length} tokens need {samples * length} tokens but "
            f"{text.path.name} has {len(ids)}; lower samples or sequence_length, or use a longer text"
        )
    try:
        return token_windows(ids, length, samples, field="quantisation.calibration")
    except EvaluationError as exc:
        raise QuantiseError(str(exc)) from None
