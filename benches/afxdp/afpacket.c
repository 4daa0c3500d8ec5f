// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * afpacket.c - benches/afxdp.sh's AF_PACKET baseline: one thread, one
 * raw socket on IFACE, recvmmsg in batches of 64; "drop" counts and
 * discards, "reflect" swaps the Ethernet addresses and sends the batch
 * back with sendmmsg. Prints the packets handled in each second (one
 * line "pps N" per second) for SECONDS seconds.
 *
 * Usage: afpacket IFACE drop|reflect SECONDS
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	static char bufs[BATCH][2048];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	struct sockaddr_ll sll = { 0 };
	struct timeval tv = { 0, 100000 };
	int one = 1, reflect, fd, i;
	double end, tick;
	long count = 0;

	if (argc != 4) {
		fprintf(stderr, "usage: %s IFACE drop|reflect SECONDS\n", argv[0]);
		return 2;
	}
	reflect = strcmp(argv[2], "reflect") == 0;
	fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = if_nametoindex(argv[1]);
	if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		perror("bind");
		return 1;
	}
	setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = sizeof(bufs[i]);
		memset(&msgs[i], 0, sizeof(msgs[i]));
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	tick = now() + 1;
	end = now() + atof(argv[3]);
	while (now() < end) {
		int n = recvmmsg(fd, msgs, BATCH, 0, NULL);

		if (n > 0) {
			count += n;
			if (reflect) {
				for (i = 0; i < n; i++) {
					unsigned char tmp[6], *p = (unsigned char *)bufs[i];

					memcpy(tmp, p, 6);
					memcpy(p, p + 6, 6);
					memcpy(p + 6, tmp, 6);
					iov[i].iov_len = msgs[i].msg_len;
				}
				sendmmsg(fd, msgs, n, 0);
				for (i = 0; i < n; i++)
					iov[i].iov_len = sizeof(bufs[i]);
			}
		}
		if (now() >= tick) {
			printf("pps %ld\n", count);
			fflush(stdout);
			count = 0;
			tick += 1;
		}
	}
	return 0;
}
