#!/usr/bin/env bash
# Install the programs the test suite drives for real, from Debian's packages:
# chromium (browser test of the chat page), redis-server (cluster store) and nginx
# (load balancer). Idempotent: installs only what is missing, and runs
# `apt-get update` only when the package lists do not know a package yet.
# Needs root (or sudo) and apt-get.
set -euo pipefail

declare -A BINARY=([chromium]=/usr/bin/chromium [redis-server]=/usr/bin/redis-server [nginx]=/usr/sbin/nginx)

missing=()
for pkg in chromium redis-server nginx; do
    [ -x "${BINARY[$pkg]}" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "test programs present: chromium, redis-server, nginx"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "error: installing ${missing[*]} needs root; run as root or install sudo" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no apt-get here; install ${missing[*]} with this system's package manager" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive

for pkg in "${missing[@]}"; do
    candidate="$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
        echo "apt lists do not know $pkg yet: running apt-get update"
        $SUDO apt-get update
        break
    fi
done
echo "installing ${missing[*]}"
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
# A fresh install may start the packages' system services; the tests start their own.
for svc in "${missing[@]}"; do
    case "$svc" in
        redis-server|nginx)
            if command -v service >/dev/null 2>&1; then $SUDO service "$svc" stop >/dev/null 2>&1 || true; fi ;;
    esac
done
for pkg in "${missing[@]}"; do
    [ -x "${BINARY[$pkg]}" ] || { echo "error: $pkg installed but ${BINARY[$pkg]} is missing" >&2; exit 1; }
done
echo "installed ${missing[*]}"
