//! Where each segment listens: the one port rule. A node's `address` gives
//! its first segment's port; segments sharing a node take consecutive ports
//! from it on, in plan order. `serve` (to find the next segment) and the
//! manifests (each segment's Service port) both use it.

use super::Plan;
use crate::spec::Pipeline;

/// A segment's address cannot be worked out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No such segment.
    #[error("segment {segment} does not exist: the plan has {segments} segment(s)")]
    NoSegment {
        /// Asked for.
        segment: usize,
        /// Available.
        segments: usize,
    },
    /// The segment's node has no address.
    #[error(
        "segment {segment} forwards to node `{node}`, which has no `address` in the spec (or pass --next)"
    )]
    NoAddress {
        /// The segment that forwards there.
        segment: usize,
        /// Node of the next segment.
        node: String,
    },
    /// A node address has no usable port (none, 0, or past 65535 once the
    /// node's later segments are counted).
    #[error("node `{node}`: address `{address}` has no port")]
    BadAddress {
        /// Node.
        node: String,
        /// Its address.
        address: String,
    },
}

/// How many segments before segment `k` run on its node.
fn ordinal(plan: &Plan, k: usize) -> usize {
    let node = plan.segments[k].node;
    plan.segments[..k].iter().filter(|s| s.node == node).count()
}

/// The port of segment `k`: its node's address port plus the segments
/// before it on that node, or `default` onwards where the node has no
/// address (`None`: an error).
///
/// # Errors
/// [`AddressError`] when `k` is out of range, the node has no address
/// and there is no default, or its port is missing, 0 or overflows.
pub fn segment_port(
    p: &Pipeline,
    plan: &Plan,
    k: usize,
    default: Option<u16>,
) -> Result<u16, AddressError> {
    let seg = plan.segments.get(k).ok_or(AddressError::NoSegment {
        segment: k,
        segments: plan.segments.len(),
    })?;
    let node = &p.nodes[seg.node];
    let bad = || AddressError::BadAddress {
        node: node.name.clone(),
        address: node.address.clone().unwrap_or_default(),
    };
    let base = match (&node.address, default) {
        (Some(a), _) => a
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|&port| port > 0)
            .ok_or_else(bad)?,
        (None, Some(d)) => d,
        (None, None) => {
            return Err(AddressError::NoAddress {
                segment: k.saturating_sub(1),
                node: node.name.clone(),
            });
        }
    };
    u16::try_from(ordinal(plan, k))
        .ok()
        .and_then(|o| base.checked_add(o))
        .ok_or_else(bad)
}

/// The address (`host:port`) segment `k` listens on, from its node's
/// `address` and [`segment_port`].
///
/// # Errors
/// [`AddressError`] when the node has no usable address.
pub fn segment_address(p: &Pipeline, plan: &Plan, k: usize) -> Result<String, AddressError> {
    let port = segment_port(p, plan, k, None)?;
    let node = &p.nodes[plan.segments[k].node];
    let address = node.address.as_deref().unwrap_or_default();
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    Ok(format!("{host}:{port}"))
}
