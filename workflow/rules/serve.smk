# Scenario serving (llenergymeasure/serving): vLLM's OpenAI server under load, per variant.


rule serve:
    """Serve one variant with vLLM's OpenAI-compatible server on 127.0.0.1 and drive it at every
    configured load level; one row per (level, trial). Runs in the vLLM interpreter, like measure_vllm.
    """
    input:
        variant=VARIANT_MANIFEST,
        model=MODEL_DIR,
    output:
        rows="results/serving/{model}/{quant}/{backend}.parquet",
        requests="results/serving/{model}/{quant}/{backend}.requests.parquet",
        environment="results/serving/{model}/{quant}/{backend}.env.json",
    log:
        job="logs/serve/{model}/{quant}/{backend}.log",
        server="logs/serve/{model}/{quant}/{backend}.server.log",
    wildcard_constraints:
        backend="vllm",
    conda:
        vllm_env
    threads: workflow.cores
    resources:
        gpu=uses_gpu,
        measure_slot=1,
    params:
        settings=serving_settings,
        python=vllm_python,
        adapter=adapter_script("serve.py"),
    script:
        "../scripts/serve.py"


rule serving_figures:
    """Latency (TTFT, inter-token) and steady-state J/token against request rate."""
    input:
        rows=serving_rows(),
    output:
        **{
            f"{name}_{ext}": f"results/figures/{name}.{ext}"
            for name in SERVING_FIGURES
            for ext in ("pdf", "png")
        },
    log:
        "logs/serving_figures.log",
    conda:
        "../../envs/figures.yaml"
    threads: 1
    script:
        "../scripts/serving_figures.py"
