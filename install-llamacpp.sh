#!/usr/bin/env bash
# Install llama-cpp-python (pinned) and the matching HF->GGUF converter, caching both.
#
# llama-cpp-python ships no prebuilt wheel for Linux on PyPI: pip builds llama.cpp from
# source (about 7 minutes on 2 cores). The HF->GGUF converter (convert_hf_to_gguf.py, its
# `conversion` package and the bundled gguf-py) is in the package's source distribution
# only, not in the installed wheel. This script therefore
#   1. downloads the pinned sdist once (pip download --no-binary :all:),
#   2. extracts the converter into   $CACHE/convert/
#   3. builds a wheel from that sdist into $CACHE/wheels/<cpu-and-cmake-key>/ (the build
#      targets the local CPU, so the cache is keyed by CPU flags and CMAKE_ARGS),
#   4. installs the wheel into $PYTHON (diskcache pinned here; its other dependencies are in requirements.txt),
# skipping every step whose result is already there. Re-running it is cheap.
#
# Environment:
#   PYTHON                       interpreter to install into (default: ./.venv/bin/python, else python3)
#   LLENERGYMEASURE_CACHE        cache root (default: ${XDG_CACHE_HOME:-~/.cache}/llenergymeasure)
#   LLAMACPP_SDIST               use this llama_cpp_python-<version>.tar.gz instead of downloading
#   CMAKE_ARGS                   passed to the llama.cpp build (e.g. -DGGML_CUDA=on)
# Options:
#   --converter-only             only steps 1-2 (for envs that install llama-cpp-python otherwise)
set -euo pipefail

VERSION=0.3.36            # keep in step with envs/llamacpp.yaml
DISKCACHE_VERSION=5.6.3   # llama-cpp-python's one runtime dependency not in requirements.txt
HERE=$(cd "$(dirname "$0")" && pwd)
if [[ -z "${PYTHON:-}" ]]; then  # default: the repository's venv (made by install.sh), else python3
    if [[ -x "$HERE/.venv/bin/python" ]]; then PYTHON="$HERE/.venv/bin/python"; else PYTHON=python3; fi
fi
CACHE_ROOT=${LLENERGYMEASURE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llenergymeasure}
CACHE="$CACHE_ROOT/llama.cpp-$VERSION"
CONVERTER_ONLY=0

for arg in "$@"; do
    case "$arg" in
        --converter-only) CONVERTER_ONLY=1 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "install-llamacpp.sh: unknown option '$arg' (allowed: --converter-only)" >&2; exit 2 ;;
    esac
done

log() { echo "[install-llamacpp] $*"; }
mkdir -p "$CACHE"

# 1. the pinned source distribution (fetched only when step 2 or 3 needs it)
SDIST="$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz"
fetch_sdist() {
    if [[ -n "${LLAMACPP_SDIST:-}" ]]; then
        [[ -f "$LLAMACPP_SDIST" ]] || { echo "LLAMACPP_SDIST=$LLAMACPP_SDIST does not exist; unset it to download the sdist" >&2; exit 1; }
        SDIST="$LLAMACPP_SDIST"
    elif [[ ! -f "$SDIST" ]]; then
        log "downloading llama-cpp-python==$VERSION sdist"
        rm -rf "$CACHE/sdist.partial" && mkdir -p "$CACHE/sdist.partial" "$CACHE/sdist"
        "$PYTHON" -m pip download --quiet --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$CACHE/sdist.partial"
        mv "$CACHE/sdist.partial/llama_cpp_python-$VERSION.tar.gz" "$SDIST"
        rm -rf "$CACHE/sdist.partial"
    fi
}

# 2. the converter (extracted into a temporary directory, then moved into place)
if [[ ! -f "$CACHE/convert/convert_hf_to_gguf.py" ]]; then
    fetch_sdist
    log "extracting convert_hf_to_gguf.py, conversion/ and gguf-py/ into $CACHE/convert"
    staging=$(mktemp -d "$CACHE/convert.XXXXXX")
    vendor="llama_cpp_python-$VERSION/vendor/llama.cpp"
    tar -xzf "$SDIST" -C "$staging" \
        "$vendor/convert_hf_to_gguf.py" "$vendor/conversion" "$vendor/gguf-py" "$vendor/LICENSE"
    rm -rf "$CACHE/convert"
    mv "$staging/$vendor" "$CACHE/convert"
    rm -rf "$staging"
fi
[[ $CONVERTER_ONLY == 1 ]] && { log "converter ready in $CACHE/convert"; exit 0; }

# 3. the wheel, built once per CPU feature set and CMAKE_ARGS
installed=$("$PYTHON" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null || true)
if [[ "$installed" == "$VERSION" ]]; then
    log "llama-cpp-python $VERSION already installed in $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    exit 0
fi
key=$( { uname -m; grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true; echo "${CMAKE_ARGS:-}"; } | sha256sum | cut -c1-12)
WHEELS="$CACHE/wheels/$key"
wheel=$(ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [[ -z "$wheel" ]]; then
    fetch_sdist
    log "building the llama-cpp-python $VERSION wheel (compiles llama.cpp: several minutes)"
    "$PYTHON" -m pip wheel --no-deps "$SDIST" -w "$WHEELS.partial"
    mkdir -p "$WHEELS"
    mv "$WHEELS.partial"/llama_cpp_python-"$VERSION"-*.whl "$WHEELS"/
    rm -rf "$WHEELS.partial"
    wheel=$(ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl | head -n1)
fi

# 4. install (numpy, jinja2, typing-extensions: pinned by requirements.txt when installed first)
log "installing $wheel"
"$PYTHON" -m pip install --quiet "$wheel" "diskcache==$DISKCACHE_VERSION"
"$PYTHON" -c "import llama_cpp; print('[install-llamacpp] llama-cpp-python', llama_cpp.__version__, 'ok')"
