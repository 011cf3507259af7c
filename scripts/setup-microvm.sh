#!/usr/bin/env bash
# Prepares the microvm provider's assets. Idempotent: each step checks before it acts.
#
#   scripts/setup-microvm.sh [--force]
#
# Output directory: $STACYVM_MICROVM_DIR (default /var/lib/stacyvm/microvm):
#   vmlinux                 uncompressed guest kernel (Debian linux-image-cloud-amd64)
#   initramfs.cpio.gz       busybox + stacyvm-agent + virtio modules + /init
#   stacyvm-agent           the static agent binary that went into the initramfs
#   images/<image>.ext4     root filesystems, named as the provider looks them up
#
# The test image's root filesystem ($STACYVM_MICROVM_TEST_IMAGE, default
# stacyvm-test/busybox:latest) comes from `docker export` when docker has that image, else from
# the host's static busybox. `--force` rebuilds everything. Exits non-zero when a step fails.
#
# The agent is built from the repository's crates/stacyvm-agent ($STACYVM_REPO_ROOT, default the
# checkout holding this script). Without a checkout (`stacyvm microvm prepare` from an installed
# binary), $STACYVM_MICROVM_AGENT names a prebuilt static agent, else an agent already in the
# output directory is kept; with neither the script stops and says so.
set -euo pipefail

REPO_ROOT="${STACYVM_REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
DIR="${STACYVM_MICROVM_DIR:-/var/lib/stacyvm/microvm}"
IMAGE="${STACYVM_MICROVM_TEST_IMAGE:-stacyvm-test/busybox:latest}"
DISK_MB="${STACYVM_MICROVM_DISK_MB:-1024}"
APT_LOG=/tmp/setup-microvm-apt.log
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        *) echo "usage: $0 [--force]" >&2; exit 2 ;;
    esac
done

log() { printf '[setup-microvm] %s\n' "$*"; }
die() { log "error: $*"; exit 1; }

# Modules the cloud kernel builds as modules but the guest needs, in load order.
MODULES=(virtio_ring virtio virtio_mmio virtio_blk virtio_console virtio-rng failover net_failover virtio_net)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" -eq 1 ] && return 0
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >"$APT_LOG" 2>&1
    APT_UPDATED=1
}

install_packages() {
    local want=(qemu-system-x86 qemu-utils busybox-static e2fsprogs cpio lz4 xz-utils zstd file) missing=() p
    for p in "${want[@]}"; do installed "$p" || missing+=("$p"); done
    [ "${#missing[@]}" -eq 0 ] && return 0
    apt_update
    log "installing ${missing[*]}"
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$APT_LOG" 2>&1; then
        # apt may have removed a newer (backports) qemu-utils to install the distribution's
        # qemu-system-x86: only done when everything is there.
        missing=()
        for p in "${want[@]}"; do installed "$p" || missing+=("$p"); done
        [ "${#missing[@]}" -eq 0 ] && return 0
    fi
    # A newer qemu-utils (backports) breaks the distribution's qemu-system-x86: align them.
    local v rest=()
    v="$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')"
    for p in "${missing[@]}"; do
        case "$p" in qemu-utils | qemu-system-x86) ;; *) rest+=("$p") ;; esac
    done
    log "retrying with qemu-utils=$v to match qemu-system-x86"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades \
        "${rest[@]}" qemu-system-x86 "qemu-utils=$v" >>"$APT_LOG" 2>&1 \
        || { tail -20 "$APT_LOG" >&2; die "package installation failed (log: $APT_LOG)"; }
}

static_busybox() {
    local bb
    for bb in /bin/busybox /usr/bin/busybox "$(command -v busybox || true)"; do
        [ -x "$bb" ] && file -L "$bb" | grep -q 'statically linked' && { echo "$bb"; return 0; }
    done
    return 1
}

# Decompresses the payload of a bzImage by scanning for each compressor's magic (the approach
# of the kernel's scripts/extract-vmlinux).
extract_vmlinux() {
    local img="$1" out="$2" tmp magic cmd pos
    tmp="$(mktemp)"
    for pair in '\x02\x21\x4c\x18:lz4 -dc' '\xfd\x37\x7a\x58\x5a\x00:xz -dc' \
        '\x28\xb5\x2f\xfd:zstd -dc' '\x1f\x8b\x08:gzip -dc' '\x42\x5a\x68:bzip2 -dc'; do
        magic="${pair%%:*}"
        cmd="${pair#*:}"
        for pos in $(LC_ALL=C grep -obUaP "$magic" "$img" 2>/dev/null | cut -d: -f1 | head -5); do
            # shellcheck disable=SC2086
            tail -c+$((pos + 1)) "$img" | $cmd >"$tmp" 2>/dev/null || true
            if file "$tmp" | grep -q 'ELF 64-bit'; then
                mv "$tmp" "$out"
                return 0
            fi
        done
    done
    rm -f "$tmp"
    return 1
}

fetch_kernel() {
    if [ "$FORCE" -eq 0 ] && [ -s "$DIR/vmlinux" ] && [ -d "$DIR/modules" ]; then
        return 0
    fi
    apt_update
    local pkg work deb kver
    pkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
    [ -n "$pkg" ] || die "cannot resolve linux-image-cloud-amd64's kernel package"
    work="$(mktemp -d)"
    log "downloading $pkg"
    (cd "$work" && apt-get download "$pkg" >>"$APT_LOG" 2>&1) || die "apt-get download $pkg failed"
    deb="$(ls "$work"/*.deb)"
    dpkg-deb -x "$deb" "$work/x"
    kver="$(ls "$work/x/lib/modules")"
    log "extracting vmlinux of $kver"
    extract_vmlinux "$work/x/boot/vmlinuz-$kver" "$DIR/vmlinux.new" || die "cannot extract vmlinux"
    rm -rf "$DIR/modules"
    mkdir -p "$DIR/modules"
    local m f
    for m in "${MODULES[@]}"; do
        f="$(find "$work/x/lib/modules/$kver" -name "$m.ko*" | head -1)"
        [ -n "$f" ] || { log "note: module $m not found (built in?)"; continue; }
        case "$f" in
            *.ko.xz) xz -dc "$f" >"$DIR/modules/$m.ko" ;;
            *.ko.zst) zstd -qdc "$f" >"$DIR/modules/$m.ko" ;;
            *) cp "$f" "$DIR/modules/$m.ko" ;;
        esac
    done
    printf '%s\n' "${MODULES[@]}" >"$DIR/modules/order"
    echo "$kver" >"$DIR/kernel-version"
    mv "$DIR/vmlinux.new" "$DIR/vmlinux"
    rm -rf "$work"
}

build_agent() {
    local src="$REPO_ROOT/crates/stacyvm-agent" bin
    if [ -n "${STACYVM_MICROVM_AGENT:-}" ]; then
        bin="$STACYVM_MICROVM_AGENT"
        [ -f "$bin" ] || die "STACYVM_MICROVM_AGENT=$bin does not exist"
        log "using the prebuilt stacyvm-agent $bin"
    elif [ -f "$src/Cargo.toml" ]; then
        command -v cargo >/dev/null || die "cargo not found (needed to build stacyvm-agent)"
        log "building stacyvm-agent (static)"
        (cd "$src" && cargo build --release --locked -q) || die "building stacyvm-agent failed"
        bin="$src/target/x86_64-unknown-linux-gnu/release/stacyvm-agent"
    elif [ "$FORCE" -eq 0 ] && [ -s "$DIR/stacyvm-agent" ]; then
        log "no stacyvm-agent source ($src); keeping $DIR/stacyvm-agent"
        return 0
    else
        die "no stacyvm-agent: set STACYVM_MICROVM_AGENT to a prebuilt static agent, or run from a checkout (STACYVM_REPO_ROOT; source expected in $src)"
    fi
    file -L "$bin" | grep -q 'static' || die "stacyvm-agent is not statically linked"
    if ! cmp -s "$bin" "$DIR/stacyvm-agent"; then
        cp "$bin" "$DIR/stacyvm-agent.new" && mv "$DIR/stacyvm-agent.new" "$DIR/stacyvm-agent"
    fi
}

write_init() {
    cat >"$1" <<'INIT'
#!/bin/busybox sh
# PID 1 of a StacyVM microvm guest: load the virtio modules, mount the sandbox disk, start the
# agent (which chroots into it). When the agent exits, the guest powers off, so the host sees
# the VM stop instead of a silent agent.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do
    [ -f "/lib/modules/$m.ko" ] && insmod "/lib/modules/$m.ko" 2>/dev/null
done </lib/modules/order
for arg in $(cat /proc/cmdline); do
    case "$arg" in stacyvm.hostname=*) hostname "${arg#stacyvm.hostname=}" ;; esac
done
root=/newroot
i=0
while [ ! -b /dev/vda ] && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
if [ -b /dev/vda ] && mount -t ext4 -o noatime /dev/vda /newroot; then
    mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/tmp /newroot/workspace
    mount -t proc proc /newroot/proc
    mount -t sysfs sysfs /newroot/sys
    mount -t devtmpfs devtmpfs /newroot/dev
    chmod 1777 /newroot/tmp
else
    echo "stacyvm-init: no root disk, running from the initramfs"
    root=/
    mkdir -p /workspace /tmp
fi
mkdir -p "$root/dev/pts" && mount -t devpts devpts "$root/dev/pts" 2>/dev/null
ip link set lo up
# network_mode: user gives a virtio NIC on QEMU's user-mode network (fixed addresses).
if [ -e /sys/class/net/eth0 ]; then
    ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2
    [ -d "$root/etc" ] && echo "nameserver 10.0.2.3" >"$root/etc/resolv.conf"
fi
echo "stacyvm-init: starting agent"
/sbin/stacyvm-agent --root "$root"
echo "stacyvm-init: agent exited with $?, powering off"
sync
reboot -f
INIT
    chmod 0755 "$1"
}

build_initramfs() {
    local bb work
    bb="$(static_busybox)" || die "no statically linked busybox (install busybox-static)"
    work="$(mktemp -d)"
    mkdir -p "$work"/{bin,sbin,proc,sys,dev,newroot,tmp,workspace,lib/modules}
    cp "$bb" "$work/bin/busybox"
    cp "$DIR/stacyvm-agent" "$work/sbin/stacyvm-agent"
    cp "$DIR"/modules/*.ko "$DIR/modules/order" "$work/lib/modules/"
    write_init "$work/init"
    (cd "$work" && find . -print0 | sort -z | cpio --null -o -H newc --quiet | gzip -1 >"$DIR/initramfs.cpio.gz.new")
    if cmp -s "$DIR/initramfs.cpio.gz.new" "$DIR/initramfs.cpio.gz"; then
        rm -f "$DIR/initramfs.cpio.gz.new"
    else
        log "initramfs rebuilt"
        mv "$DIR/initramfs.cpio.gz.new" "$DIR/initramfs.cpio.gz"
    fi
    rm -rf "$work"
}

# The provider's file name for an image: every byte outside [A-Za-z0-9._-] becomes `_`.
image_file() { printf '%s' "$1" | tr -c 'A-Za-z0-9._-' '_'; }

build_rootfs() {
    local out tree bb cid
    out="$DIR/images/$(image_file "$IMAGE").ext4"
    if [ "$FORCE" -eq 0 ] && [ -s "$out" ]; then
        return 0
    fi
    mkdir -p "$DIR/images"
    tree="$(mktemp -d)"
    if command -v docker >/dev/null && docker image inspect "$IMAGE" >/dev/null 2>&1; then
        log "root filesystem of $IMAGE from docker export"
        cid="$(docker create "$IMAGE" /bin/true)"
        docker export "$cid" | tar -C "$tree" -x
        docker rm -f "$cid" >/dev/null
    else
        log "root filesystem of $IMAGE from the host's busybox (docker or the image is missing)"
        bb="$(static_busybox)" || die "no statically linked busybox"
        mkdir -p "$tree"/{bin,etc,root}
        cp "$bb" "$tree/bin/busybox"
        local applet
        for applet in $("$tree/bin/busybox" --list); do
            [ -e "$tree/bin/$applet" ] || ln -s busybox "$tree/bin/$applet"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' >"$tree/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$tree/etc/group"
    fi
    mkdir -p "$tree"/{proc,sys,dev,tmp,workspace}
    chmod 1777 "$tree/tmp"
    rm -f "$out.new"
    truncate -s "${DISK_MB}M" "$out.new"
    mkfs.ext4 -q -F -L stacyvm-root -d "$tree" "$out.new" || die "mkfs.ext4 -d failed"
    mv "$out.new" "$out"
    rm -rf "$tree"
}

mkdir -p "$DIR"
log "[1/5] host packages"
install_packages
log "[2/5] guest kernel"
fetch_kernel
log "[3/5] agent"
build_agent
log "[4/5] initramfs"
build_initramfs
log "[5/5] image $IMAGE"
build_rootfs
log "ready in $DIR: vmlinux ($(cat "$DIR/kernel-version")), initramfs.cpio.gz, images/$(image_file "$IMAGE").ext4"
