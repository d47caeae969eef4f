#!/usr/bin/env bash
# Install Debian's Chromium for the browser test (tests/test_chat_page.py).
#
# Idempotent: does nothing when /usr/bin/chromium already exists. Runs
# `apt-get update` only when the package lists do not know `chromium` yet.
# Needs root (or sudo). Never downloads a browser build of its own: the
# Playwright tests drive this system browser through executable_path.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "chromium already installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "error: installing chromium needs root; run as root or install sudo" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive

# A candidate version of "(none)" or nothing at all means the lists are
# missing or stale: refresh them once.
candidate="$(apt-cache policy chromium 2>/dev/null | awk '/Candidate:/ {print $2}')"
if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
    echo "apt lists do not know chromium yet: running apt-get update"
    $SUDO apt-get update
fi

$SUDO apt-get install -y --no-install-recommends chromium

if [ ! -x "$CHROMIUM" ]; then
    echo "error: apt-get installed chromium but $CHROMIUM is missing" >&2
    exit 1
fi
echo "chromium installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
