"""LoRA adapters on the vllm backend, for real: vLLM's CPU build (.venv-vllm) on tiny-llama in float32.

One subprocess in the vLLM venv (its start-up is the slow part) does all the vLLM work: it
checks lora.VLLM_LORA_ARCHITECTURES against vLLM's model registry, generates greedily with a
LoRARequest (unmerged) and from the merge_adapter checkpoint (merged) through VllmBackend and
lora_vllm's phases, and runs a real measure job (run_job) with the adapter. This process
builds the model, the adapter and the merged checkpoint with PEFT and computes PEFT's own
unmerged greedy output, which vLLM's must equal. A missing vLLM venv fails, never skips.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pandas as pd
import pytest
from conftest import REPO_ROOT, SCRIPTS, vllm_python

peft = pytest.importorskip("peft")
torch = pytest.importorskip("torch")

from llenergymeasure import lora, lora_build  # noqa: E402
from llenergymeasure.config import ConfigError, load_config  # noqa: E402

PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12], [40, 41, 300, 7, 9, 200, 3, 17]]
NEW_TOKENS = 8
SETTINGS = {
    "source": "random",
    "rank": 8,
    "alpha": 16,
    "target_modules": ["q_proj", "v_proj"],
    "dropout": 0.0,
    "seed": 0,
}

PROBE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {scripts!r})

    def main():
        from vllm.model_executor.models import ModelRegistry
        from vllm.model_executor.models.interfaces import supports_lora
        from llenergymeasure import lora_vllm, measure
        from llenergymeasure.backends.vllm import VllmBackend

        lora_support = {{name: supports_lora(ModelRegistry._try_load_model_cls(name)) for name in {architectures!r}}}
        variant = json.load(open({variant!r}))
        settings = {{"max_prompt_tokens": 16, "max_new_tokens": 8, "threads": 1, "kv_cache_memory_bytes": 1 << 26}}
        settings.update(lora_vllm.engine_settings({adapter!r}, {{}}))
        backend = VllmBackend(settings, "cpu")
        backend.load(variant)
        (_, unmerged), (_, merged) = lora_vllm.measurement_phases({adapter!r}, {merged!r}, variant)
        prompts = [{{"prompt_token_ids": p}} for p in {prompts!r}]
        outputs = {{"engine": dict(backend.engine), "unmerged_fields": unmerged(backend)}}

        def greedy():
            params = backend.sampling_params({new})
            done = backend.llm.generate(prompts, params, use_tqdm=False, lora_request=backend.lora_request)
            return [list(o.outputs[0].token_ids) for o in done]

        outputs["unmerged"] = greedy()
        outputs["merged_fields"] = merged(backend)
        outputs["merged"] = greedy()
        outputs["merged_engine"] = dict(backend.engine)
        backend.close()
        config = {{"seed": 0, "device": "cpu", "backend_settings": {{"vllm": {{"threads": 1, "kv_cache_memory_bytes": 1 << 26}}}},
                   "workload": {{"batch_sizes": [2], "prompt_tokens": [8], "new_tokens": 4}},
                   "measurement": {{"trials": 1, "warmup_runs": 1, "warmup_min_s": {{"cpu": 0.0}}, "warmup_cv_threshold": None,
                                    "warmup_max_s": 5.0, "min_window_s": {{"cpu": 0.05}}, "idle_baseline_s": {{"cpu": 0.05}}}}}}
        measure.run_job(config, "tiny-llama", "none-float32", "vllm", {variant!r}, {rows!r}, {rows!r} + ".env.json",
                        adapter_dir={adapter!r}, merged_dir={merged!r})
        print("RESULT " + json.dumps({{"lora_support": lora_support, **outputs}}, default=str))

    if __name__ == "__main__":
        main()
""")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """tiny-llama, a random rank-8 adapter on q_proj and v_proj, its merged checkpoint, PEFT's output."""
    from llenergymeasure.models import materialise_random

    root = tmp_path_factory.mktemp("lora-vllm")
    model_dir = root / "tiny-llama"
    materialise_random(
        REPO_ROOT / "config/models/tiny-llama.json",
        model_dir,
        seed=0,
        tokenizer_text=REPO_ROOT / "data/text/tokenizer.txt",
    )
    manifest = lora_build.build_adapter("tiny-llama", "lora-r8", SETTINGS, model_dir, root / "adapter")
    merge = lora_build.build_merged(model_dir, root / "adapter", root / "merged")
    base = lora_build._load_base(model_dir)
    model = peft.PeftModel.from_pretrained(base, str(root / "adapter")).eval()
    with torch.inference_mode():
        generated = model.generate(
            input_ids=torch.tensor(PROMPTS),
            attention_mask=torch.ones(len(PROMPTS), 8, dtype=torch.long),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=0,
        )
    variant = {
        "quant": "none-float32",
        "quant_method": "none",
        "compute_dtype": "float32",
        "load_dtype": "float32",
        "model_dir": str(model_dir),
        "checkpoint_dir": None,
        "checkpoint_file": None,
        "weights": "random",
        "weight_bytes_disk": (model_dir / "model.safetensors").stat().st_size,
        "settings": {},
    }
    (root / "variant.json").write_text(json.dumps(variant))
    return {"root": root, "manifest": manifest, "merge": merge, "peft": generated[:, 8:].tolist()}


@pytest.fixture(scope="module")
def vllm_run(built):
    root = built["root"]
    architectures = sorted(
        {
            a
            for path in (REPO_ROOT / "config/models").glob("*.json")
            for a in json.loads(path.read_text()).get("architectures", [])
        }
    )
    script = root / "probe.py"
    script.write_text(
        PROBE.format(
            scripts=str(SCRIPTS),
            architectures=architectures,
            variant=str(root / "variant.json"),
            adapter=str(root / "adapter"),
            merged=str(root / "merged"),
            prompts=PROMPTS,
            new=NEW_TOKENS,
            rows=str(root / "rows.parquet"),
        )
    )
    done = subprocess.run([str(vllm_python()), str(script)], capture_output=True, text=True, timeout=500, cwd=root)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[0][len("RESULT ") :])


def test_the_lora_architecture_table_is_vllms(vllm_run):
    support = vllm_run["lora_support"]
    assert {name for name, ok in support.items() if ok} == {n for n in support if n in lora.VLLM_LORA_ARCHITECTURES}
    assert support["GPT2LMHeadModel"] is False  # so the refusal below is real


def test_vllm_with_a_lora_request_generates_what_peft_does_unmerged(built, vllm_run):
    engine = vllm_run["engine"]
    assert engine["enable_lora"] is True and engine["max_lora_rank"] == 8 and engine["max_loras"] == 1
    assert engine["load_format"] == "auto"
    assert vllm_run["unmerged_fields"]["adapter_load_s"] > 0
    assert vllm_run["unmerged"] == built["peft"]
    assert built["manifest"]["output_change_max_abs"] > 0.1  # the adapter really changes the model


def test_vllm_merged_from_the_merge_adapter_checkpoint_generates_what_unmerged_does(built, vllm_run):
    assert vllm_run["merged"] == vllm_run["unmerged"]
    engine = vllm_run["merged_engine"]
    assert "enable_lora" not in engine and engine["model"] == str((built["root"] / "merged").resolve())
    assert vllm_run["merged_fields"]["adapter_merge_s"] == built["merge"]["merge_s"] > 0
    assert (
        vllm_run["merged_fields"]["kernel_path"].startswith("vllm-cpu:")
        and "lora" not in vllm_run["merged_fields"]["kernel_path"]
    )


def test_a_vllm_measure_job_with_an_adapter_writes_unmerged_and_merged_rows(built, vllm_run):
    rows = pd.read_parquet(built["root"] / "rows.parquet")
    assert (rows["status"] == "ok").all(), rows[["adapter_merged", "error"]]
    assert rows["adapter_merged"].astype(bool).tolist() == [False, True]
    manifest = built["manifest"]
    assert (rows["adapter"] == "lora-r8").all() and (rows["adapter_rank"] == 8).all()
    assert (rows["adapter_bytes"] == manifest["bytes"]).all() and (rows["adapter_sha256"] == manifest["sha256"]).all()
    assert rows["adapter_load_s"].gt(0).all()
    assert pd.isna(rows["adapter_merge_s"].iloc[0]) and rows["adapter_merge_s"].iloc[1] == built["merge"]["merge_s"]
    assert rows["tokens_per_s"].gt(0).all() and (rows["backend"] == "vllm").all()
    assert "+lora:" in rows["kernel_path"].iloc[0] and "WithLoRA" in rows["kernel_path"].iloc[0]
    assert "lora" not in rows["kernel_path"].iloc[1]
    settings = [json.loads(s) for s in rows["backend_settings_json"]]
    assert settings[0]["enable_lora"] is True and "enable_lora" not in settings[1]


def _study(backends: dict, architecture: str = "config/models/tiny-llama.json", rank: int = 8) -> dict:
    return {
        "models": {
            "m": {
                "architecture": architecture,
                "backends": backends,
                "adapters": {"lora": {"rank": rank, "target_modules": ["q_proj"]}},
            }
        },
        "workload": {"batch_sizes": [1], "prompt_tokens": [8], "new_tokens": 4},
        "measurement": {"trials": 1},
        "device": "cpu",
    }


def test_vllm_adapters_are_accepted_and_the_unsupported_ones_refused_up_front():
    config = load_config(_study({"vllm": ["none-float32"]}))
    assert [(j.backend, j.quant) for j in lora.expand_adapter_jobs(config)] == [("vllm", "none-float32")]
    refusals = [
        (
            _study({"vllm": ["none-float32"]}, "config/models/tiny-gpt2.json"),
            r"^models\.m\.adapters\.lora: no adapter on vllm none-float32: vLLM's GPT2LMHeadModel does not implement LoRA",
        ),
        (
            _study({"vllm": ["none-float32"]}, "config/models/llama-3.2-1b.json", rank=1024),
            r"^models\.m\.adapters\.lora\.rank: 1024 exceeds vLLM's largest max_lora_rank 512",
        ),
    ]
    for study, pattern in refusals:
        if "gpt2" in study["models"]["m"]["architecture"]:
            study["models"]["m"]["adapters"]["lora"]["target_modules"] = ["c_attn"]
        with pytest.raises(ConfigError, match=pattern) as error:
            load_config(study)
        assert "\n" not in str(error.value)


def test_max_lora_rank_is_the_smallest_vllm_accepts():
    assert [lora.vllm_max_lora_rank(r) for r in (1, 2, 8, 9, 300, 512)] == [1, 8, 8, 16, 320, 512]
    with pytest.raises(ValueError, match="exceeds vLLM's largest"):
        lora.vllm_max_lora_rank(513)
