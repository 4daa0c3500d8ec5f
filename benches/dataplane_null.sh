#!/bin/sh
# benches/dataplane_null.sh: per-core forwarding, Sluice against DPDK's
# testpmd, side by side in one run (issue 4, "Measure").
#
# Both forward 64-byte packets between two null ports on ONE forwarding
# core, swapping the Ethernet addresses of every packet, for DURATION
# seconds:
#
#   sluice   sluice run --port null --port null --prog macswap_fwd.o
#                       --cores FWD_CORE --duration DURATION -j
#   sluice over DPDK's null ports (the same program, DPDK's net_null PMD
#   under Sluice's DPDK driver instead of Sluice's own null port):
#            sluice run --port dpdk:net_null0 --port dpdk:net_null1
#                       --prog macswap_fwd.o --cores FWD_CORE --duration DURATION -j
#   testpmd  dpdk-testpmd --no-huge --no-pci -m 1024 -l MAIN_CORE,FWD_CORE --main-lcore MAIN_CORE
#                       --file-prefix sluice_bench_PID
#                       --vdev net_null0 --vdev net_null1 -- --forward-mode=macswap
#                       --nb-cores=1 --total-num-mbufs=16384 --stats-period=1
#
# What "equivalent" means here. testpmd's macswap with two ports forwards
# port 0 -> port 1 and port 1 -> port 0 (the paired topology): RX a burst,
# swap the MACs, TX the burst on the OTHER port. The Sluice program below
# does the same per packet: it swaps the MACs and returns
# bpf_redirect(other port), so Sluice pays for a cross-port redirect (the
# ifindex lookup and a TX burst per destination), exactly as testpmd pays
# for its cross-port TX. The other port is `ingress_ifindex ^ 1`: `sluice
# run` numbers ports without a kernel interface from 1000 in the order
# given, so the pair is 1000/1001 (the script checks this in the JSON and
# that no redirect was invalid). The XDP_TX variant (bpf/tests/progs/
# macswap.o, back out of the same port) is run too and printed for
# reference; it is not the headline, because it does less than testpmd.
#
# Counting, the same for both: packets transmitted per second, summed over
# both ports (every received packet is transmitted once).
#   sluice:  sum of ports[].tx_packets / duration_secs (from `-j`; the
#            clock runs from the workers' start to their stop).
#   testpmd: the mean, over its stats periods (--stats-period=1; each
#            period's "Tx-pps" is computed from testpmd's own clock, so it
#            does not matter that periods come late on a busy machine),
#            of the sum over both ports of "Tx-pps"; the first period, a
#            warm-up, is left out.
#
# --main-lcore and --file-prefix are not in the issue's command: the first
# keeps testpmd's main lcore off the forwarding core whatever the core
# numbers, the second gives this testpmd its own EAL runtime files, so a
# DPDK process someone else runs on the machine (tests of the DPDK driver)
# neither blocks it nor is disturbed by it.
#
# One difference that favours testpmd, kept on purpose (it is DPDK's
# default and the command the issue names): net_null without copy=1 does
# not write packet bytes on RX, while Sluice's null port copies its
# 64-byte template into each buffer (what net_null,copy=1 does). Set
# TESTPMD_COPY=1 to give testpmd the same work.
#
# Rounds: REPEAT (1) rounds, each running the four one after another, so
# that on a shared machine every ratio compares runs made close in time;
# with several rounds the medians are printed too.
#
# Environment: DURATION (10), REPEAT (1), FWD_CORE (last allowed core),
# MAIN_CORE (the first allowed core other than FWD_CORE), TESTPMD_COPY
# (0), PERF=1 to also record a profile of the first Sluice run (perf
# record with DWARF call graphs, into the raw output directory; read it
# with `perf report -i .../perf.data --children --sort symbol`).
# Needs: cargo, awk, taskset; dpdk-testpmd (Debian's dpdk-dev), jq, clang
# and the libbpf headers (libbpf-dev) are installed with apt-get when
# missing (as root, or through sudo).
set -eu

cd "$(dirname "$0")/.."
root=$(pwd -P)
out="$root/target/bench/dataplane_null"
mkdir -p "$out"

DURATION=${DURATION:-10}
TESTPMD_COPY=${TESTPMD_COPY:-0}
PERF=${PERF:-0}
REPEAT=${REPEAT:-1}

need_pkg() { # need_pkg COMMAND DEBIAN_PACKAGE
	command -v "$1" >/dev/null 2>&1 && return 0
	echo "== $(basename "$1") is missing: installing Debian's $2" >&2
	if [ "$(id -u)" -eq 0 ]; then
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"
	else
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"
	fi
}
need_pkg dpdk-testpmd dpdk-dev
need_pkg jq jq
need_pkg clang clang
if [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
	need_pkg /nonexistent/libbpf-headers libbpf-dev
fi

# Cores: the forwarding core is the last one this process may use (both
# tools get the same one); testpmd's main lcore is another one.
allowed=$(taskset -pc $$ | sed 's/.*: //')
expand() { # "0-2,5" -> "0 1 2 5"
	echo "$1" | tr ',' '\n' | awk -F- '{ if (NF == 2) for (i = $1; i <= $2; i++) print i; else print $1 }'
}
cores=$(expand "$allowed")
FWD_CORE=${FWD_CORE:-$(echo "$cores" | tail -n 1)}
MAIN_CORE=${MAIN_CORE:-$(echo "$cores" | grep -vx "$FWD_CORE" | head -n 1)}
if [ -z "$MAIN_CORE" ]; then
	echo "testpmd needs two cores (a main and a forwarding lcore); allowed: $allowed" >&2
	exit 1
fi

echo "== building Sluice (release)" >&2
cargo build --release -q -p sluice-control
sluice="$root/target/release/sluice"

# The MAC-swap forwarder (see the header for why it redirects).
cat > "$out/macswap_fwd.c" <<'EOF'
// SPDX-License-Identifier: GPL-2.0
/* testpmd's macswap forwarding as XDP: swap the Ethernet addresses and send
 * the frame out of the other port of a pair (ifindex ^ 1). Generated by
 * benches/dataplane_null.sh. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_macswap_fwd(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	unsigned char tmp[ETH_ALEN];

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
	return bpf_redirect(ctx->ingress_ifindex ^ 1, 0);
}

char _license[] SEC("license") = "GPL";
EOF
clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -Wall -Werror \
	-c "$out/macswap_fwd.c" -o "$out/macswap_fwd.o"

# The commands are word-split on purpose when run (no path may hold a space).
sluice_cmd="$sluice run --port null --port null --prog $out/macswap_fwd.o --cores $FWD_CORE --duration $DURATION -j"
tx_cmd="$sluice run --port null --port null --prog $root/bpf/tests/progs/macswap.o --cores $FWD_CORE --duration $DURATION -j"
null_args="--vdev net_null0 --vdev net_null1"
dpdk_ports="--port dpdk:net_null0 --port dpdk:net_null1"
if [ "$TESTPMD_COPY" = 1 ]; then
	null_args="--vdev net_null0,copy=1 --vdev net_null1,copy=1"
	dpdk_ports="--port dpdk:net_null0,copy=1 --port dpdk:net_null1,copy=1"
fi
dpdk_cmd="$sluice run $dpdk_ports --prog $out/macswap_fwd.o --cores $FWD_CORE --duration $DURATION -j"
testpmd_cmd="dpdk-testpmd --no-huge --no-pci -m 1024 -l $MAIN_CORE,$FWD_CORE --main-lcore $MAIN_CORE --file-prefix sluice_bench_$$ $null_args --log-level=lib.eal:error -- --forward-mode=macswap --nb-cores=1 --total-num-mbufs=16384 --stats-period=1"

check_sluice() { # FILE: the ports must be the 1000/1001 pair, nothing lost
	jq -e '
		(.ports | length) == 2
		and ([.ports[].ifindex] | sort) == [1000, 1001]
		and all(.ports[]; .rx_packets > 0
			and .dropped.redirect_invalid == 0 and .aborted == 0
			and .rx_packets == (.dropped.xdp_drop + .tx_verdicts + .redirected + .passed + .aborted))
	' "$1" >/dev/null || {
		echo "unexpected Sluice result in $1:" >&2
		cat "$1" >&2
		exit 1
	}
}

sluice_mpps() { # FILE -> packets sent per second over both ports, in millions
	jq '([.ports[].tx_packets] | add) / .duration_secs / 1e6' "$1"
}

run_testpmd() { # LOG
	# testpmd forwards until SIGINT, then prints its totals and exits. Its
	# start-up (EAL, a 1 GiB heap without huge pages, the mbuf pool) takes
	# seconds, so the DURATION seconds are timed from the moment it
	# reports that forwarding started, as Sluice's duration_secs is.
	$testpmd_cmd > "$1" 2>&1 &
	testpmd_pid=$!
	waited=0
	until grep -q "packet forwarding - ports=" "$1"; do
		if ! kill -0 "$testpmd_pid" 2>/dev/null || [ "$waited" -ge 600 ]; then
			echo "testpmd did not start forwarding:" >&2
			tail -n 30 "$1" >&2
			kill -INT "$testpmd_pid" 2>/dev/null || true
			exit 1
		fi
		sleep 0.1
		waited=$((waited + 1))
	done
	sleep "$DURATION"
	kill -INT "$testpmd_pid"
	wait "$testpmd_pid" || true
	# EAL's runtime files for this prefix (root: /var/run/dpdk, else
	# $XDG_RUNTIME_DIR/dpdk).
	rm -rf "/var/run/dpdk/sluice_bench_$$" "${XDG_RUNTIME_DIR:-/nonexistent}/dpdk/sluice_bench_$$" 2>/dev/null || true
}

testpmd_mpps() { # LOG -> mean over the stats periods but the first
	# Every stats period prints one "Tx-pps: N" per port: sum each pair,
	# leave out the first period (start-up), average the rest.
	awk '
		/Tx-pps:/ { sum += $2; if (++n % 2 == 0) { periods++; if (periods > 1) { total += sum; kept++ } sum = 0 } }
		END { if (kept == 0) exit 1; printf "%.3f\n", total / kept / 1e6 }
	' "$1" || {
		echo "no testpmd stats periods in $1:" >&2
		tail -n 30 "$1" >&2
		exit 1
	}
}

load() { cut -d' ' -f1 /proc/loadavg; }

echo "== sluice:  $sluice_cmd" >&2
echo "== XDP_TX:  $tx_cmd" >&2
echo "== on DPDK: $dpdk_cmd" >&2
echo "== testpmd: $testpmd_cmd" >&2
results="$out/rounds.txt"
: > "$results"
rm -rf "$out"/round[0-9]*
round=1
while [ "$round" -le "$REPEAT" ]; do
	r="$out/round$round"
	mkdir -p "$r"
	echo "== round $round of $REPEAT: sluice (redirect), sluice (XDP_TX), sluice on DPDK net_null, testpmd, ${DURATION}s each on core $FWD_CORE (load average $(load))" >&2
	if [ "$PERF" = 1 ] && [ "$round" = 1 ]; then
		perf record --call-graph dwarf,16384 -F 2000 -o "$out/perf.data" -- $sluice_cmd > "$r/sluice.json" 2> "$out/perf.log"
	else
		$sluice_cmd > "$r/sluice.json"
	fi
	$tx_cmd > "$r/sluice_tx.json"
	$dpdk_cmd > "$r/sluice_dpdk.json"
	run_testpmd "$r/testpmd.log"
	check_sluice "$r/sluice.json"
	check_sluice "$r/sluice_tx.json"
	check_sluice "$r/sluice_dpdk.json"
	s=$(sluice_mpps "$r/sluice.json")
	x=$(sluice_mpps "$r/sluice_tx.json")
	t=$(testpmd_mpps "$r/testpmd.log")
	ns=$(jq '[.ports[].prog_ns_per_packet] | add / length' "$r/sluice.json")
	xns=$(jq '[.ports[].prog_ns_per_packet] | add / length' "$r/sluice_tx.json")
	burst=$(jq '([.ports[].rx_packets] | add) / ([.ports[].batches] | add)' "$r/sluice.json")
	d=$(sluice_mpps "$r/sluice_dpdk.json")
	echo "$round $s $x $t $ns $xns $burst $(load) $d" >> "$results"
	round=$((round + 1))
done

# --- Report ----------------------------------------------------------------

printf '\ndataplane_null: 64-byte packets, 2 null ports, 1 forwarding core (%s), %ss per run, %s round(s)\n' \
	"$FWD_CORE" "$DURATION" "$REPEAT"
printf '  round  sluice Mpps  ratio   XDP_TX Mpps  ratio   testpmd%s Mpps  prog ns/pkt (redirect, XDP_TX)  burst  load\n' \
	"$([ "$TESTPMD_COPY" = 1 ] && echo ',copy=1' || echo '')"
awk '{ printf "  %5d  %11.3f  %5.3f  %11.3f  %5.3f  %12.3f  %11.1f %7.1f  %14.1f  %4s\n", $1, $2, $2 / $4, $3, $3 / $4, $4, $5, $6, $7, $8 }' "$results"
printf '  round  sluice over DPDK net_null Mpps  ratio to testpmd  ratio to sluice on its own null ports\n'
awk '{ printf "  %5d  %29.3f  %16.3f  %37.3f\n", $1, $9, $9 / $4, $9 / $2 }' "$results"
# Medians over the rounds (of the per-round figures).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ms=$(awk '{ print $2 }' "$results" | median)
mx=$(awk '{ print $3 }' "$results" | median)
mt=$(awk '{ print $4 }' "$results" | median)
mr=$(awk '{ print $2 / $4 }' "$results" | median)
mrx=$(awk '{ print $3 / $4 }' "$results" | median)
mns=$(awk '{ print $5 }' "$results" | median)
md=$(awk '{ print $9 }' "$results" | median)
mrd=$(awk '{ print $9 / $4 }' "$results" | median)
printf '  median: sluice %.3f Mpps (program %.1f ns/packet), XDP_TX %.3f Mpps, testpmd %.3f Mpps\n' "$ms" "$mns" "$mx" "$mt"
printf '  ratio sluice/testpmd: %.3f (median of the rounds; XDP_TX variant %.3f); target with the interpreter >= 0.3\n' "$mr" "$mrx"
printf '  sluice over DPDK net_null: %.3f Mpps, ratio to testpmd %.3f (medians)\n' "$md" "$mrd"
printf '  raw output: %s\n' "$out"
