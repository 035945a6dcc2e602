//! XDP helpers: programs attached from an object, and the context of a
//! `BPF_PROG_TEST_RUN`.

use anyhow::{Context, Result};

/// Loads program `name` of `object` and attaches it natively to `dev`, in
/// the calling thread's namespace; dropping the value detaches it.
///
/// Frames sent into a veth with XDP_TX or XDP_REDIRECT arrive only when
/// its peer runs an XDP program: a bare XDP_PASS on the peer is enough.
pub fn attach(object: &[u8], name: &str, dev: &str) -> Result<aya::Ebpf> {
    let mut obj = aya::Ebpf::load(object)?;
    let prog: &mut aya::programs::Xdp = obj
        .program_mut(name)
        .with_context(|| format!("no {name} program"))?
        .try_into()?;
    prog.load()?;
    prog.attach(dev, aya::programs::XdpMode::Driver)
        .with_context(|| format!("attaching {name} to {dev}"))?;
    Ok(obj)
}

/// The `xdp_md` input of a test run of a `len`-byte packet received on
/// `ifindex` (0: none). The kernel takes `data_end` as the length.
pub fn test_ctx(len: usize, ifindex: u32) -> [u8; 24] {
    // data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}
