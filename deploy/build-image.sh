#!/usr/bin/env bash
# Build the vfiowatch agent image (`make image`) with the tools Debian ships (podman, or buildah),
# reproducibly and with no network inside the build:
#   1. the project and its Python dependencies are built into wheels on THIS machine, with its
#      own pip configuration (index, mirror, CA, proxy), pinned to the versions of the tested
#      .venv; the image installs exactly those wheels with `pip install --no-index`;
#   2. the base is `debian:bookworm-slim` when it is in local storage or can be pulled; when no
#      registry is reachable (or IMAGE_BASE=mmdebstrap), a base is made from Debian packages with
#      mmdebstrap, from this machine's configured apt sources, already holding the image's apt
#      packages, and imported; it is cached under a key of everything that goes into it;
#   3. `podman build` (or `buildah build`) of deploy/Containerfile with SOURCE_DATE_EPOCH and
#      --timestamp, so the same inputs give the same layers.
# Settings (environment): IMAGE (name:tag), IMAGE_BASE (auto | mmdebstrap | an image reference),
# IMAGE_CACHE (work directory), IMAGE_ISOLATION (chroot | oci), IMAGE_REBUILD_BASE=1 (make the
# mmdebstrap base again even when it is cached). Prints the image name, its size, what the base
# was and how long each step took.
# Reproducible: the same commit, apt sources and pinned wheels give the same image id. The
# mmdebstrap base is cached under a key of everything that goes into it; the image's own layers
# are always rebuilt (--no-cache), because buildah's layer cache ignores --timestamp and would
# hand back layers stamped by an earlier build.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "make image: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (container storage, mmdebstrap)"

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || die "no $PY: run 'make setup' first"
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' diag/__init__.py)
IMAGE=${IMAGE:-localhost/vfiowatch:$version}
IMAGE_BASE=${IMAGE_BASE:-auto}
IMAGE_CACHE=${IMAGE_CACHE:-.cache/image}
# Buildah's chroot isolation runs the RUN steps without an OCI runtime: they only unpack wheels,
# and it works where runtimes cannot create containers (nested VMs, hybrid cgroups).
IMAGE_ISOLATION=${IMAGE_ISOLATION:-chroot}
# The suite is fixed: the wheels are built by this machine's Python 3.11 for the image's.
SUITE=bookworm
NORMAL_BASE="debian:$SUITE-slim"

if command -v podman >/dev/null; then tool=podman
elif command -v buildah >/dev/null; then tool=buildah
else die "neither podman nor buildah is installed (deploy/setup-host.sh installs both)"; fi

# The image's apt packages are listed once, in the Containerfile.
apt_packages=$(sed -n 's/^ARG APT_PACKAGES="\(.*\)"$/\1/p' deploy/Containerfile)
[ -n "$apt_packages" ] || die "deploy/Containerfile has no ARG APT_PACKAGES=\"...\" line"

if git rev-parse --git-dir >/dev/null 2>&1; then
  SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
  # The base changes only when its definition does, not with every commit.
  base_epoch=$(git log -1 --format=%ct -- deploy/Containerfile deploy/build-image.sh)
else
  SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(stat -c %Y pyproject.toml)}
  base_epoch=$SOURCE_DATE_EPOCH
fi
base_epoch=${base_epoch:-$SOURCE_DATE_EPOCH}
export SOURCE_DATE_EPOCH

ctx="$IMAGE_CACHE/context"
mkdir -p "$IMAGE_CACHE"
t0=$(date +%s%N)

# ---- 1. wheels, on this machine (its pip configuration applies), pinned to the tested venv.
rm -rf "$ctx" && mkdir -p "$ctx/wheels"
"$PY" -m pip freeze --local --exclude-editable >"$IMAGE_CACHE/constraints.txt"
"$PY" -m pip wheel -q --disable-pip-version-check --wheel-dir "$ctx/wheels" \
  -c "$IMAGE_CACHE/constraints.txt" . \
  || die "building the wheels failed (pip uses this machine's pip configuration: see README, Running fleet-wide)"

t1=$(date +%s%N)

# ---- 2. the base.
image_exists() { "$tool" image exists "$1" 2>/dev/null || "$tool" images -q "$1" 2>/dev/null | grep -q .; }

mmdebstrap_base() {
  command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (deploy/setup-host.sh installs it)"
  # This machine's apt sources that serve the suite: the same mirror, proxy and keys apt uses.
  local sources=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && grep -v '^\s*#' "$f" | grep -qw "$SUITE" && sources+=("$f")
  done
  [ ${#sources[@]} -gt 0 ] || die "no apt source on this machine serves '$SUITE' (add one, or set IMAGE_BASE to an image)"
  local opts=(--variant=minbase --mode=root --format=tar
    "--include=${apt_packages// /,}"
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias'
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"')
  local key
  key=$( { echo "$SUITE ${opts[*]} $base_epoch"; cat "${sources[@]}"; } | sha256sum | cut -c1-12)
  base="localhost/vfiowatch-base:$SUITE-$key"
  apt_install=no  # mmdebstrap included the image's apt packages
  if image_exists "$base" && [ "${IMAGE_REBUILD_BASE:-0}" != 1 ]; then
    base_kind="mmdebstrap (cached: $base)"; return
  fi
  echo "make image: making the base with mmdebstrap from ${sources[*]}" >&2
  local tar="$IMAGE_CACHE/base-$key.tar"
  # Container images carry an empty /dev: the runtime provides it.
  SOURCE_DATE_EPOCH=$base_epoch mmdebstrap --quiet "${opts[@]}" "$SUITE" - "${sources[@]}" \
    | mmtarfilter --path-exclude='/dev/*' >"$tar.part"
  mv "$tar.part" "$tar"
  sha256sum "$tar" | cut -d' ' -f1 >"$IMAGE_CACHE/base-$key.sha256"
  # Built, not imported: --timestamp makes the base's own configuration reproducible too.
  printf 'FROM scratch\nADD %s /\n' "$(basename "$tar")" >"$IMAGE_CACHE/Containerfile.base"
  "$tool" build -q --no-cache --isolation "$IMAGE_ISOLATION" --timestamp "$base_epoch" \
    -f "$IMAGE_CACHE/Containerfile.base" -t "$base" "$IMAGE_CACHE" >/dev/null
  rm -f "$tar" "$IMAGE_CACHE/Containerfile.base"
  # Bases of earlier definitions are 400+ MB each: untag them (images still built on one keep it).
  local old
  for old in $("$tool" images --format '{{.Repository}}:{{.Tag}}' localhost/vfiowatch-base); do
    [ "$old" = "$base" ] || "$tool" rmi "$old" >/dev/null 2>&1 || true
  done
  base_kind="mmdebstrap (made: $base, tarball sha256 $(cat "$IMAGE_CACHE/base-$key.sha256"))"
}

apt_install=yes
case "$IMAGE_BASE" in
  mmdebstrap) mmdebstrap_base ;;
  auto)
    if image_exists "$NORMAL_BASE"; then base=$NORMAL_BASE; base_kind="$NORMAL_BASE (local)"
    elif timeout 300 "$tool" pull -q "$NORMAL_BASE" >/dev/null 2>"$IMAGE_CACHE/pull.log"; then
      base=$NORMAL_BASE; base_kind="$NORMAL_BASE (pulled)"
    else
      echo "make image: cannot pull $NORMAL_BASE ($(tail -n1 "$IMAGE_CACHE/pull.log")): making a Debian base instead" >&2
      mmdebstrap_base
    fi ;;
  *) base=$IMAGE_BASE; base_kind="$IMAGE_BASE (IMAGE_BASE)" ;;
esac

t2=$(date +%s%N)

# ---- 3. the image.
"$tool" build -q --no-cache --isolation "$IMAGE_ISOLATION" --timestamp "$SOURCE_DATE_EPOCH" \
  --build-arg "BASE=$base" --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" \
  --build-arg "VERSION=$version" --build-arg "APT_INSTALL=$apt_install" \
  -f deploy/Containerfile -t "$IMAGE" "$ctx" >/dev/null

size=$("$tool" image inspect --format '{{.Size}}' "$IMAGE")
t3=$(date +%s%N)
secs() { local d=$(( ($2 - $1) / 100000000 )); echo "$((d / 10)).$((d % 10))"; }
echo "make image: $IMAGE ($((size / 1000000)) MB) from $base_kind in $(secs "$t0" "$t3") s" \
  "(wheels $(secs "$t0" "$t1") s, base $(secs "$t1" "$t2") s, build $(secs "$t2" "$t3") s)"
