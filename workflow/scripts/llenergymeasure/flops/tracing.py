"""FLOPs of generate() traced with PyTorch's FlopCounterMode on the meta device.

The model transformers builds for the config (`structure.build_meta_model`: eager attention,
batched experts) runs forwards on meta tensors, so nothing is computed or allocated and the
counter sees exactly the matmuls the modules issue. One sequence is traced (every op is per
sequence, so a batch of B costs B times as much; the family sweep checks this at B = 2):

* the prefill forward over the S prompt tokens (`logits_to_keep=1`, as generate passes it);
* decode forwards of one token at chosen cache lengths c. A layer's decode cost is affine in
  the keys it attends to, which is affine in c except at a sliding window's edge (c = W - 1),
  so the decode range c = S .. S+T-2 is cut at those edges into segments, each traced at both
  ends and summed as an arithmetic series; one interior point per segment is traced too and
  must lie on the line, else every step is traced (up to MAX_STEPS_TRACED) or the count is
  refused. With a static cache (`static_cache_len`) every query attends the whole cache.
  A family whose generation_config turns the cache off (MPT) re-runs the whole sequence each
  step: a quadratic in its length, fitted the same way with one point more.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

from .structure import build_meta_model

MAX_STEPS_TRACED = 64  # decode steps traced one by one when the affine check fails
_TRACES: dict[tuple, Trace] = {}


class TraceError(RuntimeError):
    """The model could not be run under the counter on the meta device."""


@dataclass(frozen=True)
class Trace:
    prefill: int  # one sequence
    decode: int  # one sequence, all T-1 steps
    forwards: int  # forwards run (counted and cache-filling)
    seconds: float  # wall time of the trace (model build excluded)
    how: str  # "segments" or "every step"


def _forward(model, tokens: int, cache, count: bool, use_cache: bool = True, past: int = 0) -> tuple[int, object]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.zeros((1, tokens), dtype=torch.long, device="meta")
    # generate always passes a mask over past + new tokens (without one, models probe the ids for padding)
    mask = torch.ones((1, past + tokens), dtype=torch.long, device="meta")
    kwargs = {"input_ids": ids, "attention_mask": mask, "use_cache": use_cache}
    if use_cache:
        kwargs["past_key_values"] = cache
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        kwargs["logits_to_keep"] = 1
    counter = FlopCounterMode(display=False)
    with torch.no_grad():
        if count:
            with counter:
                out = model(**kwargs)
        else:
            out = model(**kwargs)
    return (counter.get_total_flops() if count else 0), getattr(out, "past_key_values", None)


def _new_cache(model, static_cache_len: int | None):
    if static_cache_len is None:
        return None  # the model makes the cache generate would (dynamic, or its own hybrid kind)
    from transformers import StaticCache

    return StaticCache(config=model.config, max_cache_len=static_cache_len)


class _DecodeCosts:
    """f(c): FLOPs of one decode forward with c tokens already cached (memoised)."""

    def __init__(self, model, prompt: int, prefill_cache, static_cache_len: int | None):
        self.model, self.static = model, static_cache_len
        self.known: dict[int, int] = {}
        self.forwards = 0
        self._prefill_cache = (prompt, prefill_cache)

    def __call__(self, cached: int) -> int:
        if cached not in self.known:
            prompt, cache = self._prefill_cache
            if cache is not None and cached == prompt:
                self._prefill_cache = (prompt, None)  # reuse the prefill's cache once
            else:
                _, cache = _forward(self.model, cached, _new_cache(self.model, self.static), count=False)
                self.forwards += 1
            self.known[cached], _ = _forward(self.model, 1, cache, count=True, past=cached)
            self.forwards += 1
        return self.known[cached]


def _windows(cache) -> set[int]:
    layers = getattr(cache, "layers", None) or []
    found = {getattr(layer, "sliding_window", None) for layer in layers}
    return {w for w in found if isinstance(w, int) and w > 0}


def _segment_sum(cost, lo: int, hi: int, degree: int = 1) -> int | None:
    """Sum of cost(c) for c in lo..hi if it is a polynomial of `degree` there (checked at one
    more point than the fit needs), else None. Exact rational arithmetic."""
    from fractions import Fraction

    n = hi - lo + 1
    if n <= degree + 2:
        return sum(cost(c) for c in range(lo, hi + 1))
    xs = sorted({lo + round(i * (hi - lo) / degree) for i in range(degree + 1)})
    ys = [cost(x) for x in xs]

    def at(c: int) -> Fraction:
        total = Fraction(0)
        for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):
            term = Fraction(yi)
            for j, xj in enumerate(xs):
                if j != i:
                    term *= Fraction(c - xj, xi - xj)
            total += term
        return total

    check = next(c for c in ((lo + hi) // 2, (lo + hi) // 2 + 1, lo + 1) if c not in xs)
    if at(check) != cost(check):
        return None
    total = sum(at(c) for c in range(lo, hi + 1))
    return int(total) if total.denominator == 1 else None


def _uncached_costs(model, prompt: int):
    """f(c): FLOPs of generate's step without a cache: a full forward over the c + 1 tokens so far."""
    known: dict[int, int] = {}

    def cost(cached: int) -> int:
        if cached not in known:
            known[cached], _ = _forward(model, cached + 1, None, count=True, use_cache=False)
        return known[cached]

    cost.known = known
    return cost


def trace_generate(hf_config: dict, prompt: int, new: int, static_cache_len: int | None = None) -> Trace:
    """Trace prefill and decode of one sequence (see the module docstring); cached per shape."""
    import json

    key = (json.dumps(hf_config, sort_keys=True, default=str), prompt, new, static_cache_len)
    if key in _TRACES:
        return _TRACES[key]
    try:
        model = build_meta_model(hf_config)
        start = time.perf_counter()
        # generate() follows the model's generation_config: some families (e.g. MPT) run without a
        # cache, recomputing the whole sequence every step (cost quadratic in its length, no edges)
        cached = static_cache_len is not None or getattr(model.generation_config, "use_cache", True) is not False
        prefill, cache = _forward(model, prompt, _new_cache(model, static_cache_len), count=True, use_cache=cached)
        if cached and cache is None:
            raise TraceError(
                f"{type(model).__name__} returns no KV cache (recurrent or state-space layers, or "
                "no cache support), which the tracer does not follow"
            )
        cost = _DecodeCosts(model, prompt, cache, static_cache_len) if cached else _uncached_costs(model, prompt)
        lo, hi = prompt, prompt + new - 2  # tokens cached before each decode step
        decode, how = 0, "segments" if cached else "uncached"
        if hi >= lo:
            edges = sorted(w - 1 for w in _windows(cache) if lo <= w - 1 < hi) if cached else []
            bounds, start_c = [], lo
            for edge in edges:
                bounds.append((start_c, edge))
                start_c = edge + 1
            bounds.append((start_c, hi))
            parts = [_segment_sum(cost, a, b, 1 if cached else 2) for a, b in bounds]
            if all(p is not None for p in parts):
                decode = sum(parts)
            elif hi - lo + 1 <= MAX_STEPS_TRACED:
                decode, how = sum(cost(c) for c in range(lo, hi + 1)), "every step"
            else:
                raise TraceError(
                    f"decode cost is not affine in the cache length between sliding-window edges and "
                    f"{hi - lo + 1} steps exceed the {MAX_STEPS_TRACED} traced one by one"
                )
    except TraceError:
        raise
    except Exception as exc:  # any failure to run the module on meta tensors
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TraceError(
            f"the model could not be traced on the meta device ({type(exc).__name__}: {message[:200]})"
        ) from exc
    forwards = cost.forwards if cached else len(cost.known)
    trace = Trace(prefill, decode, 1 + forwards, time.perf_counter() - start, how)
    _TRACES[key] = trace
    return trace
