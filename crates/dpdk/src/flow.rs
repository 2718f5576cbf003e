//! Steering frames to an RX queue with `rte_flow`: one rule matches IPv4/UDP
//! by exact addresses and ports and sends what it matches to one queue, so a
//! queue of its own can carry the boot traffic and the forwarding lcores never
//! read those frames.
//!
//! Order of calls: configure the port with enough RX queues first (the queue
//! index is checked against the configuration). DPDK's contract since 21.11:
//! a PMD that does not advertise `RTE_ETH_DEV_CAPA_FLOW_RULE_KEEP`
//! ([`rules_kept_across_restart`]) accepts rules only once the port has been
//! started, and does not drop them by itself on stop: create rules after
//! `start`, destroy or [`flush`] them before `stop`. With the capability,
//! rules may be created before `start` and survive a restart. Validation never
//! changes the device. Measured here (DPDK 22.11, Debian 12 kernel without
//! `cls_flower`): net_null and net_ring have no `rte_flow` (`ENOSYS`);
//! net_tap (no `FLOW_RULE_KEEP`) validates the rules stopped and started,
//! but creating one needs
//! TC flower, skbedit and multiq in the kernel, and without them fails with
//! `EEXIST` ("overlapping rules or Kernel too old for flower support").
//!
//! A rule only adds frames to its queue; it does not take the queue out of
//! RSS. Frames no rule matches still go where RSS (or net_tap's tun hash)
//! sends them, so with RSS over every queue the steered queue also gets a
//! share of other traffic unless the redirection table leaves it out.
//!
//! A [`Flow`] is a handle. Dropping it leaves the rule on the port; [`flush`]
//! removes every rule, [`Flow::destroy`] one. Handles are tracked here so
//! that destroying one that [`flush`] already removed, or one of a closed
//! port, is an error instead of a use-after-free inside the PMD.

use std::ffi::CStr;
use std::net::Ipv4Addr;
use std::ptr::{self, NonNull};
use std::sync::{Mutex, MutexGuard};

use dpdk_sys as sys;

use crate::error::{rte_errno, strerror, Error};
use crate::Port;

/// What a steering rule matches: IPv4/UDP, each field exact when given and
/// any value when `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct UdpMatch {
    /// IPv4 source address.
    pub src: Option<Ipv4Addr>,
    /// IPv4 destination address.
    pub dst: Option<Ipv4Addr>,
    /// UDP source port.
    pub src_port: Option<u16>,
    /// UDP destination port.
    pub dst_port: Option<u16>,
}

impl UdpMatch {
    /// UDP to this destination port, from anywhere.
    pub fn to_port(port: u16) -> UdpMatch {
        UdpMatch {
            dst_port: Some(port),
            ..UdpMatch::default()
        }
    }
}

/// DHCP server port.
const DHCP_SERVER: u16 = 67;
/// DHCP client port.
const DHCP_CLIENT: u16 = 68;
/// PXE boot service (proxyDHCP on the boot server).
const PXE_BOOT_SERVICE: u16 = 4011;

/// The rules that catch network-boot traffic: DHCP to the server port,
/// DHCP from server to client, the PXE boot service in both directions,
/// and all UDP to and from each boot server.
pub fn boot_traffic(servers: &[Ipv4Addr]) -> Vec<UdpMatch> {
    let mut rules = vec![
        UdpMatch::to_port(DHCP_SERVER),
        UdpMatch {
            src_port: Some(DHCP_SERVER),
            dst_port: Some(DHCP_CLIENT),
            ..UdpMatch::default()
        },
        UdpMatch::to_port(PXE_BOOT_SERVICE),
        UdpMatch {
            src_port: Some(PXE_BOOT_SERVICE),
            ..UdpMatch::default()
        },
    ];
    for &server in servers {
        rules.push(UdpMatch {
            dst: Some(server),
            ..UdpMatch::default()
        });
        rules.push(UdpMatch {
            src: Some(server),
            ..UdpMatch::default()
        });
    }
    rules
}

/// A flow-rule call that failed: DPDK's error number and the driver's own
/// message (`rte_flow_error.message`), shown as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("port {port}: {op}: {}", self.detail())]
pub struct FlowError {
    /// The port.
    pub port: u16,
    /// What was attempted ("validate flow rule", "create flow rule", …).
    pub op: &'static str,
    /// The positive error number (`ENOSYS`: no rte_flow on this PMD,
    /// `ENOTSUP`/`EINVAL`: rule refused, `ERANGE`: queue out of range, …).
    pub errno: i32,
    /// What the driver blamed (`rte_flow_error.type`), e.g. "action".
    pub cause: &'static str,
    /// The driver's message, on one line (`None` if it gave none).
    pub message: Option<String>,
}

impl FlowError {
    /// The text after the operation: message, cause and errno, no newline.
    fn detail(&self) -> String {
        let text = strerror(self.errno);
        match &self.message {
            Some(m) if *m == text => format!("{m} (errno {}, cause: {})", self.errno, self.cause),
            Some(m) => format!("{m} (errno {}: {text}, cause: {})", self.errno, self.cause),
            None => format!(
                "no message from the driver (errno {}: {text}, cause: {})",
                self.errno, self.cause
            ),
        }
    }

    /// From a failed call: `errno` (either sign) and the error structure the
    /// PMD filled in (or left zeroed).
    fn from_rte(port: u16, op: &'static str, errno: i32, err: &sys::rte_flow_error) -> FlowError {
        let message = if err.message.is_null() {
            None
        } else {
            // SAFETY: a non-null message is a NUL-terminated string owned by
            // the PMD or static (rte_flow.h: "points to a constant string");
            // it is copied before any other flow call.
            let text = unsafe { CStr::from_ptr(err.message) }.to_string_lossy();
            Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        FlowError {
            port,
            op,
            errno: errno.abs(),
            cause: cause_name(err.type_),
            message,
        }
    }

    /// An error found here, without calling DPDK.
    fn local(port: u16, op: &'static str, errno: i32, message: &str) -> FlowError {
        FlowError {
            port,
            op,
            errno,
            cause: "flow rule (handle)",
            message: Some(message.to_owned()),
        }
    }
}

impl From<FlowError> for Error {
    fn from(e: FlowError) -> Error {
        Error::Rte {
            op: format!("port {}: {}", e.port, e.op),
            errno: e.errno,
            msg: e.detail(),
        }
    }
}

/// `rte_flow_error_type` as words.
fn cause_name(t: sys::rte_flow_error_type) -> &'static str {
    match t {
        sys::RTE_FLOW_ERROR_TYPE_NONE => "none",
        sys::RTE_FLOW_ERROR_TYPE_HANDLE => "flow rule (handle)",
        sys::RTE_FLOW_ERROR_TYPE_ATTR_GROUP => "group",
        sys::RTE_FLOW_ERROR_TYPE_ATTR_PRIORITY => "priority",
        sys::RTE_FLOW_ERROR_TYPE_ATTR_INGRESS => "ingress",
        sys::RTE_FLOW_ERROR_TYPE_ATTR_EGRESS => "egress",
        sys::RTE_FLOW_ERROR_TYPE_ATTR_TRANSFER => "transfer",
        sys::RTE_FLOW_ERROR_TYPE_ATTR => "attributes",
        sys::RTE_FLOW_ERROR_TYPE_ITEM_NUM => "pattern length",
        sys::RTE_FLOW_ERROR_TYPE_ITEM_SPEC => "item spec",
        sys::RTE_FLOW_ERROR_TYPE_ITEM_LAST => "item range",
        sys::RTE_FLOW_ERROR_TYPE_ITEM_MASK => "item mask",
        sys::RTE_FLOW_ERROR_TYPE_ITEM => "item",
        sys::RTE_FLOW_ERROR_TYPE_ACTION_NUM => "number of actions",
        sys::RTE_FLOW_ERROR_TYPE_ACTION_CONF => "action configuration",
        sys::RTE_FLOW_ERROR_TYPE_ACTION => "action",
        sys::RTE_FLOW_ERROR_TYPE_STATE => "device state",
        _ => "unspecified",
    }
}

/// One steering rule in DPDK's layout: ingress; pattern ETH (any) / IPV4 /
/// UDP / END, each with spec and mask only when something is matched;
/// actions QUEUE / END. The pattern and actions point into this struct, so
/// build them from a value that stays put for the call.
struct Rule {
    attr: sys::rte_flow_attr,
    /// Spec, mask (big-endian addresses).
    ipv4: [sys::rte_flow_item_ipv4; 2],
    /// Spec, mask (big-endian ports).
    udp: [sys::rte_flow_item_udp; 2],
    queue: sys::rte_flow_action_queue,
    match_ipv4: bool,
    match_udp: bool,
}

impl Rule {
    fn new(m: &UdpMatch, queue: u16) -> Rule {
        let mut attr = sys::rte_flow_attr::default();
        attr.set_ingress(1);
        let mut ipv4 = [sys::rte_flow_item_ipv4::default(); 2];
        if let Some(a) = m.src {
            ipv4[0].hdr.src_addr = u32::from(a).to_be();
            ipv4[1].hdr.src_addr = u32::MAX;
        }
        if let Some(a) = m.dst {
            ipv4[0].hdr.dst_addr = u32::from(a).to_be();
            ipv4[1].hdr.dst_addr = u32::MAX;
        }
        let mut udp = [sys::rte_flow_item_udp::default(); 2];
        if let Some(p) = m.src_port {
            udp[0].hdr.src_port = p.to_be();
            udp[1].hdr.src_port = u16::MAX;
        }
        if let Some(p) = m.dst_port {
            udp[0].hdr.dst_port = p.to_be();
            udp[1].hdr.dst_port = u16::MAX;
        }
        Rule {
            attr,
            ipv4,
            udp,
            queue: sys::rte_flow_action_queue { index: queue },
            match_ipv4: m.src.is_some() || m.dst.is_some(),
            match_udp: m.src_port.is_some() || m.dst_port.is_some(),
        }
    }

    fn pattern(&self) -> [sys::rte_flow_item; 4] {
        fn item<T>(
            type_: sys::rte_flow_item_type,
            spec_mask: Option<&[T; 2]>,
        ) -> sys::rte_flow_item {
            let (spec, mask) = match spec_mask {
                Some([s, m]) => (s as *const T as *const _, m as *const T as *const _),
                None => (ptr::null(), ptr::null()),
            };
            sys::rte_flow_item {
                type_,
                spec,
                last: ptr::null(),
                mask,
            }
        }
        [
            item::<()>(sys::RTE_FLOW_ITEM_TYPE_ETH, None),
            item(
                sys::RTE_FLOW_ITEM_TYPE_IPV4,
                self.match_ipv4.then_some(&self.ipv4),
            ),
            item(
                sys::RTE_FLOW_ITEM_TYPE_UDP,
                self.match_udp.then_some(&self.udp),
            ),
            item::<()>(sys::RTE_FLOW_ITEM_TYPE_END, None),
        ]
    }

    fn actions(&self) -> [sys::rte_flow_action; 2] {
        [
            sys::rte_flow_action {
                type_: sys::RTE_FLOW_ACTION_TYPE_QUEUE,
                conf: &self.queue as *const sys::rte_flow_action_queue as *const _,
            },
            sys::rte_flow_action {
                type_: sys::RTE_FLOW_ACTION_TYPE_END,
                conf: ptr::null(),
            },
        ]
    }
}

/// Rule handles created by [`steer`] and neither destroyed nor flushed:
/// (port, handle address). Held across every destroy and flush call.
static LIVE: Mutex<Vec<(u16, usize)>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<(u16, usize)>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the port's id is still a port (a closed port's id is not).
fn port_valid(port: u16) -> bool {
    // SAFETY: validity check on an id; no preconditions.
    unsafe { sys::rte_eth_dev_is_valid_port(port) == 1 }
}

/// A flow rule created on a port by [`steer`]. Dropping it leaves the rule
/// in place; see the module text.
#[derive(Debug)]
#[must_use = "dropping a Flow leaves its rule on the port without a way to destroy it alone"]
pub struct Flow {
    port: u16,
    handle: NonNull<sys::rte_flow>,
    rule: UdpMatch,
    queue: u16,
}

// SAFETY: the handle is a token passed back to rte_flow_destroy, never
// dereferenced here; ethdev serialises flow calls for PMDs that are not
// thread-safe (flow_ops_mutex), so any thread may destroy it.
unsafe impl Send for Flow {}

impl Flow {
    /// The port the rule is on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the rule matches.
    pub fn rule(&self) -> &UdpMatch {
        &self.rule
    }

    /// The RX queue that receives what it matches.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Removes the rule from the port. Fails without calling DPDK when the
    /// rule is already gone ([`flush`]) or the port was closed.
    pub fn destroy(self) -> Result<(), FlowError> {
        const OP: &str = "destroy flow rule";
        let mut live = live();
        let key = (self.port, self.handle.as_ptr() as usize);
        let Some(i) = live.iter().position(|&k| k == key) else {
            return Err(FlowError::local(
                self.port,
                OP,
                libc_errno::ENOENT,
                "rule already removed by a flush",
            ));
        };
        live.swap_remove(i);
        if !port_valid(self.port) {
            return Err(FlowError::local(
                self.port,
                OP,
                libc_errno::ENODEV,
                "port closed; its rules went with it",
            ));
        }
        let mut err = sys::rte_flow_error::default();
        // SAFETY: the handle came from rte_flow_create on this port and is
        // still registered (not destroyed, not flushed, port not closed), and
        // LIVE stays locked across the call; err is a valid out-parameter.
        let ret = unsafe { sys::rte_flow_destroy(self.port, self.handle.as_ptr(), &mut err) };
        if ret < 0 {
            return Err(FlowError::from_rte(self.port, OP, ret, &err));
        }
        Ok(())
    }
}

/// Errno values used for errors found here (Linux numbering, as DPDK's).
mod libc_errno {
    pub(super) const ENOENT: i32 = 2;
    pub(super) const ENODEV: i32 = 19;
}

/// Asks the PMD whether `steer(port, m, queue)` would be accepted, without
/// changing the device: ingress, ETH / IPV4 / UDP, action QUEUE `queue`.
pub fn validate_steer(port: &Port, m: &UdpMatch, queue: u16) -> Result<(), FlowError> {
    let rule = Rule::new(m, queue);
    let (pattern, actions) = (rule.pattern(), rule.actions());
    let mut err = sys::rte_flow_error::default();
    // SAFETY: attr, pattern (END-terminated) and actions (END-terminated)
    // point into `rule`, which lives until after the call; err is a valid
    // out-parameter; the port id is valid (Port).
    let ret = unsafe {
        sys::rte_flow_validate(
            port.id(),
            &rule.attr,
            pattern.as_ptr(),
            actions.as_ptr(),
            &mut err,
        )
    };
    if ret < 0 {
        return Err(FlowError::from_rte(
            port.id(),
            "validate flow rule",
            ret,
            &err,
        ));
    }
    Ok(())
}

/// Creates the rule: IPv4/UDP frames matching `m` arriving on `port` go to
/// RX queue `queue`.
pub fn steer(port: &Port, m: &UdpMatch, queue: u16) -> Result<Flow, FlowError> {
    let rule = Rule::new(m, queue);
    let (pattern, actions) = (rule.pattern(), rule.actions());
    let mut err = sys::rte_flow_error::default();
    let mut live = live();
    // SAFETY: as in validate_steer; the PMD copies what it keeps of the rule.
    let handle = unsafe {
        sys::rte_flow_create(
            port.id(),
            &rule.attr,
            pattern.as_ptr(),
            actions.as_ptr(),
            &mut err,
        )
    };
    let Some(handle) = NonNull::new(handle) else {
        return Err(FlowError::from_rte(
            port.id(),
            "create flow rule",
            rte_errno(),
            &err,
        ));
    };
    live.push((port.id(), handle.as_ptr() as usize));
    Ok(Flow {
        port: port.id(),
        handle,
        rule: *m,
        queue,
    })
}

/// Removes every flow rule on the port (also those created outside this
/// module). [`Flow`] handles of the port become stale: destroying one is an
/// error.
pub fn flush(port: &Port) -> Result<(), FlowError> {
    let mut live = live();
    let mut err = sys::rte_flow_error::default();
    // SAFETY: valid port id; err is a valid out-parameter; LIVE is locked.
    let ret = unsafe { sys::rte_flow_flush(port.id(), &mut err) };
    // Even a failed flush may have removed some rules: forget them all
    // (a rule left behind is a leak; a destroy of a freed one would not be).
    live.retain(|&(p, _)| p != port.id());
    if ret < 0 {
        return Err(FlowError::from_rte(
            port.id(),
            "flush flow rules",
            ret,
            &err,
        ));
    }
    Ok(())
}

/// `RTE_ETH_DEV_CAPA_FLOW_RULE_KEEP` (a function-like macro in C).
const DEV_CAPA_FLOW_RULE_KEEP: u64 = 1 << 3;

/// Whether the device keeps flow rules across stop/start and accepts them
/// while stopped (`RTE_ETH_DEV_CAPA_FLOW_RULE_KEEP`). Without it, create
/// rules after `start` and remove them before `stop`.
pub fn rules_kept_across_restart(port: &Port) -> crate::Result<bool> {
    let mut info = sys::rte_eth_dev_info::default();
    // SAFETY: info is a valid out-parameter; the port id is valid (Port).
    let ret = unsafe { sys::rte_eth_dev_info_get(port.id(), &mut info) };
    crate::error::check(|| format!("port {}: device info", port.id()), ret)?;
    Ok(info.dev_capa & DEV_CAPA_FLOW_RULE_KEEP != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_layout_is_big_endian_with_full_masks() {
        let m = UdpMatch {
            src: Some(Ipv4Addr::new(10, 0, 0, 1)),
            dst: None,
            src_port: None,
            dst_port: Some(4011),
        };
        let r = Rule::new(&m, 3);
        assert_eq!(r.attr.ingress(), 1);
        assert_eq!(r.attr.egress(), 0);
        assert_eq!(r.ipv4[0].hdr.src_addr.to_ne_bytes(), [10, 0, 0, 1]);
        assert_eq!({ r.ipv4[1].hdr.src_addr }, u32::MAX);
        assert_eq!((r.ipv4[0].hdr.dst_addr, r.ipv4[1].hdr.dst_addr), (0, 0));
        assert_eq!(r.udp[0].hdr.dst_port.to_ne_bytes(), [0x0f, 0xab]);
        assert_eq!({ r.udp[1].hdr.dst_port }, u16::MAX);
        assert_eq!((r.udp[0].hdr.src_port, r.udp[1].hdr.src_port), (0, 0));

        let p = r.pattern();
        let types: Vec<_> = p.iter().map(|i| i.type_).collect();
        assert_eq!(
            types,
            [
                sys::RTE_FLOW_ITEM_TYPE_ETH,
                sys::RTE_FLOW_ITEM_TYPE_IPV4,
                sys::RTE_FLOW_ITEM_TYPE_UDP,
                sys::RTE_FLOW_ITEM_TYPE_END
            ]
        );
        assert!(p[0].spec.is_null() && p[0].mask.is_null());
        assert_eq!(p[1].spec, &r.ipv4[0] as *const _ as *const _);
        assert_eq!(p[1].mask, &r.ipv4[1] as *const _ as *const _);
        assert_eq!(p[2].spec, &r.udp[0] as *const _ as *const _);
        assert!(p.iter().all(|i| i.last.is_null()));

        let a = r.actions();
        assert_eq!(a[0].type_, sys::RTE_FLOW_ACTION_TYPE_QUEUE);
        // SAFETY: conf points at r.queue, alive here.
        let q = unsafe { &*(a[0].conf as *const sys::rte_flow_action_queue) };
        assert_eq!(q.index, 3);
        assert_eq!(a[1].type_, sys::RTE_FLOW_ACTION_TYPE_END);
    }

    #[test]
    fn unmatched_layers_have_no_spec() {
        let r = Rule::new(&UdpMatch::default(), 1);
        let p = r.pattern();
        assert!(p.iter().all(|i| i.spec.is_null() && i.mask.is_null()));
        let r = Rule::new(&UdpMatch::to_port(67), 1);
        let p = r.pattern();
        assert!(p[1].spec.is_null(), "no IPv4 fields matched");
        assert!(!p[2].spec.is_null());
    }

    #[test]
    fn boot_traffic_covers_dhcp_pxe_and_servers() {
        let s = Ipv4Addr::new(10, 80, 0, 1);
        let rules = boot_traffic(&[s]);
        assert!(rules.contains(&UdpMatch::to_port(67)));
        assert!(rules.contains(&UdpMatch {
            src_port: Some(67),
            dst_port: Some(68),
            ..Default::default()
        }));
        assert!(rules.contains(&UdpMatch::to_port(4011)));
        assert!(rules.iter().any(|r| r.dst == Some(s) && r.src.is_none()));
        assert!(rules.iter().any(|r| r.src == Some(s) && r.dst.is_none()));
        assert_eq!(boot_traffic(&[]).len(), 4);
    }

    #[test]
    fn error_is_one_line_with_message_errno_and_cause() {
        let text = c"queue index\n out of range";
        let err = sys::rte_flow_error {
            type_: sys::RTE_FLOW_ERROR_TYPE_ACTION,
            cause: ptr::null(),
            message: text.as_ptr(),
        };
        let e = FlowError::from_rte(2, "create flow rule", -34, &err);
        assert_eq!(e.errno, 34);
        assert_eq!(e.message.as_deref(), Some("queue index out of range"));
        assert_eq!(
            e.to_string(),
            "port 2: create flow rule: queue index out of range \
             (errno 34: Numerical result out of range, cause: action)"
        );
        let none = FlowError::from_rte(0, "flush flow rules", 38, &Default::default());
        assert_eq!(none.message, None);
        assert_eq!(
            none.to_string(),
            "port 0: flush flow rules: no message from the driver \
             (errno 38: Function not implemented, cause: none)"
        );
        let dpdk: Error = e.into();
        assert!(dpdk
            .to_string()
            .starts_with("port 2: create flow rule: queue index"));
    }
}
