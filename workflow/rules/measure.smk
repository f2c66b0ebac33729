rule measure:
    """Warm up, then measure every configured batch size and shape of one variant on one backend."""
    input:
        variant=variant_manifest,
        model=model_dir,
    output:
        rows="results/measure/{model}/{quant}/{backend}.parquet",
        environment="results/measure/{model}/{quant}/{backend}.env.json",
    log:
        "logs/measure/{model}/{quant}/{backend}.log",
    conda:
        backend_env
    # Measurements never overlap: profiles/default allows one gpu and one measure_slot at a
    # time, and a measure job takes every core so nothing else runs beside it on a workstation.
    threads: workflow.cores
    resources:
        gpu=uses_gpu,
        measure_slot=1,
    params:
        # only what the rows depend on: growing the sweep re-runs nothing already measured
        settings=lambda wc: canonical_json(measurement_settings(config, wc.backend)),
    script:
        "../scripts/measure.py"
