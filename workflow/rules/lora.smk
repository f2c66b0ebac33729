# LoRA adapters (llenergymeasure/lora.py): model -> adapter -> measure_adapter -> flops_adapter;
# on vllm also adapter -> merge_adapter -> measure_adapter (vLLM loads merged weights as a checkpoint).
# The base model's jobs keep their paths and params, so adding an adapter re-runs none of them.


rule adapter:
    """Build one LoRA adapter of one model (PEFT save_pretrained, safetensors) and its manifest."""
    input:
        model=MODEL_DIR,
    output:
        directory("results/adapters/{model}/{adapter}"),
    log:
        "logs/adapter/{model}/{adapter}.log",
    wildcard_constraints:
        adapter=_alternation(adapter_names(config)) or "(?!)",
    conda:
        "../../envs/pytorch.yaml"
    threads: 1
    params:
        settings=lambda wc: canonical_json(
            adapter_build_settings(config, wc.model, wc.adapter)
        ),
    script:
        "../scripts/lora_adapter.py"


rule merge_adapter:
    """The base model with one adapter merged in (PEFT merge_and_unload, safetensors), for vllm."""
    input:
        model=MODEL_DIR,
        adapter="results/adapters/{model}/{adapter}",
    output:
        directory("results/adapters-merged/{model}/{adapter}"),
    log:
        "logs/merge_adapter/{model}/{adapter}.log",
    wildcard_constraints:
        adapter=_alternation(adapter_names(config)) or "(?!)",
    conda:
        "../../envs/pytorch.yaml"
    threads: 1
    script:
        "../scripts/lora_merge.py"


rule measure_adapter:
    """Measure one variant with one adapter: unmerged (PEFT; vllm: a LoRARequest), then merged
    (merge_and_unload; vllm: the merge_adapter checkpoint). vllm runs in params.python.
    """
    input:
        variant=VARIANT_MANIFEST,
        model=MODEL_DIR,
        adapter="results/adapters/{model}/{adapter}",
        merged=merged_adapter_input,
    output:
        rows="results/measure/{model}/{quant}/{backend}/adapter-{adapter}.parquet",
        environment="results/measure/{model}/{quant}/{backend}/adapter-{adapter}.env.json",
    log:
        "logs/measure/{model}/{quant}/{backend}/adapter-{adapter}.log",
    wildcard_constraints:
        adapter=_alternation(adapter_names(config)) or "(?!)",
    conda:
        adapter_job_env
    threads: workflow.cores
    resources:
        gpu=uses_gpu,
        measure_slot=1,
    params:
        settings=adapter_measurement_settings,
        python=adapter_job_python,
        adapter=adapter_script("measure_adapter.py"),
    script:
        "../scripts/measure_adapter.py"


rule flops_adapter:
    """Annotate an adapter job's rows with the base model's FLOPs plus the adapter's matmuls."""
    input:
        rows="results/measure/{model}/{quant}/{backend}/adapter-{adapter}.parquet",
        model=MODEL_DIR,
        adapter="results/adapters/{model}/{adapter}",
    output:
        "results/flops/{model}/{quant}/{backend}/adapter-{adapter}.arrow",
    log:
        "logs/flops/{model}/{quant}/{backend}/adapter-{adapter}.log",
    wildcard_constraints:
        adapter=_alternation(adapter_names(config)) or "(?!)",
    conda:
        "../../envs/core.yaml"
    threads: 1
    script:
        "../scripts/flops_adapter.py"
