/*
 * Real, linkable functions for DPDK's static-inline functions and macros, which bindgen cannot
 * bind. Each one forwards to the DPDK function of the same name minus the `shim_` prefix.
 * Only FFI, no logic.
 */
#ifndef VIPD_DPDK_SHIM_H
#define VIPD_DPDK_SHIM_H

#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

/* ethdev fast path */
uint16_t shim_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
                               uint16_t nb_pkts);
uint16_t shim_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
                               uint16_t nb_pkts);

/* mbufs */
struct rte_mbuf *shim_rte_pktmbuf_alloc(struct rte_mempool *mp);
int shim_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
void shim_rte_pktmbuf_free(struct rte_mbuf *m);
void *shim_rte_pktmbuf_mtod(struct rte_mbuf *m);
char *shim_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *shim_rte_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *shim_rte_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int shim_rte_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
uint16_t shim_rte_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t shim_rte_pktmbuf_tailroom(const struct rte_mbuf *m);
uint16_t shim_rte_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t shim_rte_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t shim_rte_pktmbuf_nb_segs(const struct rte_mbuf *m);
uint16_t shim_rte_pktmbuf_data_room_size(struct rte_mempool *mp);
/* rte_pktmbuf_free_bulk with the common case inlined: direct, unshared, one-segment mbufs go
 * back to their pool with rte_mempool_put_bulk (the per-lcore cache); the rest through
 * rte_pktmbuf_free. */
void shim_rte_pktmbuf_free_bulk_fast(struct rte_mbuf **mbufs, unsigned count);

/* lcores, errors, prefetch */
unsigned shim_rte_lcore_id(void);
int shim_rte_errno(void);
void shim_rte_prefetch0(const void *p);

/* ethdev RSS flag sets (function-like macros bindgen cannot evaluate) */
uint64_t shim_rte_eth_rss_ip(void);
uint64_t shim_rte_eth_rss_tcp(void);
uint64_t shim_rte_eth_rss_udp(void);

#endif
