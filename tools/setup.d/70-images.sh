#!/usr/bin/env bash
# Buildah and debootstrap for the image tests (tests/images, `make images`; devservices/images.py).
#
# No container registry and no Docker engine are reachable on these machines, so the images are built with
# Debian's daemonless `buildah` (`--isolation chroot`, storage under <repo>/.cache/images) on a Debian bookworm
# base that `debootstrap` makes from Debian's own package mirror. Needs buildah (it pulls in containers-common and
# an OCI runtime) and debootstrap; as root, the kernel's overlay driver needs nothing more (no fuse-overlayfs).
# Idempotent: installs only what is missing; builds nothing (the base is made on first use, then reused).
set -euo pipefail
source "$(cd "$(dirname "$0")/../lib" && pwd)/apt.sh"
apt_install_missing "the image builds" buildah:buildah debootstrap:debootstrap fuse-overlayfs:fuse-overlayfs \
    newuidmap:uidmap
echo "[setup] buildah $(buildah --version | cut -d' ' -f3), debootstrap $(dpkg-query -W -f='${Version}' debootstrap)"
