/* See shim.h. Compiled with `pkg-config --cflags libdpdk` (which force-includes rte_config.h). */
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_prefetch.h>

#include "shim.h"

uint16_t shim_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
                               uint16_t nb_pkts) {
    return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t shim_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
                               uint16_t nb_pkts) {
    return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *shim_rte_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int shim_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count) {
    return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void shim_rte_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void *shim_rte_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }

char *shim_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }

char *shim_rte_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }

char *shim_rte_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }

int shim_rte_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }

uint16_t shim_rte_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }

uint16_t shim_rte_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }

uint16_t shim_rte_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }

uint32_t shim_rte_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }

uint16_t shim_rte_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }

uint16_t shim_rte_pktmbuf_data_room_size(struct rte_mempool *mp) {
    return rte_pktmbuf_data_room_size(mp);
}

void shim_rte_pktmbuf_free_bulk_fast(struct rte_mbuf **mbufs, unsigned count) {
    void *pending[64];
    struct rte_mempool *pool = NULL;
    unsigned n = 0;
    for (unsigned i = 0; i < count; i++) {
        struct rte_mbuf *m = mbufs[i];
        if (likely(rte_mbuf_refcnt_read(m) == 1 && RTE_MBUF_DIRECT(m) && m->next == NULL &&
                   m->nb_segs == 1)) {
            /* What rte_pktmbuf_prefree_seg leaves for such an mbuf: nothing to reset. */
            if (n > 0 && (m->pool != pool || n == RTE_DIM(pending))) {
                rte_mempool_put_bulk(pool, pending, n);
                n = 0;
            }
            pool = m->pool;
            pending[n++] = m;
        } else {
            rte_pktmbuf_free(m);
        }
    }
    if (n > 0)
        rte_mempool_put_bulk(pool, pending, n);
}

unsigned shim_rte_lcore_id(void) { return rte_lcore_id(); }

int shim_rte_errno(void) { return rte_errno; }

void shim_rte_prefetch0(const void *p) { rte_prefetch0(p); }

uint64_t shim_rte_eth_rss_ip(void) { return RTE_ETH_RSS_IP; }

uint64_t shim_rte_eth_rss_tcp(void) { return RTE_ETH_RSS_TCP; }

uint64_t shim_rte_eth_rss_udp(void) { return RTE_ETH_RSS_UDP; }
