"""The `pytorch-compiled` backend: transformers `generate` with a static KV cache and `torch.compile`.

This is transformers' documented fast path: `cache_implementation="static"` with a
`CompileConfig`, so that `generate` runs every decode step through `torch.compile`d
forward (inductor; with mode "reduce-overhead" also CUDA graphs) while the prefill stays
eager. transformers compiles automatically only on accelerators; on CPU this backend sets
`CompileConfig._compile_all_devices` (the flag transformers provides for that), so that
the same path runs, and is tested, on CPU.

Compilation never happens inside a measured window: `load` compiles once on a probe
(recorded as `compile_s` in LoadInfo.extra and describe()), and `prepare_inputs` runs each
new shape twice before returning, so that the recompilation (and CUDA-graph capture) a new
batch size or cache length triggers is done, and timed, before measurement starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from ..manifest import VariantManifest
from .pytorch import PyTorchBackend

log = logging.getLogger(__name__)

# KV-cache room per sequence beyond the prompt when settings do not give `max_new_tokens`.
# With a static cache, decode attends over the whole cache, so it is sized for the workload.
DEFAULT_MAX_NEW_TOKENS = 256
RECOMPILE_LIMIT = 64  # torch._dynamo's default (8) would fall back to eager silently after 8 shapes
PROBE_SHAPE = (1, 8)  # batch, prompt tokens of the compile probe run by load()


def kv_room_tokens(settings: Any) -> int:
    """New tokens per sequence a backend's KV cache must hold (setting `max_new_tokens`, checked
    where the settings were parsed), from a settings instance or a mapping of them."""
    room = settings.get("max_new_tokens") if isinstance(settings, Mapping) else settings.max_new_tokens
    return DEFAULT_MAX_NEW_TOKENS if room is None else room


def compiled_graphs() -> int:
    """Graphs torch.compile (dynamo) has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class CompiledPyTorchBackend(PyTorchBackend):
    """Settings (backend_settings.pytorch-compiled in the config), besides the pytorch ones:

    max_new_tokens: static-cache room beyond the prompt (default 256; set the workload's new_tokens);
    compile_mode: torch.compile mode (default reduce-overhead on CUDA, default on CPU);
    fullgraph, dynamic: passed to torch.compile through transformers' CompileConfig.
    """

    name = "pytorch-compiled"

    def __init__(self, settings: Any = None, device: str = "cpu"):
        super().__init__(settings, device)
        self.max_new_tokens = kv_room_tokens(self.settings)
        self.compile_mode = str(self.settings.compile_mode or ("reduce-overhead" if device == "cuda" else "default"))
        self.compile_config = None
        self.max_cache_len: int | None = None
        self.compile_events: list[dict[str, Any]] = []
        self._warm_shapes: set[tuple[int, int]] = set()

    def load(self, variant: VariantManifest | Mapping[str, Any]):
        import torch
        from transformers import CompileConfig

        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        info = super().load(variant)
        self.compile_config = CompileConfig(
            fullgraph=bool(self.settings.fullgraph),
            dynamic=self.settings.dynamic,
            mode=self.compile_mode,
        )
        if self.device != "cuda":
            self.compile_config._compile_all_devices = True  # transformers compiles on accelerators only otherwise
        inputs = self.prepare_inputs(*PROBE_SHAPE, seed=0)
        probe = self.compile_events[-1]
        if not self._decode_is_compiled():
            raise RuntimeError(
                "transformers did not compile the decode step (no torch.compile'd forward after a static-cache "
                "generate); this backend would measure eager decoding: use the pytorch backend instead"
            )
        del inputs
        info.kernel_path = f"{info.kernel_path}+torch.compile({self.compile_config.backend},{self.compile_mode})"
        info.extra.update(
            compile_s=probe["compile_s"],
            compile_probe=probe,
            compile_config={
                "backend": self.compile_config.backend,
                "mode": self.compile_mode,
                "fullgraph": self.compile_config.fullgraph,
                "dynamic": self.compile_config.dynamic,
            },
            cache_implementation="static",
        )
        return info

    def _decode_is_compiled(self) -> bool:
        return getattr(self.model, "_compiled_call", None) is not None

    def model_replaced(self) -> None:
        """New modules (PEFT's LoRA layers, or plain ones again after a merge) make dynamo
        recompile: forget the warm shapes so prepare_inputs recompiles, and times it, outside
        every window."""
        self._warm_shapes.clear()

    def prepare_inputs(self, batch_size: int, prompt_tokens: int, seed: int) -> dict[str, Any]:
        inputs = super().prepare_inputs(batch_size, prompt_tokens, seed)
        self.max_cache_len = prompt_tokens + self.max_new_tokens
        shape = (batch_size, self.max_cache_len)
        if shape not in self._warm_shapes:
            new_tokens = min(max(self.max_new_tokens, 2), 4)  # prefill + at least one compiled decode step
            graphs_before = compiled_graphs()
            timings = []
            for _ in range(2):
                start = time.perf_counter()
                super().generate(inputs, new_tokens)
                self.synchronize()
                timings.append(time.perf_counter() - start)
            self._warm_shapes.add(shape)
            self.compile_events.append(
                {
                    "batch_size": batch_size,
                    "prompt_tokens": prompt_tokens,
                    "max_cache_len": self.max_cache_len,
                    "new_tokens": new_tokens,
                    "first_call_s": timings[0],
                    "second_call_s": timings[1],
                    # the first call compiles (or recompiles) and captures; the second runs what was built
                    "compile_s": max(timings[0] - timings[1], 0.0),
                    "graphs_compiled": compiled_graphs() - graphs_before,
                }
            )
            log.info(
                "pytorch-compiled: shape batch %d x cache %d ready, first call %.2f s, then %.3f s",
                batch_size,
                self.max_cache_len,
                timings[0],
                timings[1],
            )
        return inputs

    def generation_kwargs(self, new_tokens: int) -> dict[str, Any]:
        if self.max_cache_len is None:
            raise RuntimeError("call prepare_inputs() before generate(): it sizes the static cache")
        return {
            **super().generation_kwargs(new_tokens),
            "cache_implementation": "static",
            "max_cache_len": self.max_cache_len,  # one cache size per shape: no recompilation between calls
            "compile_config": self.compile_config,
        }

    def generate(self, inputs: dict[str, Any], new_tokens: int, on_token=None) -> int:
        prompt = int(inputs["input_ids"].shape[1])
        if self.max_cache_len is None or prompt + new_tokens > self.max_cache_len:
            raise ValueError(
                f"prompt {prompt} + new_tokens {new_tokens} exceed the static cache of {self.max_cache_len} "
                "tokens; raise backend_settings.pytorch-compiled.max_new_tokens"
            )
        return super().generate(inputs, new_tokens, on_token)

    def describe(self) -> dict[str, Any]:
        import torch

        description = super().describe()
        description["settings"].update(
            cache_implementation="static",
            max_new_tokens=self.max_new_tokens,
            compile_backend=getattr(self.compile_config, "backend", "inductor"),
            compile_mode=self.compile_mode,
            compile_all_devices=self.device != "cuda",
            compile_s=self.compile_events[0]["compile_s"] if self.compile_events else None,
            compile_events=list(self.compile_events),
            recompile_limit=torch._dynamo.config.recompile_limit,
        )
        return description
