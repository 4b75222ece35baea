#!/usr/bin/env bash
# Build fedstock's container image without an image registry: a Debian bookworm base made here
# with debootstrap (from the machine's Debian mirror), imported into Podman, then the Containerfile
# on top of it. Needs root, podman, runc and debootstrap (apt-get install podman runc debootstrap).
# Python packages come from the package registry (through the machine's CA, if it has one) and,
# where present, the local wheel folder and index (/opt/wheels, /opt/pypi): CPU torch only.
#
#     bash scripts/build_images.sh            # -> localhost/fedstock:latest
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/fedstock-images}
BASE=localhost/fedstock-base:bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}
mkdir -p "$WORK"
# crun and the default ulimits fail on these machines (../shared/notes/containers.md)
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' > "$WORK/containers.conf"
export CONTAINERS_CONF=$WORK/containers.conf
start=$(date +%s)
if ! podman image exists "$BASE"; then
  rm -rf "$WORK/root"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/root" "$MIRROR" \
    > "$WORK/debootstrap.log"
  tar -C "$WORK/root" -c . | podman import - "$BASE" > /dev/null
  rm -rf "$WORK/root"
fi
mounts=() args=(--build-arg "BASE=$BASE")
for folder in /opt/wheels /opt/pypi /opt/pypi-more; do
  [ -d "$folder" ] && mounts+=(-v "$folder:$folder:ro")
done
# the machine's wheel folder holds CPU torch: PyTorch's own index is not needed (nor reachable)
[ -d /opt/wheels ] && args+=(--build-arg PIP_FIND_LINKS=/opt/wheels --build-arg TORCH_INDEX=)
index=""
for folder in /opt/pypi /opt/pypi-more; do [ -d "$folder/simple" ] && index="$index file://$folder/simple"; done
[ -n "$index" ] && args+=(--build-arg "PIP_EXTRA_INDEX_URL=${index# }")
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/host-ca.crt:ro)
  args+=(--build-arg PIP_CERT=/host-ca.crt)
fi
podman build --network host -f Containerfile "${args[@]}" "${mounts[@]}" -t localhost/fedstock:latest . \
  > "$WORK/build.log"
size=$(podman image inspect localhost/fedstock:latest --format '{{.Size}}')
echo "localhost/fedstock:latest built in $(( $(date +%s) - start )) s; $(( size / 1000000 )) MB"
