/* Exported wrappers for DPDK's `static inline` fast-path functions, which have
 * no symbol in the shared libraries and so cannot be bound directly. */
#ifndef BOOTCACHE_SHIM_H
#define BOOTCACHE_SHIM_H
#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;
struct rte_ring;

uint16_t bc_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t bc_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *bc_pktmbuf_alloc(struct rte_mempool *mp);
int bc_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
void bc_pktmbuf_free(struct rte_mbuf *m);
struct rte_mbuf *bc_mbuf_raw_alloc(struct rte_mempool *mp);
void bc_pktmbuf_reset(struct rte_mbuf *m);
struct rte_mbuf *bc_pktmbuf_clone(struct rte_mbuf *m, struct rte_mempool *mp);
void bc_mbuf_refcnt_update(struct rte_mbuf *m, int16_t v);
uint16_t bc_mbuf_refcnt_read(const struct rte_mbuf *m);
char *bc_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int bc_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
uint16_t bc_pktmbuf_tailroom(const struct rte_mbuf *m);
int bc_errno(void);
unsigned bc_lcore_id(void);
uint64_t bc_get_tsc_cycles(void);
unsigned bc_ring_sp_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned bc_ring_sc_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
void bc_prefetch0(const void *p);
#endif
