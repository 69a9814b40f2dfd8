# Sourced by bin/dtf-demo and bin/run_all_tests.sh: make sure .venv has dtf and its test deps.
# Re-installs only when pyproject.toml changed since the last install; DTF_NO_INSTALL=1 skips it.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DTF_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.dtf-installed"
if [ -n "${DTF_NO_INSTALL:-}" ]; then
    :  # the caller already runs inside an environment with dtf installed
elif [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "bootstrap: pip install -e '.[test]' into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]" 2>&1 \
        | { grep -v "^WARNING: Location" || true; } >&2
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "bootstrap: pip install failed" >&2; exit 1; }
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
