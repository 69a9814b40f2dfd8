#!/bin/sh
# The container images' install steps, in one place: the Dockerfiles run them, and
# tests/deploy/test_image_install.py runs the very same steps into a clean venv, so a broken step
# fails CI without a container engine.
#
#   install.sh wheels SRC WHEELHOUSE    build dtf's wheel and a wheel of every dependency (needs the index)
#   install.sh venv WHEELHOUSE PREFIX   a fresh venv at PREFIX with dtf from WHEELHOUSE only (no index)
#   install.sh configs SRC DEST         the example configs, to edit (the wheel carries its own copy, for
#                                       `dtf up`), and the image's broker.toml into DEST
set -eu
step="${1:?usage: install.sh wheels|venv|configs ...}"
shift
PYTHON="${PYTHON:-python3}"
case "$step" in
wheels)
    src="$1" wheelhouse="$2"
    mkdir -p "$wheelhouse"
    "$PYTHON" -m pip wheel --no-cache-dir --quiet --wheel-dir "$wheelhouse" "$src"
    ;;
venv)
    wheelhouse="$1" prefix="$2"
    "$PYTHON" -m venv "$prefix"
    # pip byte-compiles as it installs, so a read-only root filesystem at run time costs nothing.
    "$prefix/bin/python" -m pip install --no-cache-dir --quiet --no-index --find-links "$wheelhouse" dtf
    ;;
configs)
    src="$1" dest="$2"
    mkdir -p "$dest"
    cp -R "$src/configs/." "$dest/"
    rm -f "$dest/__init__.py"  # what makes configs/ the package dtf_configs in the wheel; no config
    cp "$src/deploy/docker/broker.toml" "$dest/broker.toml"
    ;;
*)
    echo "install.sh: unknown step '$step' (wheels, venv or configs)" >&2
    exit 2
    ;;
esac
