rule model:
    """Materialise a model directory: random weights from an architecture config, or a hub snapshot."""
    input:
        architecture=lambda wc: config["models"][wc.model].get("architecture", []),
        tokenizer_text="data/text/tokenizer.txt",
    output:
        directory("results/models/{model}"),
    params:
        entry=lambda wc: config["models"][wc.model],
        seed=config["seed"],
    log:
        "logs/model/{model}.log",
    conda:
        "../../envs/pytorch.yaml"
    threads: 1
    script:
        "../scripts/model.py"
