#!/usr/bin/env bash
# Builds the test images from the servers installed on this machine, for engines that cannot
# pull from a registry: each image holds one binary and the shared libraries `ldd` lists,
# packed with `docker import`. Prints the image names as shell assignments.
#
#   eval "$(bash scripts/docker-test-images.sh)"
#   # PYLOCK_TEST_REDIS_IMAGE=pylock-test/redis:local PYLOCK_TEST_MEMCACHED_IMAGE=... PYLOCK_TEST_ETCD_IMAGE=...
set -euo pipefail

image_of() { # binary image-name
  local binary=$1 image=$2 root
  root=$(mktemp -d)
  trap 'rm -rf "$root"' RETURN
  for file in "$binary" $(ldd "$binary" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$file")"
    cp -L "$file" "$root$file"
  done
  mkdir -p "$root/tmp" "$root/data" "$root/etc"
  # memcached running as root looks its user up (-u root).
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  tar -C "$root" -c . | docker import - "$image" >/dev/null
}

image_of "$(command -v redis-server)" pylock-test/redis:local
image_of "$(command -v memcached)" pylock-test/memcached:local
image_of "$(command -v etcd)" pylock-test/etcd:local
echo "export PYLOCK_TEST_REDIS_IMAGE=pylock-test/redis:local"
echo "export PYLOCK_TEST_MEMCACHED_IMAGE=pylock-test/memcached:local"
echo "export PYLOCK_TEST_ETCD_IMAGE=pylock-test/etcd:local"
