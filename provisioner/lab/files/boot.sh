#!/bin/sh
# Runs on the controller inside a lab host's fresh mount, UTS and PID
# namespaces (already in its network namespace): gives the host its own /proc,
# /sys, /dev, /run and /tmp, its hostname, then becomes its init.
# Usage: boot.sh ROOT HOSTNAME
set -eu
root=$1
name=$2

mount --make-rprivate /
hostname "$name"
# hidepid=2: a user sees only its own processes (root and sudo see all), so
# one site's account or PHP never lists another's processes or their arguments.
mount -t proc -o nosuid,nodev,noexec,hidepid=2 proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o nosuid,mode=0755,size=4m tmpfs "$root/dev"
for node in "null c 1 3" "zero c 1 5" "full c 1 7" "random c 1 8" "urandom c 1 9" "tty c 5 0"; do
    set -- $node
    mknod -m 0666 "$root/dev/$1" "$2" "$3" "$4"
done
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$root/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs "$root/run"
mkdir -p "$root/run/lock"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$root/tmp"

# tini is PID 1 and reaps orphans; lab-init starts and stops the services.
exec chroot "$root" /usr/bin/tini -- /usr/local/sbin/lab-init
