#!/usr/bin/env bash
# Regenerate constraints.txt, the lock: exact versions of the whole dependency tree, resolved
# in a fresh virtual environment from pyproject.toml's ranges (extras dev, notebooks, ray and llama;
# llama-cpp-python builds from source unless pip has its wheel cached).
#
#   bash scripts/update_lock.sh            # then run the tests and commit constraints.txt
#   TORCH=2.13.0 PYTHON=python3.11 bash scripts/update_lock.sh
#
# torch is installed first at $TORCH (default: the version the lock already pins), as the
# README does, so the lock records a CPU build's dependencies and not a CUDA one's; the lock's
# torch line carries no local build tag, so a CUDA build of the same version satisfies it.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
torch_version=${TORCH:-$(sed -n 's/^torch==\([^ ;]*\).*/\1/p' constraints.txt 2>/dev/null || true)}
torch_version=${torch_version:-2.13.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

export PIP_DISABLE_PIP_VERSION_CHECK=1
"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip)
echo "lock: resolving in a fresh venv (python $("$work/venv/bin/python" -V 2>&1 | cut -d' ' -f2), torch $torch_version)" >&2
"${pip[@]}" install --quiet "torch==$torch_version"
"${pip[@]}" install --quiet -e ".[dev,notebooks,ray]"
# llama-cpp-python builds llama.cpp from source: with the same flags as .ci/run, so that pip's
# wheel cache serves both (LOCK_LLAMA=0 leaves the llama extra's lines as they are).
llama_lines=""
if [ "${LOCK_LLAMA:-1}" = 1 ]; then
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
    "${pip[@]}" install --quiet -e ".[dev,notebooks,ray,llama]"
else
  llama_lines=$(grep -E '^(llama_cpp_python|diskcache)==' constraints.txt || true)
fi

{
  echo "# The lock: every package of probes[dev,notebooks,ray,llama] at the version CI tests."
  echo "# Use with pip's -c: pip install -c constraints.txt -e \".[dev]\""
  echo "# Regenerate with scripts/update_lock.sh after a change to pyproject.toml's dependencies."
  echo "# Resolved with $("$work/venv/bin/python" -V 2>&1) on $(uname -m) Linux."
  { "${pip[@]}" freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'
    if [ -n "$llama_lines" ]; then echo "$llama_lines"; fi; } | LC_ALL=C sort -f -u
} > constraints.txt.tmp
mv constraints.txt.tmp constraints.txt
echo "lock: wrote constraints.txt ($(grep -c '==' constraints.txt) packages)" >&2
