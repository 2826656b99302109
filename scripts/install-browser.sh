#!/usr/bin/env bash
# Debian's Chromium for the gateway's browser test (driven by Playwright with executable_path;
# Playwright's own browser download is never used). Installs only when it is missing.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "chromium is missing; install it with: sudo apt-get install -y chromium" >&2
  exit 0
fi
# Another install on the machine may hold dpkg's lock: wait for it rather than fail.
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
apt_get install -y --no-install-recommends chromium >/dev/null || {
  apt_get update >/dev/null && apt_get install -y --no-install-recommends chromium >/dev/null
}
