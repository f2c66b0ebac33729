rule measure:
    """Warm up, then measure every configured batch size and shape of one variant on one backend.

    Each of the `measurement.replicates` replicates is its own job, in a fresh process.
    """
    input:
        variant=VARIANT_MANIFEST,
        model=MODEL_DIR,
    output:
        rows="results/measure/{model}/{quant}/{backend}/replicate-{replicate}.parquet",
        environment="results/measure/{model}/{quant}/{backend}/replicate-{replicate}.env.json",
    log:
        "logs/measure/{model}/{quant}/{backend}/replicate-{replicate}.log",
    wildcard_constraints:
        backend=IN_PROCESS_BACKENDS,
    # replicate r of every configuration before replicate r + 1 of any (common.smk)
    priority: measure_priority
    conda:
        backend_env
    # Measurements never overlap: profiles/default allows one gpu and one measure_slot at a
    # time, and a measure job takes every core so nothing else runs beside it on a workstation.
    threads: workflow.cores
    resources:
        gpu=measure_gpus,
        measure_slot=1,
    params:
        # only what the rows depend on: growing the sweep or the replicates re-runs nothing already measured
        settings=lambda wc: canonical_json(measurement_settings(config, wc.backend)),
    script:
        "../scripts/measure.py"


rule measure_vllm:
    """The measure job of the vllm backend, in the vLLM interpreter: the adapter runs itself in
    params.python (.venv-vllm or $LLEM_VLLM_PYTHON), or with --sdm conda in the device's env
    (envs/vllm-cpu.yaml, envs/vllm.yaml).
    vLLM's stack (its own torch, numpy and compressed-tensors pins) cannot share the main venv.
    """
    input:
        variant=VARIANT_MANIFEST,
        model=MODEL_DIR,
    output:
        rows="results/measure/{model}/{quant}/{backend}/replicate-{replicate}.parquet",
        environment="results/measure/{model}/{quant}/{backend}/replicate-{replicate}.env.json",
    log:
        "logs/measure/{model}/{quant}/{backend}/replicate-{replicate}.log",
    wildcard_constraints:
        backend="vllm",
    priority: measure_priority
    conda:
        vllm_env
    threads: workflow.cores
    resources:
        gpu=measure_gpus,
        measure_slot=1,
    params:
        settings=lambda wc: canonical_json(measurement_settings(config, wc.backend)),
        python=vllm_python,
        adapter=adapter_script("measure.py"),
    script:
        "../scripts/measure.py"
