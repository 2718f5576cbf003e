/* See shim.h. Compiled with `pkg-config --cflags libdpdk`. */
#include <rte_config.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_prefetch.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include "shim.h"

uint16_t bc_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t bc_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *bc_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int bc_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void bc_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

struct rte_mbuf *bc_mbuf_raw_alloc(struct rte_mempool *mp) { return rte_mbuf_raw_alloc(mp); }

void bc_pktmbuf_reset(struct rte_mbuf *m) { rte_pktmbuf_reset(m); }

struct rte_mbuf *bc_pktmbuf_clone(struct rte_mbuf *m, struct rte_mempool *mp)
{
	return rte_pktmbuf_clone(m, mp);
}

void bc_mbuf_refcnt_update(struct rte_mbuf *m, int16_t v) { rte_mbuf_refcnt_update(m, v); }

uint16_t bc_mbuf_refcnt_read(const struct rte_mbuf *m) { return rte_mbuf_refcnt_read(m); }

char *bc_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }

int bc_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }

uint16_t bc_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }

int bc_errno(void) { return rte_errno; }

unsigned bc_lcore_id(void) { return rte_lcore_id(); }

uint64_t bc_get_tsc_cycles(void) { return rte_get_tsc_cycles(); }

unsigned bc_ring_sp_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{
	return rte_ring_sp_enqueue_burst(r, objs, n, NULL);
}

unsigned bc_ring_sc_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{
	return rte_ring_sc_dequeue_burst(r, objs, n, NULL);
}

void bc_prefetch0(const void *p) { rte_prefetch0(p); }
