#!/bin/sh
# Assembles the root filesystem of the AgentGate runtime image (deploy/Dockerfile, target
# `runtime`, which is FROM scratch) around a built agentgate binary:
#
#   deploy/rootfs.sh BINARY OUTDIR
#
# OUTDIR (created; must be missing or empty) receives exactly:
#   /usr/local/bin/agentgate              the binary
#   the shared libraries it links         from `ldd BINARY`, plus the dynamic loader, at the
#                                         paths ldd names (symlinks resolved)
#   /etc/ssl/certs/ca-certificates.crt    system roots ($CA_BUNDLE, default the build
#                                         machine's /etc/ssl/certs/ca-certificates.crt)
#   /etc/passwd, /etc/group               uid/gid 65532 "agentgate" (and root)
#   /etc/nsswitch.conf                    "hosts: files dns" for glibc's getaddrinfo
#   /var/lib/agentgate                    empty, 0700, owned 65532:65532 (AGENTGATE_HOME)
#   /var/run/agentgate                    empty, 0755, owned 65532:65532 (ca-bundle.pem)
#   /tmp                                  1777
# and nothing else: no shell, no package manager.
#
# Runs in the Dockerfile's build stage, and outside Docker on a prebuilt binary
# (scripts/check-k8s does that, then builds the image with
# `podman build --build-context build=OUTDIR`). Ownership needs root; run as another user it
# warns and leaves the files owned by that user.
set -eu

die() {
  echo "deploy/rootfs.sh: $*" >&2
  exit 1
}

[ "$#" -eq 2 ] || die "usage: deploy/rootfs.sh BINARY OUTDIR"
bin=$1
out=$2
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
uid=65532

[ -f "$bin" ] && [ -x "$bin" ] || die "$bin is not an executable file (build it: cargo build --release --locked)"
[ -f "$ca_bundle" ] || die "$ca_bundle is missing (apt-get install ca-certificates, or set CA_BUNDLE)"
command -v ldd >/dev/null 2>&1 || die "ldd is missing (it comes with libc-bin)"
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  die "$out is not empty; give a new or empty directory"
fi

umask 022
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/var/lib/agentgate" "$out/var/run/agentgate" "$out/tmp"
cp "$bin" "$out/usr/local/bin/agentgate"
chmod 0755 "$out/usr/local/bin/agentgate"

# Shared libraries: every absolute path in ldd's output ("libc.so.6 => /lib/.../libc.so.6 (0x…)"
# and the loader "/lib64/ld-linux-x86-64.so.2 (0x…)"); linux-vdso has none. A static binary
# needs none.
if libs=$(ldd "$bin" 2>&1); then
  if printf '%s\n' "$libs" | grep -q 'not found'; then
    die "ldd cannot resolve every library of $bin:
$libs"
  fi
  printf '%s\n' "$libs" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) { print $i; break } }' |
    while IFS= read -r lib; do
      mkdir -p "$out$(dirname "$lib")"
      cp -L "$lib" "$out$lib"
      chmod 0755 "$out$lib"
    done
else
  case $libs in
    *"not a dynamic executable"* | *"statically linked"*) ;;
    *) die "ldd $bin failed: $libs" ;;
  esac
fi

cp -L "$ca_bundle" "$out/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$out/etc/ssl/certs/ca-certificates.crt"

cat >"$out/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
agentgate:x:$uid:$uid:AgentGate:/var/lib/agentgate:/sbin/nologin
PASSWD
cat >"$out/etc/group" <<GROUP
root:x:0:
agentgate:x:$uid:
GROUP
printf 'hosts: files dns\n' >"$out/etc/nsswitch.conf"
chmod 0644 "$out/etc/passwd" "$out/etc/group" "$out/etc/nsswitch.conf"

chmod 0700 "$out/var/lib/agentgate"
chmod 0755 "$out/var/run/agentgate"
chmod 1777 "$out/tmp"
if [ "$(id -u)" -eq 0 ]; then
  chown -R 0:0 "$out"
  chown "$uid:$uid" "$out/var/lib/agentgate" "$out/var/run/agentgate"
else
  echo "deploy/rootfs.sh: not root, so /var/lib/agentgate and /var/run/agentgate are not owned by $uid" >&2
fi
