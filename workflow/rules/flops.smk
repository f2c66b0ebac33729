rule flops:
    """Annotate measured rows with exact analytical FLOPs, MFU and MBU."""
    input:
        rows="results/measure/{model}/{quant}/{backend}/replicate-{replicate}.parquet",
        model=model_dir,
    output:
        "results/flops/{model}/{quant}/{backend}/replicate-{replicate}.parquet",
    log:
        "logs/flops/{model}/{quant}/{backend}/replicate-{replicate}.log",
    conda:
        "../../envs/core.yaml"
    threads: 1
    script:
        "../scripts/flops.py"
