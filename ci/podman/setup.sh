#!/bin/sh
# Make podman usable on a fresh Debian 12 CI machine (root, no Docker engine, no registry) and
# build the local base image the Dockerfile starts from. Idempotent: every step is skipped when
# already done, so tests may call it before each session.
#
#   ci/podman/setup.sh            -> prints the base image name on its last line
#
# Environment:
#   RESQMP_BASE_IMAGE   name of the base image to make   (default localhost/resqmp-base:bookworm)
#   DEBIAN_MIRROR       mirror for debootstrap           (default http://deb.debian.org/debian)
#   DEBIAN_SUITE        suite                            (default bookworm; python3 >= 3.10 needed)
set -eu

BASE_IMAGE="${RESQMP_BASE_IMAGE:-localhost/resqmp-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE="${DEBIAN_SUITE:-bookworm}"
CONF=/etc/containers/containers.conf

log() { echo "setup.sh: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    log "must run as root (installs packages, writes $CONF)"; exit 1
fi

# 1. packages ------------------------------------------------------------------------------
# podman + runc (crun fails here), catatonit (pods' infra/pause image is built from it), the
# network stack (netavark for `podman run` without --network host), debootstrap for the base.
PACKAGES="podman runc catatonit netavark aardvark-dns containernetworking-plugins slirp4netns uidmap fuse-overlayfs debootstrap"
missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    log "installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >&2
fi

# 2. engine settings measured to work on these machines (see NOTES.md): runc + cgroupfs, and
# ulimits low enough for the sandbox (crun and the default limits fail here).
if ! grep -q '^# resqmp ci/podman/setup.sh' "$CONF" 2>/dev/null; then
    mkdir -p /etc/containers
    [ -f "$CONF" ] && cp "$CONF" "$CONF.before-resqmp"
    cat > "$CONF" <<'CONFEOF'
# resqmp ci/podman/setup.sh: settings measured to work on the CI machines
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONFEOF
    log "wrote $CONF"
fi

# 3. local base image: no container registry is reachable, so build a minimal Debian with
# python3, venv and pip from the Debian mirror.
if podman image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE exists"
else
    root="$(mktemp -d /var/tmp/resqmp-rootfs.XXXXXX)"
    trap 'rm -rf "$root"' EXIT
    log "debootstrap $SUITE into $root (a few minutes)"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$root" "$MIRROR" >&2
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/tmp/* "$root"/var/log/*.log
    tar -C "$root" -c . | podman import \
        --change 'CMD ["/bin/bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        - "$BASE_IMAGE" >&2
    log "imported $BASE_IMAGE"
fi
echo "$BASE_IMAGE"
