//! The lab's own parts against the kernel (needs root): namespaces come and
//! go, and links, addresses, routes and neighbours read back as set.

use std::net::Ipv4Addr;

use netlab::Netns;

fn name(tag: &str) -> String {
    format!("xlbt-{}-netlab-{tag}", std::process::id())
}

#[test]
fn a_bridged_pair_with_addresses_routes_and_neighbours() {
    netlab::reap_stale("xlbt");
    let sw = Netns::create(&name("sw")).unwrap();
    let a = Netns::create(&name("a")).unwrap();
    let b = Netns::create(&name("b")).unwrap();
    sw.bridge("br0", false).unwrap();
    sw.plug("br0", &a, "eth0", "pa", &["10.91.0.1/24".into()])
        .unwrap();
    sw.plug("br0", &b, "eth0", "pb", &["10.91.0.2/24".into()])
        .unwrap();
    assert_eq!(a.addrs("eth0").unwrap(), [Ipv4Addr::new(10, 91, 0, 1)]);
    assert!(sw.links().unwrap().iter().any(|l| l == "pa"));
    let mac_b = b.mac("eth0").unwrap();
    a.neigh_replace(Ipv4Addr::new(10, 91, 0, 2), mac_b, "eth0")
        .unwrap();
    a.route_via("10.92.0.0/16", "10.91.0.2").unwrap();
    a.route_via("default", "10.91.0.2").unwrap();
    b.route_local("10.93.0.0/16", "lo").unwrap();
    b.sysctl("net.ipv4.ip_forward", "1").unwrap();
    // A real packet from a to an address of b's local route.
    let before = b.rx_packets("eth0").unwrap();
    let ping = a.exec(&["ping", "-c", "1", "-W", "2", "10.93.4.5"]);
    assert!(ping.is_ok(), "{ping:?}");
    assert!(b.rx_packets("eth0").unwrap() > before);
    assert!(!a.xdp_attached("eth0").unwrap());
    a.neigh_del(Ipv4Addr::new(10, 91, 0, 2), "eth0").unwrap();
    assert!(a.ifindex("eth0").unwrap() > 1);
    let out = b.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]).unwrap();
    assert_eq!(out.trim(), "1");
    let names = [sw.name.clone(), a.name.clone(), b.name.clone()];
    drop((sw, a, b));
    for n in names {
        assert!(!std::path::Path::new("/run/netns").join(n).exists());
    }
}

#[test]
fn a_pair_may_share_a_name_and_addresses_come_and_go() {
    let a = Netns::create(&name("pa")).unwrap();
    let b = Netns::create(&name("pb")).unwrap();
    a.veth("eth0", &b, "eth0").unwrap();
    a.add_addrs("eth0", &["10.94.0.1/24", "10.94.0.9/32"])
        .unwrap();
    a.del_addr("eth0", "10.94.0.9/32").unwrap();
    assert_eq!(a.addrs("eth0").unwrap(), [Ipv4Addr::new(10, 94, 0, 1)]);
    b.sysctl("net/ipv4/conf/eth0/accept_local", "1").unwrap();
    let v = b
        .exec(&["cat", "/proc/sys/net/ipv4/conf/eth0/accept_local"])
        .unwrap();
    assert_eq!(v.trim(), "1");
}

#[test]
fn a_kept_namespace_stays_until_deleted() {
    let n = name("kept");
    let ns = Netns::create(&n).unwrap();
    ns.keep();
    drop(ns);
    let path = std::path::Path::new("/run/netns").join(&n);
    assert!(path.exists());
    netlab::delete(&n);
    assert!(!path.exists());
}
