#!/bin/sh
# Debian's Chromium for the dashboard tests (tests/browser.py drives it headless through
# Playwright; Playwright's own browser download cannot run here). Idempotent; needs root + apt.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install.sh: must run as root (apt-get install chromium)" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# another apt client may hold the lock for a while: wait for it rather than fail
apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
/usr/bin/chromium --version >&2
