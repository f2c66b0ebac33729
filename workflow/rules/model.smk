rule model:
    """Materialise a model directory: random weights from an architecture config, or a hub snapshot."""
    input:
        architecture=lambda wc: config["models"][wc.model].get("architecture", []),
        tokenizer_text="data/text/tokenizer.txt",
    output:
        directory("results/models/{model}"),
    log:
        "logs/model/{model}.log",
    # builds rank above every measure replicate (common.smk)
    priority: BUILD_PRIORITY
    conda:
        "../../envs/pytorch.yaml"
    threads: 1
    params:
        # only what the weights depend on, not which backends or variants measure them
        settings=lambda wc: canonical_json(model_build_settings(config, wc.model)),
    script:
        "../scripts/model.py"
