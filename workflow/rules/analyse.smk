# The study's analyses (llenergymeasure/analysis.py), one Parquet per analysis.

from glob import glob

from llenergymeasure.analysis import all_analysis_outputs, analysis_paths

# Architecture configs swept by the 2N-formula analysis (every one in config/models/).
ARCHITECTURE_CONFIGS = sorted(glob("config/models/*.json"))


rule analyse:
    """FLOPs vs measured ranks, compound measure, ranking transfer, Pareto frontiers, tests,
    per-family transfer error, 2N error, quantisation effect, prefill/decode shares,
    cross-engine transfer, fidelity and the findings table."""
    input:
        measurements="results/aggregate/measurements.parquet",
        summary="results/aggregate/summary.parquet",
        fidelity="results/aggregate/fidelity.parquet",
        architectures=ARCHITECTURE_CONFIGS,
    output:
        **analysis_paths("results/analysis"),
    log:
        "logs/analyse.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    params:
        analysis=config["analysis"],
        new_tokens=config["workload"]["new_tokens"],
    script:
        "../scripts/analyse.py"
