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
# The dashboard's browser tests drive Debian's chromium; install it where we may (root, apt).
if [ ! -x /usr/bin/chromium ] && [ -z "${DTF_NO_INSTALL:-}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bootstrap: apt-get install chromium (for the dashboard's browser tests)" >&2
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } >/dev/null 2>&1 \
            || echo "bootstrap: could not install chromium; the browser tests will fail" >&2
    else
        echo "bootstrap: /usr/bin/chromium missing; install Debian's chromium for the browser tests" >&2
    fi
fi
