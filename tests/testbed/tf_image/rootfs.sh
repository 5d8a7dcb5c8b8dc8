#!/usr/bin/env bash
# Test-bed only: a Debian bullseye (Python 3.9) root file system imported as a Docker image,
# standing in for the "OS base image from a mirror" that tf_workspace's pypi source starts from.
# No registry is reachable here, so the image is made with debootstrap + docker import.
# Cached by tag: an image whose recipe label matches is kept; a changed recipe rebuilds.
set -euo pipefail
tag=${TFLAB_TF_ROOTFS_TAG:-tflab-testbed/debian:bullseye-minbase}
mirror=${TFLAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
include=python3,python3-pip,ca-certificates
recipe=$(printf '%s|%s|%s' bullseye minbase "$include" | sha256sum | cut -c1-16)

current=$(docker image inspect --format '{{ index .Config.Labels "io.tflab.recipe" }}' "$tag" 2>/dev/null || true)
if [ "$current" = "$recipe" ]; then
  echo "rootfs image $tag is current (recipe $recipe)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is needed: apt-get install debootstrap" >&2; exit 1; }
dir=$(mktemp -d /var/tmp/tflab-bullseye-XXXXXX)
trap 'rm -rf "$dir"' EXIT
start=$(date +%s)
debootstrap --variant=minbase --include="$include" bullseye "$dir/rootfs" "$mirror" >"$dir/debootstrap.log" 2>&1 \
  || { tail -20 "$dir/debootstrap.log" >&2; exit 1; }
rm -rf "$dir/rootfs/var/lib/apt/lists/"* "$dir/rootfs/var/cache/apt/archives/"*.deb
tar -C "$dir/rootfs" -c . | docker import \
  --change "LABEL io.tflab.recipe=$recipe" \
  --change 'LABEL io.tflab.testbed=double-of-os-mirror-image' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "built $tag (recipe $recipe) in $(( $(date +%s) - start )) s"
