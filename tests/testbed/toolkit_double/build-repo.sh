#!/usr/bin/env bash
# Build a signed, flat apt repository of NVIDIA Container Toolkit TEST DOUBLES (see README.md).
# Usage: build-repo.sh [OUTDIR]   (prints OUTDIR; default: a cache dir keyed by content hash)
# Needs: dpkg-deb, dpkg-scanpackages (dpkg-dev), gpg, gzip. Tests only: never for real hosts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
versions=${TOOLKIT_DOUBLE_VERSIONS:-"1.17.8-1 1.17.7-1"}
arch=${TOOLKIT_DOUBLE_ARCH:-$(dpkg --print-architecture)}

for tool in dpkg-deb dpkg-scanpackages gpg gzip; do
  command -v "$tool" >/dev/null || { echo "build-repo.sh: $tool is missing (apt-get install dpkg-dev gpg)" >&2; exit 1; }
done

# The cache key covers everything that shapes the output.
hash=$( (cd "$here" && find . -type f ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum; echo "$versions $arch") | sha256sum | cut -c1-16)
out=${1:-${TFLAB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tflab}/toolkit-double/$hash}
repo=$out/stable/deb/$arch
if [ -f "$out/.complete" ] && [ "$(cat "$out/.complete")" = "$hash" ]; then
  echo "$out"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$out"
mkdir -p "$repo"

# build_pkg NAME VERSION DEPENDS DESCRIPTION [SRC:DEST ...]
build_pkg() {
  local name=$1 version=$2 depends=$3 description=$4
  shift 4
  local root=$work/$name-$version
  mkdir -p "$root/DEBIAN" "$root/usr/share/doc/$name"
  {
    echo "Package: $name"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: tflab-provision tests <tests@tflab.invalid>"
    [ -n "$depends" ] && echo "Depends: $depends"
    echo "Section: utils"
    echo "Priority: optional"
    echo "Description: TEST DOUBLE of NVIDIA's $name (tflab-provision tests only)"
    echo " $description"
  } >"$root/DEBIAN/control"
  cp "$here/README.md" "$root/usr/share/doc/$name/README.test-double.md"
  local pair src dest
  for pair in "$@"; do
    src=${pair%%:*}
    dest=${pair#*:}
    mkdir -p "$root$(dirname "$dest")"
    sed "s/@VERSION@/${version%-*}/g" "$here/files/$src" >"$root$dest"
    chmod --reference="$here/files/$src" "$root$dest"
    case "$dest" in /etc/*) echo "$dest" >>"$root/DEBIAN/conffiles" ;; esac
  done
  dpkg-deb --root-owner-group --build "$root" "$repo/${name}_${version}_${arch}.deb" >/dev/null
}

for version in $versions; do
  build_pkg libnvidia-container1 "$version" "" "Documentation only: there is no libnvidia-container here."
  build_pkg libnvidia-container-tools "$version" "libnvidia-container1 (>= $version)" \
    "nvidia-container-cli that reports there is no GPU." \
    nvidia-container-cli:/usr/bin/nvidia-container-cli
  build_pkg nvidia-container-toolkit-base "$version" "" \
    "nvidia-container-runtime that logs and execs runc; nvidia-ctk that parses config.toml." \
    nvidia-container-runtime:/usr/bin/nvidia-container-runtime \
    nvidia-ctk:/usr/bin/nvidia-ctk \
    config.toml:/etc/nvidia-container-runtime/config.toml
  build_pkg nvidia-container-toolkit "$version" \
    "nvidia-container-toolkit-base (= $version), libnvidia-container-tools (>= $version)" \
    "Ties the doubles together the way the real package depends on them."
done

(cd "$repo" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null >Packages && gzip -9nk Packages)

{
  echo "Origin: tflab-test-double"
  echo "Label: NVIDIA Container Toolkit TEST DOUBLE"
  echo "Architectures: $arch"
  echo "Date: $(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S UTC')"
  for algo in MD5Sum:md5sum SHA256:sha256sum; do
    echo "${algo%%:*}:"
    for f in Packages Packages.gz; do
      printf ' %s %s %s\n' "$("${algo#*:}" "$repo/$f" | cut -d' ' -f1)" "$(stat -c %s "$repo/$f")" "$f"
    done
  done
} >"$repo/Release"

# A throwaway key: generated per build, never reused, its public half published like NVIDIA's gpgkey.
export GNUPGHOME=$work/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key 'tflab toolkit double <double@tflab.invalid>' rsa3072 sign never 2>/dev/null
gpg --batch --quiet --armor --export >"$out/gpgkey"
gpg --batch --quiet --yes --clearsign --output "$repo/InRelease" "$repo/Release"
gpg --batch --quiet --yes --armor --detach-sign --output "$repo/Release.gpg" "$repo/Release"
gpgconf --kill all 2>/dev/null || true

echo "$hash" >"$out/.complete"
echo "$out"
