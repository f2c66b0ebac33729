"""The `pytorch` backend: transformers eager `generate`, fixed shapes, EOS ignored."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ..manifest import VariantManifest
from .base import Backend, LoadInfo, process_peak_rss_bytes, reset_process_peak_rss


class _TokenCallbackStreamer:
    """A transformers streamer that calls `on_token` once per generated token.

    `generate` first puts the prompt, then each new token (already on the host)."""

    def __init__(self, on_token: Callable[[], None]):
        self.on_token = on_token
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.on_token()

    def end(self) -> None:
        pass


class PyTorchBackend(Backend):
    name = "pytorch"

    def __init__(self, settings: Any = None, device: str = "cpu"):
        super().__init__(settings, device)
        self.model = None
        self.vocab_size = 0
        self.pad_token_id = 0
        # CUDA: the caching allocator's peak; CPU: the process's peak resident set (VmHWM)
        self.peak_memory_kind = "torch-cuda-max-allocated" if device == "cuda" else "process-peak-rss"

    # -- loading -----------------------------------------------------------------
    def load(self, variant: VariantManifest | Mapping[str, Any]) -> LoadInfo:
        import torch

        from .loading import load_model

        threads = self.settings.threads
        if threads:
            torch.set_num_threads(int(threads))
        start = time.perf_counter()
        self.model, info = load_model(variant, self.device)
        self.model.eval()
        config = self.model.config
        self.vocab_size = int(config.vocab_size)
        pad = getattr(config, "pad_token_id", None)
        eos = getattr(config, "eos_token_id", None)
        if isinstance(eos, list):
            eos = eos[0]
        self.pad_token_id = pad if pad is not None else (eos if eos is not None else 0)
        self.synchronize()
        if info.load_s is None:
            info.load_s = time.perf_counter() - start
        return info

    def prepare_inputs(self, batch_size: int, prompt_tokens: int, seed: int) -> dict[str, Any]:
        import torch

        generator = torch.Generator().manual_seed(seed)
        # ids 3.. avoid the special tokens (unk, bos, eos) of our tokenizers
        ids = torch.randint(3, self.vocab_size, (batch_size, prompt_tokens), generator=generator)
        device = self.model.device if self.model is not None else self.device
        return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}

    def generation_kwargs(self, new_tokens: int) -> dict[str, Any]:
        """Arguments to `generate`; subclasses (compiled) add cache and compile settings."""
        return {
            "max_new_tokens": new_tokens,
            "min_new_tokens": new_tokens,  # EOS cannot end a sequence early
            "do_sample": False,
            "pad_token_id": self.pad_token_id,
        }

    def generate(self, inputs: dict[str, Any], new_tokens: int, on_token: Callable[[], None] | None = None) -> int:
        import torch

        kwargs = self.generation_kwargs(new_tokens)
        if on_token is not None:
            kwargs["streamer"] = _TokenCallbackStreamer(on_token)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        produced = int(output.shape[1] - inputs["input_ids"].shape[1])
        if produced != new_tokens:
            raise RuntimeError(f"generate produced {produced} tokens, expected {new_tokens}")
        return produced

    # -- device and memory -----------------------------------------------------------
    def synchronize(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def peak_memory_reset(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
            return
        if not reset_process_peak_rss():
            self.peak_memory_kind = "process-peak-rss-since-start"

    def peak_memory_bytes(self) -> int | None:
        if self.device == "cuda":
            import torch

            return int(torch.cuda.max_memory_allocated())
        return process_peak_rss_bytes()

    def describe(self) -> dict[str, Any]:
        import torch
        import transformers

        return {
            "name": self.name,
            "version": f"transformers {transformers.__version__}, torch {torch.__version__}",
            "settings": {
                **self.set_settings(),
                "attn_implementation": getattr(getattr(self.model, "config", None), "_attn_implementation", None),
                "torch_threads": torch.get_num_threads(),
                "device_map": str(getattr(self.model, "hf_device_map", None) or self.device),
                "peak_memory_kind": self.peak_memory_kind,
            },
        }

    def close(self) -> None:
        self.model = None
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
