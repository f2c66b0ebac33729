"""A real one-node SLURM cluster on localhost, for tests.

`LocalSlurmCluster` installs Debian's ``slurmctld slurmd slurm-client munge`` with
apt-get when they are missing, writes ``/etc/slurm/slurm.conf`` for one node at
127.0.0.1 (the job-step plugin strips ``SLURM_CONF`` before calling ``srun``, so the
file must be at the default path), starts ``munged``, ``slurmctld`` and ``slurmd`` in
the foreground as child processes, and waits until ``sinfo`` reports the node idle.

Everything else (munge key and socket, state, spool, logs) lives in a private
temporary directory. ``stop()`` cancels the cluster's jobs, stops each daemon it
started by PID, and removes the slurm.conf it wrote and the temporary directory.

No slurmdbd runs, so ``sacct`` cannot answer: clients must query job status with
``squeue`` (snakemake-executor-plugin-slurm: ``slurm-status-command: squeue``);
``MinJobAge`` is set high so finished jobs stay visible to ``squeue``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")
CONF_MARKER = "# written by llenergymeasure tests/slurm_cluster.py"
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
REQUIRED_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "srun")
PARTITION = "llemtest"
LOCK_FILE = Path(tempfile.gettempdir()) / "llenergymeasure-slurm-cluster.lock"


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be provided here (not root, no apt-get or packages, a foreign SLURM)."""


class ClusterStartError(RuntimeError):
    """The packages are there but a daemon did not come up: a real failure, with the logs."""


def _which_all(programs: tuple[str, ...]) -> list[str]:
    """Names of the programs not found on PATH (or in /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [p for p in programs if shutil.which(p, path=path) is None]


def unavailable_reason() -> str | None:
    """Why this machine cannot host the test cluster, or None when it can."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (installs packages with apt-get and writes /etc/slurm/slurm.conf)"
    if _which_all(REQUIRED_PROGRAMS) and shutil.which("apt-get") is None:
        return "SLURM is not installed and apt-get is unavailable to install it"
    if SLURM_CONF.exists() and CONF_MARKER not in SLURM_CONF.read_text(errors="replace"):
        return f"{SLURM_CONF} belongs to a real SLURM installation; not touching it"
    return None


def ensure_installed(timeout_s: float = 600.0) -> None:
    """Install the Debian SLURM and munge packages when any program is missing.

    Runs ``apt-get update`` only when the first install attempt fails (stale or
    absent package lists).
    """
    if not _which_all(REQUIRED_PROGRAMS):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    first = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout_s)
    if first.returncode != 0:
        update = subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=timeout_s)
        if update.returncode != 0:
            raise ClusterUnavailable(f"apt-get update failed: {update.stderr.strip()[-500:]}")
        second = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout_s)
        if second.returncode != 0:
            raise ClusterUnavailable(f"apt-get install failed: {second.stderr.strip()[-500:]}")
    missing = _which_all(REQUIRED_PROGRAMS)
    if missing:
        raise ClusterUnavailable(f"still missing after apt-get install: {', '.join(missing)}")


def _node_resources() -> tuple[int, int]:
    """(CPUs, RealMemory in MiB) to declare for the single node."""
    cpus = os.cpu_count() or 1
    mem_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    # Leave headroom for the OS: SLURM drains a node whose real memory is below the declared one.
    return cpus, max(512, int(mem_kib / 1024 * 0.9))


@dataclass
class LocalSlurmCluster:
    """A one-node SLURM cluster on 127.0.0.1 whose daemons are this object's children."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="llem-slurm-")))
    node_name: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    partition: str = PARTITION
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    start_s: float | None = None
    stop_s: float | None = None
    _lock_fd: int | None = None
    _wrote_conf: bool = False

    # ---------------------------------------------------------------- configuration
    @property
    def munge_socket(self) -> Path:
        return self.workdir / "munge" / "munge.socket"

    def slurm_conf_text(self) -> str:
        """The slurm.conf for this cluster (all state under `workdir`)."""
        cpus, mem_mib = _node_resources()
        w = self.workdir
        return "\n".join(
            [
                CONF_MARKER,
                "ClusterName=llemtest",
                "SlurmctldHost=localhost(127.0.0.1)",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={self.munge_socket}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "MpiDefault=none",
                "SchedulerType=sched/backfill",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "ReturnToService=2",
                "MinJobAge=600",
                "SchedulerParameters=defer_batch",
                f"StateSaveLocation={w / 'state'}",
                f"SlurmdSpoolDir={w / 'spool'}",
                f"SlurmctldPidFile={w / 'slurmctld.pid'}",
                f"SlurmdPidFile={w / 'slurmd.pid'}",
                f"SlurmctldLogFile={w / 'slurmctld.log'}",
                f"SlurmdLogFile={w / 'slurmd.log'}",
                "SlurmctldDebug=info",
                "SlurmdDebug=info",
                f"NodeName={self.node_name} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mib} State=UNKNOWN",
                f"PartitionName={self.partition} Nodes={self.node_name} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )

    # ---------------------------------------------------------------- lifecycle
    def start(self, timeout_s: float = 90.0) -> LocalSlurmCluster:
        """Install if needed, write slurm.conf, start the daemons, wait for an idle node."""
        reason = unavailable_reason()
        if reason:
            raise ClusterUnavailable(reason)
        t0 = time.monotonic()
        self._lock_fd = os.open(LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # one test cluster per machine at a time
        try:
            ensure_installed()
            for sub in ("state", "spool", "munge"):
                (self.workdir / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(self.workdir, 0o755)
            os.chmod(self.workdir / "munge", 0o700)
            self._write_munge_key()
            SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
            SLURM_CONF.write_text(self.slurm_conf_text())
            self._wrote_conf = True
            self._spawn(
                "munged",
                [
                    "munged",
                    "--foreground",
                    "--force",
                    f"--socket={self.munge_socket}",
                    f"--key-file={self.workdir / 'munge' / 'munge.key'}",
                    f"--pid-file={self.workdir / 'munge' / 'munged.pid'}",
                    f"--log-file={self.workdir / 'munge' / 'munged.log'}",
                    f"--seed-file={self.workdir / 'munge' / 'munged.seed'}",
                ],
            )
            self._wait_for(lambda: self.munge_socket.exists(), 15, "munged socket")
            self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
            self._wait_for(self._controller_up, 30, "slurmctld answering")
            self._spawn("slurmd", ["slurmd", "-D", "-N", self.node_name])
            remaining = max(5.0, timeout_s - (time.monotonic() - t0))
            self._wait_for(self._node_idle, remaining, f"node {self.node_name} idle in sinfo")
        except BaseException:
            self.stop()
            raise
        self.start_s = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Cancel jobs, stop every daemon this object started (by PID), remove its files."""
        t0 = time.monotonic()
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--partition", self.partition], capture_output=True, timeout=30)
            self._wait_for(lambda: not self.job_ids(), 30, "jobs cancelled", raise_on_timeout=False)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        if self._wrote_conf and SLURM_CONF.exists() and CONF_MARKER in SLURM_CONF.read_text():
            SLURM_CONF.unlink()
        self._wrote_conf = False
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        self.stop_s = time.monotonic() - t0

    def __enter__(self) -> LocalSlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- queries
    def job_ids(self) -> list[str]:
        """IDs of this cluster's jobs that squeue still shows as pending or running."""
        out = subprocess.run(
            ["squeue", "--noheader", "--format=%i", "--states=PENDING,RUNNING,COMPLETING"],
            capture_output=True,
            text=True,
            timeout=15,
        )
        return out.stdout.split() if out.returncode == 0 else []

    def submitted_job_count(self) -> int:
        """How many jobs the controller has accepted since it started (all states)."""
        out = subprocess.run(
            ["squeue", "--noheader", "--format=%i", "--states=all"],
            capture_output=True,
            text=True,
            timeout=15,
        )
        return len(out.stdout.split()) if out.returncode == 0 else 0

    def logs(self) -> str:
        """Tail of every daemon log, for failure messages."""
        parts = []
        for log in sorted(self.workdir.rglob("*.log")):
            parts.append(f"== {log.name}\n" + log.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    # ---------------------------------------------------------------- helpers
    def _write_munge_key(self) -> None:
        key = self.workdir / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.stdout", "wb")  # noqa: SIM115 (the daemon writes it while it runs)
        self.processes[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def _controller_up(self) -> bool:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
        return out.returncode == 0 and "UP" in out.stdout

    def _node_idle(self) -> bool:
        out = subprocess.run(
            ["sinfo", "--noheader", "--nodes", self.node_name, "--format=%T"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def _wait_for(self, check, timeout_s: float, what: str, raise_on_timeout: bool = True) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None and raise_on_timeout:
                    raise ClusterStartError(
                        f"{name} exited with {proc.returncode} while waiting for {what}\n{self._daemon_output()}"
                    )
            try:
                if check():
                    return
            except (subprocess.TimeoutExpired, OSError):
                pass
            time.sleep(0.5)
        if raise_on_timeout:
            raise ClusterStartError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{self._daemon_output()}")

    def _daemon_output(self) -> str:
        parts = [self.logs()]
        for out in sorted(self.workdir.glob("*.stdout")):
            parts.append(f"== {out.name}\n" + out.read_text(errors="replace")[-2000:])
        return "\n".join(parts)
