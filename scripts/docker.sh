#!/usr/bin/env bash
# Make sure a Docker Engine answers (start dockerd when none does) and the local test images exist.
# Usage: bash scripts/docker.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
    echo "docker: starting dockerd"
    mkdir -p /var/log
    # --userland-proxy=false: published ports go through iptables NAT instead of a proxy process
    nohup dockerd --userland-proxy=false >/var/log/dockyard-dockerd.log 2>&1 &
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { echo "docker: dockerd did not start"; tail -50 /var/log/dockyard-dockerd.log; exit 1; }
fi

# A busybox image built from Debian's busybox-static: no registry is reachable from our machines.
IMAGE=dockyard/busybox:latest
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "docker: building $IMAGE"
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/www" "$root/proc" "$root/sys" "$root/dev"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
    echo "nobody:x:65534:65534:nobody:/:/bin/false" >> "$root/etc/passwd"
    echo "root:x:0:" > "$root/etc/group"
    echo "nogroup:x:65534:" >> "$root/etc/group"
    echo "ok" > "$root/www/index.html"
    tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["sh"]' - "$IMAGE" >/dev/null
fi
