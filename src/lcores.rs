//! How forwarding lcores map onto queues: one RX/TX queue pair per
//! forwarding lcore on both ports, as many as both devices offer; injected
//! frames on a TX queue of their own where the devices have one more.

use dpdk::{PortInfo, RSS_IP};

/// The queue layout for both ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// RX queues per port = TX queues for forwarding = forwarding lcores used.
    pub(crate) queues: u16,
    /// TX queues per port (one more than `queues` when injection has its own).
    pub(crate) tx_queues: u16,
    /// The TX queue the slow path's frames leave on.
    pub(crate) inject_queue: u16,
    /// Per side: RSS on the address pair spreads the frames.
    pub(crate) rss: [bool; 2],
    /// One line each for the operator: what the devices limited.
    pub(crate) notes: Vec<String>,
}

/// The layout for `lcores` forwarding lcores on ports that can do `infos`.
pub(crate) fn plan(infos: &[PortInfo; 2], lcores: usize) -> Plan {
    let want = u16::try_from(lcores.max(1)).unwrap_or(u16::MAX);
    let offered = infos
        .iter()
        .map(|i| i.max_rx_queues.min(i.max_tx_queues))
        .min()
        .unwrap_or(1)
        .max(1);
    let queues = want.min(offered);
    let mut notes = Vec::new();
    if queues < want {
        let (side, narrow) = infos
            .iter()
            .enumerate()
            .min_by_key(|(_, i)| i.max_rx_queues.min(i.max_tx_queues))
            .map(|(s, i)| (s, i.driver.as_str()))
            .unwrap_or((0, ""));
        notes.push(format!(
            "port {side} ({narrow}) offers {offered} queue pair(s): forwarding on {queues} of {want} worker lcores, the others stay idle"
        ));
    }
    let rss = std::array::from_fn(|s| queues > 1 && infos[s].rss_offloads & RSS_IP != 0);
    for (side, info) in infos.iter().enumerate() {
        if queues > 1 && !rss[side] {
            notes.push(format!(
                "port {side} ({}) has {queues} queues but no RSS: its peer chooses each frame's queue",
                info.driver
            ));
        }
    }
    let spare_tx = infos.iter().all(|i| i.max_tx_queues > queues);
    let (tx_queues, inject_queue) = if spare_tx {
        (queues + 1, queues)
    } else {
        (queues, 0)
    };
    Plan {
        queues,
        tx_queues,
        inject_queue,
        rss,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(driver: &str, rx: u16, tx: u16, rss: u64) -> PortInfo {
        PortInfo {
            driver: driver.into(),
            max_rx_queues: rx,
            max_tx_queues: tx,
            rss_offloads: rss,
            max_rx_pktlen: 1518,
        }
    }

    #[test]
    fn one_queue_devices_use_one_lcore_and_say_so() {
        let af = info("net_af_packet", 1, 1, 0);
        let p = plan(&[af.clone(), af.clone()], 2);
        assert_eq!((p.queues, p.tx_queues, p.inject_queue), (1, 1, 0));
        assert_eq!(p.notes.len(), 1);
        assert!(p.notes[0].contains("forwarding on 1 of 2"), "{:?}", p.notes);
        let p = plan(&[af.clone(), af], 1);
        assert!(p.notes.is_empty());
        assert_eq!(p.rss, [false, false]);
    }

    #[test]
    fn rss_devices_get_a_queue_per_lcore_and_an_inject_queue() {
        let nic = info("net_ice", 64, 64, u64::MAX);
        let p = plan(&[nic.clone(), nic], 4);
        assert_eq!((p.queues, p.tx_queues, p.inject_queue), (4, 5, 4));
        assert_eq!(p.rss, [true, true]);
        assert!(p.notes.is_empty());
    }

    #[test]
    fn multi_queue_without_rss_is_noted_and_injection_shares_queue_0() {
        let v = info("net_virtio_user", 2, 2, 0);
        let p = plan(&[v.clone(), v], 2);
        assert_eq!((p.queues, p.tx_queues, p.inject_queue), (2, 2, 0));
        assert_eq!(p.rss, [false, false]);
        assert_eq!(p.notes.len(), 2);
    }

    #[test]
    fn the_narrower_port_decides() {
        let p = plan(
            &[info("a", 8, 8, u64::MAX), info("net_af_packet", 2, 2, 0)],
            4,
        );
        assert_eq!(p.queues, 2);
        assert!(p.notes[0].contains("net_af_packet"));
    }
}
