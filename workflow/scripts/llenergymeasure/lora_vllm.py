"""LoRA adapters on the vllm backend: unmerged through a LoRARequest, merged from a checkpoint.

Unmerged, the engine is built with `enable_lora`, one adapter slot (`max_loras=1`) and the
adapter's rank rounded up to a `max_lora_rank` vLLM accepts; the adapter is registered with
`add_lora` (timed: `adapter_load_s`, outside every window) and every generate call passes the
same `LoRARequest(name, 1, adapter_dir)`, so vLLM runs its LoRA kernels (on CPU, PunicaWrapperCPU)
beside the base layers. vLLM has no merge of its own, so merged, the engine is rebuilt from the
checkpoint the `merge_adapter` rule wrote (PEFT `merge_and_unload`, lora_build.build_merged);
its merge time comes from that checkpoint's manifest (`adapter_merge_s`), also outside the windows.

An adapter job loads the real weights (`load_format: auto`, unless backend_settings says
otherwise), where a base-model job of a random-weight model lets vLLM fill them (`dummy`): the
cost is the same, but only real weights make the merged model compute what the unmerged one
does, which the tests check.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from .backend_specs import typed_settings
from .lora import vllm_max_lora_rank
from .lora_build import MERGE_MANIFEST, Phase, read_manifest, row_fields


def adapter_rank(manifest: dict[str, Any]) -> int:
    """The largest rank of any adapted module (a trained adapter may vary it per module)."""
    return max([int(manifest["rank"])] + [int(m["rank"]) for m in manifest["modules"]])


def engine_settings(adapter_dir: str | Path, settings: Any) -> dict[str, Any]:
    """backend_settings additions of an adapter job: LoRA slots for the adapter, real weights.
    `settings`: backend_settings.vllm (an instance, or a mapping parsed by typed_settings)."""
    return {
        "load_format": typed_settings("vllm", settings).load_format or "auto",
        "max_lora_rank": vllm_max_lora_rank(adapter_rank(read_manifest(adapter_dir))),
    }


def lora_request(adapter_dir: str | Path) -> Any:
    """The LoRARequest of an adapter directory: its name, slot id 1, its path."""
    from vllm.lora.request import LoRARequest

    return LoRARequest(read_manifest(adapter_dir)["adapter"], 1, str(Path(adapter_dir).resolve()))


def measurement_phases(adapter_dir: str | Path, merged_dir: str | Path, variant: dict[str, Any]) -> list[Phase]:
    """(row fields, preparation) of the unmerged then the merged adapter, as lora_build's."""
    fields = row_fields(read_manifest(adapter_dir))
    merge = json.loads((Path(merged_dir) / MERGE_MANIFEST).read_text())
    if merge["adapter_sha256"] != fields["adapter_sha256"]:
        raise ValueError(
            f"{merged_dir} was merged from another adapter (sha256 {merge['adapter_sha256'][:12]}, "
            f"not {fields['adapter_sha256'][:12]}); rebuild it with the merge_adapter rule"
        )
    timings: dict[str, float] = {}

    def unmerged(runner: Any) -> dict[str, Any]:
        request = lora_request(adapter_dir)
        start = time.perf_counter()
        if not runner.llm.llm_engine.add_lora(request):
            raise RuntimeError(f"vLLM did not load adapter {request.lora_name} from {request.lora_path}")
        timings["adapter_load_s"] = time.perf_counter() - start
        runner.lora_request = request
        return dict(timings)

    def merged(runner: Any) -> dict[str, Any]:
        runner.close()
        runner.lora_request = None
        runner.settings = dataclasses.replace(runner.settings, max_lora_rank=None)  # no LoRA slots
        info = runner.load({**variant, "checkpoint_dir": str(Path(merged_dir).resolve())})
        settings = json.dumps(runner.describe().get("settings", {}), sort_keys=True, default=str)  # as measure's
        return {
            **timings,
            "adapter_merge_s": float(merge["merge_s"]),
            "kernel_path": info.kernel_path,
            "backend_settings_json": settings,
        }

    return [({**fields, "adapter_merged": False}, unmerged), ({**fields, "adapter_merged": True}, merged)]
