rule measure:
    """Warm up, then measure every configured batch size and shape of one variant on one backend.

    Each of the `measurement.replicates` replicates is its own job, in a fresh process.
    """
    input:
        variant=variant_manifest,
        model=model_dir,
    output:
        rows="results/measure/{model}/{quant}/{backend}/replicate-{replicate}.parquet",
        environment="results/measure/{model}/{quant}/{backend}/replicate-{replicate}.env.json",
    log:
        "logs/measure/{model}/{quant}/{backend}/replicate-{replicate}.log",
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
