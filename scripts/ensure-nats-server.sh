#!/bin/sh
# Makes nats-server available on PATH: present -> done; Debian/Ubuntu as root -> apt-get install;
# otherwise say how to install it. Used by `npm start`, `npm test` and .ci/run.
set -eu

if command -v nats-server >/dev/null 2>&1; then
  exit 0
fi
# The Debian package installs to /usr/sbin, which is not on every user's PATH.
if [ -x /usr/sbin/nats-server ]; then
  echo "nats-server is installed at /usr/sbin/nats-server but /usr/sbin is not on PATH; add it: export PATH=\"\$PATH:/usr/sbin\"" >&2
  exit 1
fi

if [ -r /etc/os-release ] && grep -qiE '^(ID|ID_LIKE)=.*(debian|ubuntu)' /etc/os-release && [ "$(id -u)" = 0 ]; then
  echo "nats-server not found; installing the Debian package nats-server ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq nats-server >&2
  command -v nats-server >/dev/null 2>&1 && exit 0
  echo "apt-get installed nats-server but it is not on PATH" >&2
  exit 1
fi

cat >&2 <<'MSG'
nats-server is required but not installed. Install it with one of:
  Debian/Ubuntu:  sudo apt-get install nats-server
  macOS:          brew install nats-server
  Docker:         docker run -d --name nats -p 4222:4222 nats:2.10   (then: export TIDEMARK_NATS=nats://127.0.0.1:4222)
MSG
exit 1
