#!/usr/bin/env bash
# setup.sh — installs the browser test's npm packages (converse.js,
# playwright-core; versions pinned by package-lock.json) into
# tests/browser/node_modules, once. `make test` runs it; the browser test
# itself uses Debian's chromium (deploy/dev/packages.txt).
set -euo pipefail
cd "$(dirname "$0")"
if [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
    exit 0
fi
if ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm
    else
        echo "setup.sh: npm is missing (apt-get install npm)" >&2
        exit 1
    fi
fi
npm ci --no-audit --no-fund --loglevel=error
