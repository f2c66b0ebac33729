rule flops:
    """Annotate every measured row of one model (all its variants, backends and replicates, in
    one process: one torch import and one count per shape) with verified FLOPs (analytical
    count checked against a FlopCounterMode trace of the meta-device model, or refused), MFU
    and MBU."""
    input:
        rows=model_measured_rows,
        model=MODEL_DIR,
    output:
        "results/flops/{model}/measured.arrow",
    log:
        "logs/flops/{model}.log",
    conda:
        "../../envs/pytorch.yaml"
    threads: 1
    script:
        "../scripts/flops.py"
