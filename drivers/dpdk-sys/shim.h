/* DPDK's inline functions that Sluice calls, as real symbols (shim.c). */
#ifndef SLUICE_DPDK_SHIM_H
#define SLUICE_DPDK_SHIM_H

#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

uint16_t sluice_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
				 struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t sluice_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
				 struct rte_mbuf **tx_pkts, uint16_t nb_pkts);
struct rte_mbuf *sluice_rte_pktmbuf_alloc(struct rte_mempool *mp);
int sluice_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp,
				  struct rte_mbuf **mbufs, unsigned int count);
void sluice_rte_pktmbuf_free(struct rte_mbuf *m);
void *sluice_rte_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t sluice_rte_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t sluice_rte_pktmbuf_priv_size(struct rte_mempool *mp);
uint16_t sluice_rte_pktmbuf_data_room_size(struct rte_mempool *mp);
int sluice_rte_errno(void);
unsigned int sluice_rte_lcore_id(void);
/* RTE_PKTMBUF_HEADROOM as this libdpdk was built. */
uint16_t sluice_rte_pktmbuf_headroom_default(void);
/* sizeof(struct rte_mbuf), to check bindgen's layout against the compiler's. */
uint32_t sluice_rte_mbuf_size(void);

#endif
