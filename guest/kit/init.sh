#!/bin/busybox sh
# vrnic guest /init: load the RDMA core, the helper and the driver, run vrnic-test, report, power off.
# It prints `VRNIC-INIT {json}` lines for each step (parsed by guest/kit/guest-log.ts), loads the
# modules in the order the image builder wrote to /lib/modules/order, runs the test program the
# kernel command line names (vrnic.* parameters), dumps the kernel log between markers, powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mkdir -p /tmp
say() { echo "VRNIC-INIT {\"event\":\"$1\"${2:+,$2}}"; }
param() {
  for w in $(cat /proc/cmdline); do
    case "$w" in "vrnic.$1="*) echo "${w#*=}"; return;; esac
  done
  echo "$2"
}
say boot "\"kernel\":\"$(uname -r)\",\"uptime\":\"$(cut -d' ' -f1 /proc/uptime)\",\"cmdline\":\"$(cat /proc/cmdline)\""
BUG=$(param bug none)
# The canary: vrnic-test reads an address in the device's bridge window that nothing decodes,
# before any module loads (so before any vanish armed at the driver's probe). QEMU's -d invalid_mem
# log must show it: proof that the log records such accesses in a wording the verdict parses.
if [ "$(param canary 1)" != 0 ]; then
  /bin/vrnic-test --canary
fi
loaded=""
for m in $(cat /lib/modules/order); do
  if [ "$m" = vrnic ]; then out=$(insmod /lib/modules/$m.ko bug=$BUG 2>&1); rc=$?
  else out=$(insmod /lib/modules/$m.ko 2>&1); rc=$?; fi
  out=$(echo "$out" | tr -d '"\\' | tr '\n' ' ')
  say module "\"name\":\"$m\",\"rc\":$rc,\"output\":\"$out\",\"uptime\":\"$(cut -d' ' -f1 /proc/uptime)\""
  [ $rc = 0 ] && loaded="$loaded $m"
done
say modules-loaded "\"modules\":\"$(echo $loaded)\",\"bug\":\"$BUG\",\"uverbs\":\"$(ls /dev/infiniband 2>/dev/null | tr '\n' ' ')\",\"ib\":\"$(ls /sys/class/infiniband 2>/dev/null | tr '\n' ' ')\""
if [ "$(param test 1)" != 0 ]; then
  scenario=$(param scenario single)
  case "$scenario" in
  pingpong|traffic)
    # The data path's program: its own options; traffic runs until the device goes away.
    prog=/bin/vrnic-pingpong
    set -- --wait-device "$(param wait 5)"
    [ "$scenario" = traffic ] && set -- "$@" --traffic;;
  *)
    # vrnic.prog: another program in /bin taking vrnic-test's options (the pvrdma image's pvrdma-guest)
    prog=/bin/$(param prog vrnic-test)
    set -- --wait-device "$(param wait 5)" --scenario "$scenario" --uars "$(param uars 1)" \
      --watch "$(param watch 0)" --settle-ms "$(param settle 2000)" --interval-ms "$(param interval 20)"
    procs=$(param procs "")
    [ -n "$procs" ] && set -- "$@" --procs "$procs"
    cmd=$(param cmd "")
    [ -n "$cmd" ] && set -- "$@" --commands "/dev/$cmd";;
  esac
  out=$(param out "")
  [ -n "$out" ] && set -- "$@" --output "/dev/$out"
  extra=$(param args "" | tr ',' ' ')
  say test-start "\"program\":\"$prog\",\"args\":\"$* $extra\""
  $prog "$@" $extra
  rc=$?
  say test-exit "\"code\":$rc,\"uptime\":\"$(cut -d' ' -f1 /proc/uptime)\""
fi
# which interrupt the driver got (MSI-X, MSI or INTx) and how often each fired
say interrupts "\"vrnic\":\"$(grep vrnic /proc/interrupts | tr -s ' ' | tr '\n' ';')\""
# The guest's own view of the device after the program: which PCI functions with its vendor:device
# and which vrnic ib devices are left, after waiting (bounded) for them to go.
gonewait=$(param gonewait 0)
# Guest uptime in centiseconds ("24.28" -> 2428; uptime is whole seconds, dot, two digits). The
# wait is bounded by this clock, not by counting loop turns: under TCG each turn's forks of cat
# take longer than its sleep, and 100 turns took 30-60 s instead of 10.
uptime_cs() {
  read -r up _ < /proc/uptime
  echo "${up%.*}${up#*.}"
}
waitstart=$(uptime_cs)
vrnic_pci() {
  for d in /sys/bus/pci/devices/*; do
    [ "$(cat $d/vendor 2>/dev/null):$(cat $d/device 2>/dev/null)" = 0x1234:0x7a01 ] && echo "\"${d##*/}\""
  done
}
vrnic_ib() {
  for d in /sys/class/infiniband/vrnic*; do
    [ -e "$d" ] && echo "\"${d##*/}\""
  done
}
while [ $(($(uptime_cs) - waitstart)) -lt $((gonewait * 100)) ] && [ -n "$(vrnic_pci)$(vrnic_ib)" ]; do
  sleep 0.1
done
say devices "\"vrnic_pci\":[$(vrnic_pci | tr '\n' ',' | sed 's/,$//')],\"ib\":[$(vrnic_ib | tr '\n' ',' | sed 's/,$//')],\"waited_ms\":$((($(uptime_cs) - waitstart) * 10))"
sleep "$(param linger 0)"
say dmesg-begin
dmesg
say dmesg-end
if [ "$(param poweroff 1)" = 0 ]; then
  exec sh
fi
say poweroff
# `poweroff -f` does not wait for the serial line: whatever the tty still holds (on a loaded host,
# the tail of the dmesg dump) is lost, and the harness then has no dmesg-end. stty applies the
# settings it read with TCSADRAIN, which returns only once the output queue has gone out.
stty -F /dev/console "$(stty -F /dev/console -g)" 2>/dev/null
poweroff -f
