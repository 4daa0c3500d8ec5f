#!/usr/bin/env bash
# benches/afxdp.sh: packets per second dropped and reflected on ONE veth
# pair, in ONE run, by
#
#   kernel   the Linux kernel running the XDP object natively on the veth
#            (ip link set dev H xdpdrv obj drop.o|macswap.o sec xdp);
#            counted by the object's own per-CPU counter (bpftool map dump)
#   sluice   sluice run --port afxdp:H --prog drop.o|macswap.o --cores RX
#            (the same objects, verified and run by the default engine —
#            the JIT on x86-64 — over AF_XDP)
#   dpdk     dpdk-testpmd --no-huge --no-pci -m 1024 -l GEN,RX --main-lcore GEN
#            --vdev net_af_xdp0,iface=H -- --forward-mode=rxonly|macswap
#            --nb-cores=1 --total-num-mbufs=16384 --stats-period=1
#            (DPDK's own AF_XDP driver; Rx-pps / Tx-pps)
#   afpacket an AF_PACKET socket, recvmmsg/sendmmsg in batches of 64
#            (benches/afxdp/afpacket.c)
#
# with one generator in the peer namespace, pinned to core GEN:
# benches/afxdp/livegen.c, which makes the kernel transmit 60-byte frames
# (64 on the wire) to H's MAC with BPF_PROG_TEST_RUN in live-frames mode
# (xdp-trafficgen's technique; xdp-trafficgen itself does not load on
# this kernel, and Debian's trafgen reached only ~0.25 Mpps on this veth).
# A veth accepts such frames only when its peer runs an XDP program, so
# the AF_PACKET case runs with an XDP_PASS program (benches/afxdp/pass.c)
# on H. The receiver under test runs on core RX (the last allowed core).
# On a veth, the XDP program and the copy into an AF_XDP socket run in the
# veth's NAPI poll, on the sender's core: the generator core pays for
# them, so every case is partly generator-bound, the kernel case the most.
#
# The generator and every receiver run SCHED_FIFO priority 1 (chrt), so
# that other work on a shared machine does not decide the figures: an
# AF_XDP RX ring of 2048 entries overflows in about a millisecond at these
# rates, well inside one time slice of a competing process. (The kernel's
# RT throttling still leaves 5% of each core to everything else.)
#
# Each case runs WARMUP + SECONDS; the figure is the median of its
# per-second rates after the warm-up. "drop" counts packets the receiver
# took and dropped; "reflect" counts packets it sent back (MAC-swapped).
#
# Usage: benches/afxdp.sh [SECONDS] [--record]
#   SECONDS   measured seconds per case (default 6; 8 cases + warm-ups
#             take about 8 * (SECONDS + 4) seconds)
#   --record  insert the results under the AF_XDP section of BENCHMARKS.md
#
# Needs root and Linux >= 5.18. Installs dpdk, clang, libbpf-dev, bpftool
# with apt-get when missing. Creates one namespace and one veth pair, and removes them (and
# every process it started) on exit, also on Ctrl-C or failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd -P)
root=$(cd "$here/.." && pwd -P)
SECS=6
RECORD=0
for a in "$@"; do
    case "$a" in
    --record) RECORD=1 ;;
    [0-9]*) SECS=$a ;;
    *)
        echo "usage: $0 [SECONDS] [--record]" >&2
        exit 2
        ;;
    esac
done
WARMUP=2

if [[ $(id -u) -ne 0 ]]; then
    echo "benches/afxdp.sh: needs root (namespaces, veth, XDP, AF_XDP)" >&2
    exit 1
fi

# Tools, installed from Debian when missing.
declare -A need=([dpdk-testpmd]=dpdk [clang]=clang [bpftool]=bpftool [ip]=iproute2 [taskset]=util-linux [python3]=python3)
missing=()
for tool in "${!need[@]}"; do
    command -v "$tool" >/dev/null || missing+=("${need[$tool]}")
done
[[ -f /usr/include/bpf/bpf.h ]] || missing+=(libbpf-dev)
if ((${#missing[@]})); then
    echo "== installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cores=$(taskset -pc $$ | sed 's/.*: //')
GEN=$(echo "$cores" | tr ',' '\n' | head -n1 | cut -d- -f1)
RX=$(echo "$cores" | tr ',' '\n' | tail -n1 | sed 's/.*-//')
if [[ "$GEN" == "$RX" ]]; then
    echo "benches/afxdp.sh: needs two cores (have: $cores)" >&2
    exit 1
fi

echo "== building sluice (release)"
(cd "$root" && cargo build --release -q -p sluice-control)
SLUICE="$root/target/release/sluice"

# Leftovers of an earlier run that was killed (its pid is in the names).
for ns in $(ip netns list | awk '{print $1}' | grep '^sluice-bench-[0-9]*$' || true); do
    kill -0 "${ns#sluice-bench-}" 2>/dev/null || ip netns del "$ns"
done
for l in $(ls /sys/class/net | grep '^slbh[0-9]*$' || true); do
    kill -0 "${l#slbh}" 2>/dev/null || ip link del "$l"
done

tmp=$(mktemp -d /tmp/sluice-afxdp-bench.XXXXXX)
NS="sluice-bench-$$"
H="slbh$$"
P="slbp$$"
GEN_PID=""
cleanup() {
    set +e
    [[ -n "$GEN_PID" ]] && kill "$GEN_PID" 2>/dev/null && wait "$GEN_PID" 2>/dev/null
    ip link set dev "$H" xdpdrv off 2>/dev/null
    ip link del "$H" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== veth pair $H <-> $NS/$P; generator on core $GEN, receivers on core $RX"
ip netns add "$NS"
ip -n "$NS" link set lo up
ip link add "$H" type veth peer name "$P" netns "$NS"
sysctl -qw "net.ipv6.conf.$H.disable_ipv6=1"
ip netns exec "$NS" sysctl -qw "net.ipv6.conf.$P.disable_ipv6=1"
ip link set "$H" up
ip -n "$NS" link set "$P" up

echo "== compiling the XDP objects, the generator and the AF_PACKET receiver"
for p in drop macswap pass; do
    clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -Wall -Werror \
        -c "$here/afxdp/$p.c" -o "$tmp/$p.o"
done
clang -O2 -Wall -Werror -o "$tmp/afpacket" "$here/afxdp/afpacket.c"
clang -O2 -Wall -Werror -o "$tmp/livegen" "$here/afxdp/livegen.c" -lbpf

HMAC=$(cat "/sys/class/net/$H/address")
PMAC=$(ip netns exec "$NS" cat "/sys/class/net/$P/address")
total=$((8 * (WARMUP + SECS + 4) + 30))
ip netns exec "$NS" chrt -f 1 taskset -c "$GEN" "$tmp/livegen" "$P" "$HMAC" "$PMAC" "$total" \
    >"$tmp/livegen.log" 2>&1 &
GEN_PID=$!
sleep 1
if ! kill -0 "$GEN_PID" 2>/dev/null; then
    echo "the generator failed:" >&2
    cat "$tmp/livegen.log" >&2
    exit 1
fi

# Median of the numbers on stdin, after the first $WARMUP, in Mpps.
median_mpps() {
    tail -n +"$((WARMUP + 1))" | sort -n | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "0.000"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.3f\n", m / 1e6
        }'
}

# The kernel, natively: per-second deltas of the object's per-CPU counter.
kernel() {
    local obj=$1
    ip link set dev "$H" xdpdrv obj "$tmp/$obj.o" sec xdp
    local prog map
    prog=$(ip -d link show dev "$H" | sed -n 's/.*prog\/xdp id \([0-9]*\).*/\1/p' | head -n1)
    map=$(bpftool prog show id "$prog" | sed -n 's/.*map_ids \([0-9]*\).*/\1/p')
    local last now
    last=$(bpftool -j map dump id "$map" | python3 -c 'import json,sys; print(sum(v["value"] for e in json.load(sys.stdin) for v in e["formatted"]["values"]))')
    for _ in $(seq $((WARMUP + SECS))); do
        sleep 1
        now=$(bpftool -j map dump id "$map" | python3 -c 'import json,sys; print(sum(v["value"] for e in json.load(sys.stdin) for v in e["formatted"]["values"]))')
        echo $((now - last))
        last=$now
    done | median_mpps
    ip link set dev "$H" xdpdrv off
}

# Sluice: its per-second status line (rx for drop, tx for reflect).
sluice() {
    local obj=$1 col=$2
    chrt -f 1 "$SLUICE" run --port "afxdp:$H" --prog "$tmp/$obj.o" --cores "$RX" \
        --duration "$((WARMUP + SECS + 1))" 2>&1 >/dev/null |
        awk -v col="$col" '/Mpps/ {
            for (i = 1; i <= NF; i++) if ($i == col) { printf "%.0f\n", $(i + 1) * 1e6; break }
        }' | head -n "$((WARMUP + SECS))" | median_mpps
}

# DPDK's AF_XDP driver in testpmd: Rx-pps or Tx-pps of each stats period.
dpdk() {
    local mode=$1 col=$2
    { timeout -s INT "$((WARMUP + SECS + 5))" chrt -f 1 dpdk-testpmd --no-huge --no-pci -m 1024 \
        -l "$GEN,$RX" --main-lcore "$GEN" --log-level=lib.eal:error \
        --vdev "net_af_xdp0,iface=$H" -- --forward-mode="$mode" --nb-cores=1 \
        --total-num-mbufs=16384 --stats-period=1 </dev/null 2>&1 || true; } |
        awk -v col="$col:" '$1 == col { print $2 }' | head -n "$((WARMUP + SECS))" | median_mpps
}

# AF_PACKET: the helper prints the packets of each second.
afpacket() {
    local mode=$1
    ip link set dev "$H" xdpdrv obj "$tmp/pass.o" sec xdp
    chrt -f 1 taskset -c "$RX" "$tmp/afpacket" "$H" "$mode" "$((WARMUP + SECS))" |
        awk '/^pps/ { print $2 }' | median_mpps
    ip link set dev "$H" xdpdrv off
}

echo "== measuring ($SECS s each after a ${WARMUP}-s warm-up)"
declare -A r
r[kernel_drop]=$(kernel drop)
echo "   kernel XDP drop     ${r[kernel_drop]} Mpps"
r[kernel_reflect]=$(kernel macswap)
echo "   kernel XDP reflect  ${r[kernel_reflect]} Mpps"
r[sluice_drop]=$(sluice drop rx)
echo "   sluice drop         ${r[sluice_drop]} Mpps"
r[sluice_reflect]=$(sluice macswap tx)
echo "   sluice reflect      ${r[sluice_reflect]} Mpps"
r[dpdk_drop]=$(dpdk rxonly Rx-pps)
echo "   dpdk rxonly         ${r[dpdk_drop]} Mpps"
r[dpdk_reflect]=$(dpdk macswap Tx-pps)
echo "   dpdk macswap        ${r[dpdk_reflect]} Mpps"
r[afpacket_drop]=$(afpacket drop)
echo "   afpacket drop       ${r[afpacket_drop]} Mpps"
r[afpacket_reflect]=$(afpacket reflect)
echo "   afpacket reflect    ${r[afpacket_reflect]} Mpps"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
table=$(
    echo "| receiver (1 core) | drop Mpps | reflect Mpps |"
    echo "|---|---:|---:|"
    echo "| kernel XDP, native mode | ${r[kernel_drop]} | ${r[kernel_reflect]} |"
    echo "| **Sluice, AF_XDP** (\`sluice run --port afxdp:H\`) | **${r[sluice_drop]}** | **${r[sluice_reflect]}** |"
    echo "| DPDK testpmd, \`net_af_xdp\` | ${r[dpdk_drop]} | ${r[dpdk_reflect]} |"
    echo "| AF_PACKET, recvmmsg/sendmmsg | ${r[afpacket_drop]} | ${r[afpacket_reflect]} |"
    echo
    echo "| ratio | drop | reflect |"
    echo "|---|---:|---:|"
    echo "| Sluice / DPDK AF_XDP (target >= 1.0) | $(ratio "${r[sluice_drop]}" "${r[dpdk_drop]}") | $(ratio "${r[sluice_reflect]}" "${r[dpdk_reflect]}") |"
    echo "| Sluice / kernel XDP (target >= 0.8) | $(ratio "${r[sluice_drop]}" "${r[kernel_drop]}") | $(ratio "${r[sluice_reflect]}" "${r[kernel_reflect]}") |"
    echo "| Sluice / AF_PACKET | $(ratio "${r[sluice_drop]}" "${r[afpacket_drop]}") | $(ratio "${r[sluice_reflect]}" "${r[afpacket_reflect]}") |"
)
echo
echo "$table"

if ((RECORD)); then
    bm="$root/BENCHMARKS.md"
    marker="<!-- afxdp.sh runs: newest first, inserted here by benches/afxdp.sh --record -->"
    if ! grep -qF "$marker" "$bm"; then
        echo "BENCHMARKS.md has no AF_XDP section marker; not recording" >&2
        exit 1
    fi
    block="$tmp/block.md"
    {
        echo
        echo "Run of $(date -u +%Y-%m-%d), \`benches/afxdp.sh $SECS\`: Linux $(uname -r), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), DPDK $(dpkg-query -W -f='${Version}' dpdk 2>/dev/null)."
        echo
        echo "$table"
    } >"$block"
    # Insert after the marker, leaving every other section as it is.
    awk -v marker="$marker" -v block="$block" '
        { print }
        $0 == marker { while ((getline line < block) > 0) print line }
    ' "$bm" >"$tmp/BENCHMARKS.md"
    cat "$tmp/BENCHMARKS.md" >"$bm"
    echo "== recorded in BENCHMARKS.md"
fi
