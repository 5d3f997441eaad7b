#!/bin/busybox sh
# pvrdma-guest: the pvrdma image's guest program; stock rdma-core tools against the upstream vmw_pvrdma driver.
#
# /init runs it in place of vrnic-test (vrnic.prog=pvrdma-guest) and ignores vrnic-test's flags
# here. What it does comes from the kernel command line, vrnic.pvrdma=STEP,STEP,... in order:
#   devinfo   ibv_devices and ibv_devinfo -v
#   rc[=N]    ibv_rc_pingpong server and client in this guest, over the loopback address, N (100) round trips
#   ud[=N]    the same with ibv_ud_pingpong
#   bw        ib_write_bw (perftest) server and client in this guest, 200 iterations of 64 KiB
#   ip=A/N    gives the paired NIC (the one with a device link) address A/N, for a second guest
#   serve=T   runs tool T (rc, ud or bw) as the server for a client in another guest
#   connect=T@A  runs tool T as the client of the server at address A
#   traffic=N an ibv_rc_pingpong server and client in this guest exchanging messages for N seconds
#             (both hold a context and its UAR mapping and write doorbells all along: every post
#             and every empty poll is a UAR write): the processes an unplug with traffic finds
#   hold=N    an ibv_rc_pingpong server (a context, its UAR mapping, a QP) left waiting for N
#             seconds for a client that never comes: the process an unplug finds
# Each step prints PVRDMA-STEP lines the host parses, and the tools' own output unchanged.
export PATH=/bin:/usr/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
step() { echo "PVRDMA-STEP {\"step\":\"$1\"${2:+,$2}}"; }
steps=devinfo
for w in $(cat /proc/cmdline); do
  case "$w" in vrnic.pvrdma=*) steps="${w#*=}";; esac
done

ip link set lo up
# vmw_pvrdma takes the paired vmxnet3's netdev as its port's; the port follows that link's state
for n in /sys/class/net/*; do
  [ -e "$n/device" ] && ip link set "$(basename "$n")" up
done

# the driver registers its ib device once the device answered its commands
i=0
while [ -z "$(ls /sys/class/infiniband 2>/dev/null)" ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
dev=$(ls /sys/class/infiniband 2>/dev/null | head -n1)
step devices "\"ib\":\"$dev\",\"uverbs\":\"$(ls /dev/infiniband 2>/dev/null | tr '\n' ' ')\""
# the port turns ACTIVE when the device's port event arrives; give it a moment
i=0
while [ -n "$dev" ] && ! grep -q ACTIVE "/sys/class/infiniband/$dev/ports/1/state" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done

for s in $(echo "$steps" | tr ',' ' '); do
  case "$s" in
  devinfo)
    ibv_devices
    ibv_devinfo -v
    step devinfo "\"code\":$?"
    # which interrupt the driver got (MSI-X: three vectors; MSI or INTx: one) and how often each fired
    step interrupts "\"pvrdma\":\"$(grep vmw_pvrdma /proc/interrupts | tr -s ' ' | tr '\n' ';')\""
    ;;
  rc|ud|rc=*|ud=*)
    t=${s%%=*}
    n=100
    [ "$t" != "$s" ] && n=${s#*=}
    ibv_${t}_pingpong -d "$dev" -g 0 -n "$n" > /tmp/server.out 2>&1 &
    server=$!
    sleep 1
    ibv_${t}_pingpong -d "$dev" -g 0 -n "$n" 127.0.0.1
    client=$?
    wait $server
    code=$?
    cat /tmp/server.out
    step "$t-pingpong" "\"client\":$client,\"server\":$code,\"iters\":$n"
    ;;
  bw)
    ib_write_bw -d "$dev" -x 0 -F -n 200 --report_gbits > /tmp/bw.out 2>&1 &
    server=$!
    sleep 2
    ib_write_bw -d "$dev" -x 0 -F -n 200 --report_gbits 127.0.0.1
    client=$?
    wait $server
    code=$?
    cat /tmp/bw.out
    step write-bw "\"client\":$client,\"server\":$code"
    ;;
  ip=*)
    for n in /sys/class/net/*; do
      [ -e "$n/device" ] && ip addr add "${s#ip=}" dev "$(basename "$n")"
    done
    step ip "\"addr\":\"$(ip -o -4 addr | tr -s ' ' | tr '\n' ';')\""
    ;;
  serve=*|connect=*)
    t=${s#*=}
    peer=
    case "$s" in connect=*) peer=${t#*@}; t=${t%@*}; sleep 3;; esac
    case "$t" in
    bw) ib_write_bw -d "$dev" -x 0 -F -n 200 --report_gbits $peer;;
    *) ibv_${t}_pingpong -d "$dev" -g 0 -n 100 $peer;;
    esac
    step "${s%%=*}-$t" "\"code\":$?"
    ;;
  traffic=*)
    secs=${s#traffic=}
    ibv_rc_pingpong -d "$dev" -g 0 -n 100000000 > /tmp/hold.out 2>&1 &
    holder=$!
    sleep 1
    ibv_rc_pingpong -d "$dev" -g 0 -n 100000000 127.0.0.1 > /tmp/peer.out 2>&1 &
    peer=$!
    sleep 2
    step hold "\"pid\":$holder,\"peer\":$peer,\"traffic\":true,\"maps\":\"$(grep -c infiniband /proc/$holder/maps 2>/dev/null)\",\"peer_maps\":\"$(grep -c infiniband /proc/$peer/maps 2>/dev/null)\""
    i=0
    while kill -0 $holder 2>/dev/null && [ $i -lt "$secs" ]; do sleep 1; i=$((i + 1)); done
    kill $holder $peer 2>/dev/null
    wait $holder
    code=$?
    wait $peer
    pcode=$?
    cat /tmp/hold.out /tmp/peer.out
    step hold-end "\"code\":$code,\"peer_code\":$pcode,\"seconds\":$i"
    ;;
  hold=*)
    secs=${s#hold=}
    ibv_rc_pingpong -d "$dev" -g 0 > /tmp/hold.out 2>&1 &
    holder=$!
    sleep 2
    step hold "\"pid\":$holder,\"maps\":\"$(grep -c infiniband /proc/$holder/maps 2>/dev/null)\""
    i=0
    while kill -0 $holder 2>/dev/null && [ $i -lt "$secs" ]; do sleep 1; i=$((i + 1)); done
    kill $holder 2>/dev/null
    wait $holder
    code=$?
    cat /tmp/hold.out
    step hold-end "\"code\":$code,\"seconds\":$i"
    ;;
  esac
done
