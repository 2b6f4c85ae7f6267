#!/usr/bin/env bash
# Drift check: would today's newest releases break the suite? Builds a fresh virtual
# environment with the newest versions pyproject.toml allows (not the lock), runs the tests,
# and prints the versions it tried beside the lock's, then what failed.
#
#   bash scripts/check_latest.sh                  # newest within pyproject.toml's ranges
#   bash scripts/check_latest.sh --beyond-bounds  # also the newest transformers and
#                                                 # transformer-lens past the upper bounds
#   bash scripts/check_latest.sh -- -m "not integration"   # arguments after -- go to pytest
#
# torch stays at the lock's version: a torch upgrade is a multi-GB download of a CUDA build.
# TORCH=2.14.1 tries that release too (installed last, so the project's bound cannot undo it).
# Exit status: 0 all tests passed, 1 some failed, 2 the environment could not be built.
set -uo pipefail
cd "$(dirname "$0")/.."

beyond=0
pytest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --beyond-bounds) beyond=1 ;;
    --) shift; pytest_args=("$@"); break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "check_latest: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

python=${PYTHON:-python3}
torch_version=$(sed -n 's/^torch==\([^ ;]*\).*/\1/p' constraints.txt)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1

"$python" -m venv "$work/venv" || exit 2
py="$work/venv/bin/python"
echo "== building a fresh venv: torch $torch_version, everything else the newest allowed" >&2
"$py" -m pip install --quiet "torch==$torch_version" || exit 2
"$py" -m pip install --quiet --upgrade -e ".[dev]" || exit 2
if [ "$beyond" -eq 1 ]; then
  echo "== past the upper bounds: the newest transformers and transformer-lens" >&2
  "$py" -m pip install --quiet --upgrade transformers transformer-lens 2>&1 \
    | grep -v "requires\|incompatible\|dependency resolver" >&2
fi
if [ -n "${TORCH:-}" ]; then
  echo "== torch $TORCH" >&2
  "$py" -m pip install --quiet "torch==$TORCH" 2>&1 | grep -v "requires\|incompatible\|dependency resolver" >&2
fi

echo
echo "== versions tried (lock -> tried)"
"$py" - <<'PY'
import re
from importlib.metadata import distributions
lock = {}
for line in open("constraints.txt"):
    m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
    if m:
        lock[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
seen = {}
for dist in distributions():
    name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
    seen[name] = dist.version
changed = [(n, lock[n], v) for n, v in sorted(seen.items()) if n in lock and lock[n] != v.split("+")[0]]
for name in ("torch", "transformers", "transformer-lens", "numpy", "scikit-learn", "tokenizers"):
    print(f"  {name:<18} {lock.get(name, '-'):>12} -> {seen.get(name, 'missing')}")
print(f"  ({len(changed)} of {len(lock)} locked packages differ from the lock"
      + (": " + ", ".join(f"{n} {a}->{b}" for n, a, b in changed) if changed else "") + ")")
PY

echo
echo "== probes doctor"
"$work/venv/bin/probes" doctor 2>&1 | grep -v "^ok " | grep -v "^Loading weights"

echo
echo "== tests"
"$py" -m pytest -q -p no:cacheprovider "${pytest_args[@]}" 2>&1 | tee "$work/pytest.log" | tail -n 1
status=${PIPESTATUS[0]}
grep -E "^(FAILED|ERROR) " "$work/pytest.log" | sed 's/^/  /'
echo
if [ "$status" -eq 0 ]; then
  echo "drift check: the newest versions pass"
else
  echo "drift check: the newest versions FAIL (pytest exit $status): see above"
  status=1
fi
exit "$status"
