#!/bin/sh
# PID 1 of the lab guest: mounts the kernel file systems, runs the scenario named by
# lab.scenario= on the kernel command line, then powers off. Console output goes to ttyS0,
# results to ttyS1 (the data channel, see tests/lab/guest/labio.py).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONPATH=/opt/vfiowatch/site:/lab/guest
export PYTHONDONTWRITEBYTECODE=1 HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /dev/shm
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
mount -t debugfs nodev /sys/kernel/debug 2>/dev/null
mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null
ip link set lo up
scenario=$(sed -n 's/.*lab\.scenario=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "lab-init: uptime $(cut -d' ' -f1 /proc/uptime)s, scenario ${scenario:-none}"
python3 /lab/guest/run.py "${scenario:-none}"
echo "lab-init: scenario exited $?, powering off"
sync
echo o > /proc/sysrq-trigger
sleep 5
