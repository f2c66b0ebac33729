# GGUF variants for the llamacpp backend: llama.cpp's converter, then llama.cpp's quantiser.


rule gguf:
    """Convert a model directory to GGUF f16 with llama.cpp's converter, or quantise that file."""
    input:
        model=MODEL_DIR,
        f16=gguf_f16_source,
        evaluation_text=config["evaluation"]["text"],
    output:
        variant="results/variants/{model}/{quant}/variant.json",
        gguf="results/variants/{model}/{quant}/model.gguf",
    log:
        "logs/gguf/{model}/{quant}.log",
    wildcard_constraints:
        quant="gguf-[a-z0-9_]+",
    # builds rank above every measure replicate (common.smk)
    priority: BUILD_PRIORITY
    conda:
        "../../envs/llamacpp.yaml"
    threads: min(4, workflow.cores)
    params:
        evaluation=config["evaluation"],
    script:
        "../scripts/gguf_convert.py"
