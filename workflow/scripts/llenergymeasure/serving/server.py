"""vLLM's OpenAI-compatible server as a real process on a free loopback port, always stopped.

`running_server(...)` is a context manager: it starts `python -m vllm.entrypoints.openai.api_server`
in its own process group (the server spawns its engine core), waits for `GET /health` to
answer 200, and on exit (normal or not) sends SIGTERM to the whole group, then SIGKILL after
a grace period, and waits for the group to be gone. The server also gets the kernel's
parent-death signal, so a job killed outright takes its server with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
SERVED_MODEL_NAME = "model"
_PR_SET_PDEATHSIG = 1

# engine setting -> server flag (booleans become bare flags or --no-<flag>)
ENGINE_FLAGS = {
    "tokenizer": "--tokenizer",
    "dtype": "--dtype",
    "load_format": "--load-format",
    "seed": "--seed",
    "max_model_len": "--max-model-len",
    "enforce_eager": "--enforce-eager",
    "tensor_parallel_size": "--tensor-parallel-size",
    "enable_prefix_caching": "--enable-prefix-caching",
    "max_num_seqs": "--max-num-seqs",
    "kv_cache_memory_bytes": "--kv-cache-memory-bytes",
    "gpu_memory_utilization": "--gpu-memory-utilization",
}


class ServerError(RuntimeError):
    """The server did not start, or died while it was needed."""


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen
    port: int
    startup_s: float
    command: list[str]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def server_command(engine: dict[str, Any], port: int, python: str = sys.executable) -> list[str]:
    """The server's command line for the engine settings of `backends.vllm.engine_settings`."""
    command = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        engine["model"],
        "--served-model-name",
        SERVED_MODEL_NAME,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--disable-uvicorn-access-log",
    ]
    for key, value in engine.items():
        flag = ENGINE_FLAGS.get(key)
        if flag is None:
            continue
        if isinstance(value, bool):
            command.append(flag if value else f"--no-{flag[2:]}")
        else:
            command += [flag, str(value)]
    return command


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the server's process group, SIGKILL it after `grace_s`; return once it is gone."""
    pgid = process.pid  # start_new_session: the server leads its own group
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.2)
            if process.poll() is not None and not group_alive(pgid):
                return
    if group_alive(pgid):
        raise ServerError(f"server process group {pgid} survived SIGKILL")


@contextlib.contextmanager
def running_server(
    engine: dict[str, Any], env: dict[str, str], log_path: str | Path, start_timeout_s: float = 300.0
) -> Iterator[Server]:
    """Start the server, wait until /health answers, yield it, and always stop it."""
    port = free_port()
    command = server_command(engine, port)
    log = open(log_path, "ab")  # noqa: SIM115 (the server writes it while it runs)
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    logger.info("server pid %d on %s:%d: %s", process.pid, LOOPBACK, port, " ".join(command))
    try:
        url = f"http://{LOOPBACK}:{port}"
        while not _healthy(url):
            if process.poll() is not None:
                raise ServerError(
                    f"the vLLM server exited with status {process.returncode} before it was ready; see {log_path}"
                )
            if time.perf_counter() - started > start_timeout_s:
                raise ServerError(
                    f"the vLLM server was not ready after {start_timeout_s:.0f} s "
                    f"(serving.server_start_timeout_s); see {log_path}"
                )
            time.sleep(0.5)
        server = Server(process, port, time.perf_counter() - started, command)
        logger.info("server ready after %.1f s", server.startup_s)
        yield server
    finally:
        stop(process)
        log.close()
        logger.info("server pid %d stopped", process.pid)
