"""Quantised variants as real artefacts: the build stage of the quantise rule.

`build_variant` makes the `variant.json` (a `manifest.VariantManifest`) of one (model, quant)
pair and, for checkpoint methods, the checkpoint itself:

* `none-*`  load the float32 model at another dtype; manifest only.
* `bnb-*`   bitsandbytes quantises at load time (LLM.int8, NF4, FP4); manifest only.
* `gptq-w4a16`, `awq-w4a16`, `w8a8-int8`  llm-compressor `oneshot` with the shipped
  calibration text -> a compressed-tensors checkpoint (`<out_dir>/checkpoint/`).
* `gptq-autogptq`, `awq-autoawq`  the archived auto-gptq / deprecated autoawq libraries,
  each in its own env (transformers < 5, CUDA only), for reproducing older artefacts.

Modules: `inputs` (checks before anything expensive), `llm_compressor` and `legacy` (the
checkpoint builders), `build` (the steps). Loading a built variant lives beside the backends
(`backends.loading`), which never import this package; the catalogue and `check_supported`
live in `variants`, so config validation needs nothing from here.
"""

from .build import build_variant

__all__ = ["build_variant"]
