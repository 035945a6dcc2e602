//! Network namespaces for tests (see `netlab`), named after the test
//! process, `xlbt-<pid>-<tag>`, so a crashed run's leftovers can be told
//! apart and removed.

pub use netlab::Netns;

/// Prefix of every namespace a test run creates.
pub const PREFIX: &str = "xlbt";

/// Removes namespaces left by earlier runs whose process is gone.
pub fn reap_stale() {
    netlab::reap_stale(PREFIX);
}

/// Creates `xlbt-<pid>-<tag>`, with loopback up.
pub fn netns(tag: &str) -> Netns {
    Netns::create(&format!("{PREFIX}-{}-{tag}", std::process::id())).unwrap()
}

/// Attaches a bare XDP_PASS program to `dev` in `ns`: frames sent into a
/// veth with XDP_TX or XDP_REDIRECT arrive only when its peer runs an XDP
/// program. Dropping the value detaches it.
pub fn attach_pass(ns: &Netns, dev: &str) -> aya::Ebpf {
    ns.within(|| netlab::xdp::attach(lb_user::dataplane::BENCH_OBJECT, "pass", dev))
        .unwrap()
        .unwrap()
}
