/* DPDK's inline functions as real symbols, so that Rust can call them.
 *
 * rte_eth_rx_burst and friends are static inline in DPDK's headers (they
 * index the fast-path ops table and call the PMD's burst function); bindgen
 * cannot export them. Each wrapper here is one call; with the C compiler's
 * -O2 it is the inline body and a return. */
#include <rte_config.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include "shim.h"

uint16_t sluice_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
				 struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t sluice_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
				 struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *sluice_rte_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

int sluice_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp,
				  struct rte_mbuf **mbufs, unsigned int count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void sluice_rte_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

void *sluice_rte_pktmbuf_mtod(struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, void *);
}

uint16_t sluice_rte_pktmbuf_headroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_headroom(m);
}

uint16_t sluice_rte_pktmbuf_priv_size(struct rte_mempool *mp)
{
	return rte_pktmbuf_priv_size(mp);
}

uint16_t sluice_rte_pktmbuf_data_room_size(struct rte_mempool *mp)
{
	return rte_pktmbuf_data_room_size(mp);
}

int sluice_rte_errno(void)
{
	return rte_errno;
}

unsigned int sluice_rte_lcore_id(void)
{
	return rte_lcore_id();
}

uint16_t sluice_rte_pktmbuf_headroom_default(void)
{
	return RTE_PKTMBUF_HEADROOM;
}

uint32_t sluice_rte_mbuf_size(void)
{
	return sizeof(struct rte_mbuf);
}
