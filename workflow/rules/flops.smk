rule flops:
    """Annotate measured rows with verified FLOPs (analytical count checked against a
    FlopCounterMode trace of the meta-device model, or refused), MFU and MBU."""
    input:
        rows="results/measure/{model}/{quant}/{backend}/replicate-{replicate}.parquet",
        model=MODEL_DIR,
    output:
        "results/flops/{model}/{quant}/{backend}/replicate-{replicate}.arrow",
    log:
        "logs/flops/{model}/{quant}/{backend}/replicate-{replicate}.log",
    conda:
        "../../envs/pytorch.yaml"
    threads: 1
    script:
        "../scripts/flops.py"
