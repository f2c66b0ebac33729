# Fidelity of every variant to its own float32 parent (llenergymeasure/fidelity.py): KL
# divergence and top-1 agreement of next-token distributions on the evaluation text, the
# quality axis that means something on random weights. Cheap on CPU: one forward pass
# over the evaluation windows (config evaluation: sequence_length x max_sequences tokens).


rule reference_logits:
    """The float32 parent's next-token log-probabilities on the evaluation windows, once per model."""
    input:
        model=MODEL_DIR,
        evaluation_text=config["evaluation"]["text"],
    output:
        "results/fidelity/{model}/parent_log_probs.npz",
    log:
        "logs/fidelity/{model}/reference_logits.log",
    conda:
        "../../envs/pytorch.yaml"
    threads: 1
    params:
        evaluation=config["evaluation"],
    script:
        "../scripts/reference_logits.py"


rule fidelity:
    """KL divergence and top-1 agreement of one variant against its parent's log-probabilities."""
    input:
        variant=VARIANT_MANIFEST,
        parent="results/fidelity/{model}/parent_log_probs.npz",
    output:
        "results/fidelity/{model}/{quant}.json",
    log:
        "logs/fidelity/{model}/{quant}.log",
    conda:
        fidelity_env
    threads: 1
    script:
        "../scripts/fidelity.py"


rule fidelity_table:
    """Every variant's fidelity record in one Parquet beside the aggregate tables."""
    input:
        fidelity_records(),
    output:
        "results/aggregate/fidelity.parquet",
    log:
        "logs/fidelity_table.log",
    conda:
        "../../envs/core.yaml"
    threads: 1
    script:
        "../scripts/fidelity_table.py"
