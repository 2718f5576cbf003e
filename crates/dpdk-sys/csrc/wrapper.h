/* The DPDK API surface bootcache binds. bindgen reads this with the cflags
 * `pkg-config --cflags libdpdk` gives (they force-include rte_config.h). */
#include <rte_config.h>
#include <rte_version.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_flow.h> /* not included by rte_ethdev.h */
#include <rte_ring.h>
#include <rte_bus_vdev.h>
#include "shim.h"
