# The study's analyses (llenergymeasure/analysis), one Parquet per analysis, under a root:
# results/ from this run's aggregate, results/paper_figures/ from the shipped paper/data/
# (llenergymeasure/outputs.py: SOURCES).

from glob import glob

from llenergymeasure.outputs import all_analysis_outputs, analysis_paths, root_pattern

# Architecture configs (config/models/): they name the families; the 2N-formula analysis sweeps
# those named as a measured model.
ARCHITECTURE_CONFIGS = sorted(glob("config/models/*.json"))
ROOT_PATTERN = root_pattern()


rule analyse:
    """FLOPs vs measured ranks, compound measure, ranking transfer, Pareto frontiers, tests,
    per-family transfer error, 2N error, quantisation effect, prefill/decode shares,
    cross-engine transfer, fidelity and the findings table."""
    input:
        unpack(study_tables),
        architectures=ARCHITECTURE_CONFIGS,
    output:
        **analysis_paths("{root}/analysis"),
    log:
        "logs/analyse/{root}.log",
    wildcard_constraints:
        root=ROOT_PATTERN,
    conda:
        "../../envs/figures.yaml"
    threads: 1
    params:
        analysis=study_analysis,
        new_tokens=analysis_new_tokens,
    script:
        "../scripts/analyse.py"
