#!/usr/bin/env bash
# Installs what the browser tests (tests/browser, `make test-browser`) drive: Debian's headless
# Chromium and its WebDriver. Selenium itself comes with the dev extra (pip install -e '.[dev]').
# Does nothing when both are present; needs root (or sudo) to install.
set -euo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-browser: /usr/bin/chromium or /usr/bin/chromedriver is missing and there is no apt-get;" \
         "install Chromium and its driver (chromium, chromium-driver) by hand" >&2
    exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null; then
        echo "install-browser: installing chromium and chromium-driver needs root" >&2
        exit 1
    fi
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver
