#!/usr/bin/env bash
# Install Autobahn|Testsuite (Python 2.7) into .autobahn-venv at the project root, unless it is there already.
# Python 2.7 comes from pyenv (or $AUTOBAHN_PYTHON27); virtualenv 16, the last to make 2.7 environments, is
# fetched into a temporary directory for the purpose. The versions are pinned in requirements-py27.txt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/.autobahn-venv"
requirements="$here/requirements-py27.txt"

# Installed from these very pins already: nothing to do.
if [ -x "$venv/bin/wstest" ] && cmp -s "$requirements" "$venv/requirements-py27.txt"; then
    exit 0
fi

python27="${AUTOBAHN_PYTHON27:-}"
if [ -z "$python27" ] && command -v pyenv >/dev/null; then
    python27="$(pyenv root)/versions/2.7.18/bin/python"
fi
if [ -z "$python27" ] || ! [ -x "$python27" ]; then
    echo "install.sh: no Python 2.7 (set AUTOBAHN_PYTHON27 to one)" >&2
    exit 1
fi

rm -rf "$venv"
boot="$(mktemp -d)"
trap 'rm -rf "$boot"' EXIT
"$python27" -m pip install -q --disable-pip-version-check --no-warn-script-location --target "$boot" "virtualenv==16.7.12"
PYTHONPATH="$boot" "$python27" -m virtualenv -q "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
cp "$requirements" "$venv/requirements-py27.txt"
