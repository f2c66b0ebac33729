rule aggregate:
    """One tidy per-trial Parquet and a per-configuration summary, checked against the schema."""
    input:
        measured_rows(),
        adapter_rows(),
    output:
        measurements="results/aggregate/measurements.parquet",
        summary="results/aggregate/summary.parquet",
    log:
        "logs/aggregate.log",
    conda:
        "../../envs/core.yaml"
    threads: 2  # reads the row files on two threads (aggregate.read_row_files); fewer where --cores is
    params:
        extra_results=config["analysis"]["extra_results"],
        cv_threshold=config["measurement"]["cv_flag_threshold"],
    script:
        "../scripts/aggregate.py"
