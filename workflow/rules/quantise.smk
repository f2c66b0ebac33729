# Quantised variants built in Python: none-* and bnb-* (manifest only: the weights are
# converted at load time), llm-compressor checkpoints (gptq-w4a16, awq-w4a16, w8a8-int8) and
# the legacy auto-gptq / autoawq checkpoints. gguf-* variants come from the gguf rule.


rule quantise:
    """Build one variant of one model: a manifest, or a quantised checkpoint, plus its perplexity."""
    input:
        model=MODEL_DIR,
        calibration=config["quantisation"]["calibration"]["text"],
        evaluation=config["evaluation"]["text"],
    output:
        "results/variants/{model}/{quant}/variant.json",
    log:
        "logs/quantise/{model}/{quant}.log",
    wildcard_constraints:
        quant=_python_built_quants(),
    # builds rank above every measure replicate (common.smk)
    priority: BUILD_PRIORITY
    conda:
        variant_env
    threads: quantise_threads
    # Calibration (llm-compressor uses the GPU whenever one is visible) and the perplexity
    # pass run on the study's device, so on CUDA every quantise job holds the GPU.
    resources:
        gpu=uses_gpu,
    params:
        settings=quantise_settings,
    script:
        "../scripts/quantise.py"
