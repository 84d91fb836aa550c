//! The SSRF guard. A webhook URL is checked when it is created and again before every attempt
//! (DNS can change between the two: rebinding). Its host is resolved and every address must be a
//! public unicast one, unless configuration allows loopback or private networks; the attempt then
//! connects to the address that was checked, not to a second lookup.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::Url;

/// What kind of address an IP is, for the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable unicast.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918: 10/8, 172.16/12, 192.168/16.
    Private,
    /// RFC 6598 shared address space (carrier-grade NAT): 100.64/10.
    SharedCgnat,
    /// fc00::/7.
    UniqueLocal,
    /// 169.254/16 (cloud metadata endpoints live here), fe80::/10.
    LinkLocal,
    /// 0.0.0.0, ::.
    Unspecified,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// Everything else that is not public unicast: 0/8, 192.0.0/24, documentation and
    /// benchmarking ranges, 240/4, site-local fec0::/10, Teredo, discard-only, and IPv6 outside
    /// 2000::/3.
    Reserved,
}

impl AddressClass {
    /// How a refusal names it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Public => "a public address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private (RFC 1918) address",
            Self::SharedCgnat => "a shared (carrier-grade NAT, 100.64.0.0/10) address",
            Self::UniqueLocal => "a unique local (fc00::/7) address",
            Self::LinkLocal => "a link-local address",
            Self::Unspecified => "the unspecified address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Reserved => "a reserved address",
        }
    }
}

/// What the guard lets through besides public addresses. Link-local, unspecified, multicast,
/// broadcast and reserved addresses are never allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// 127.0.0.0/8 and ::1 (`KEYGATE_WEBHOOK_ALLOW_LOOPBACK`).
    pub allow_loopback: bool,
    /// RFC 1918, 100.64.0.0/10 and fc00::/7 (`KEYGATE_WEBHOOK_ALLOW_PRIVATE_NETWORKS`).
    pub allow_private_networks: bool,
}

impl NetworkPolicy {
    pub fn permits(self, class: AddressClass) -> bool {
        match class {
            AddressClass::Public => true,
            AddressClass::Loopback => self.allow_loopback,
            AddressClass::Private | AddressClass::SharedCgnat | AddressClass::UniqueLocal => {
                self.allow_private_networks
            }
            AddressClass::LinkLocal
            | AddressClass::Unspecified
            | AddressClass::Multicast
            | AddressClass::Broadcast
            | AddressClass::Reserved => false,
        }
    }
}

/// Why a destination is refused.
#[derive(Debug, thiserror::Error)]
pub enum SsrfError {
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL has no port and its scheme has no default")]
    NoPort,
    #[error("its host {host} does not resolve: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("its host {host} resolves to no address")]
    NoAddress { host: String },
    #[error(
        "it resolves to {ip}, {}, which webhooks may not be sent to{}",
        .class.describe(),
        hint(*.class)
    )]
    Refused { ip: IpAddr, class: AddressClass },
}

fn hint(class: AddressClass) -> &'static str {
    match class {
        AddressClass::Loopback => " (set KEYGATE_WEBHOOK_ALLOW_LOOPBACK=true to allow it)",
        AddressClass::Private | AddressClass::SharedCgnat | AddressClass::UniqueLocal => {
            " (set KEYGATE_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow it)"
        }
        _ => "",
    }
}

/// Classifies an address. IPv4 embedded in IPv6 (mapped `::ffff:a.b.c.d`, compatible,
/// translated, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is classified as the IPv4 it carries.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_broadcast() {
        AddressClass::Broadcast
    } else if a == 127 {
        AddressClass::Loopback
    } else if a == 10 || (a == 172 && (16..32).contains(&b)) || (a == 192 && b == 168) {
        AddressClass::Private
    } else if a == 100 && (64..128).contains(&b) {
        AddressClass::SharedCgnat
    } else if a == 169 && b == 254 {
        AddressClass::LinkLocal
    } else if (224..240).contains(&a) {
        AddressClass::Multicast
    } else if a == 0
        || a >= 240
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 88 && c == 99)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    let embedded = || {
        let o = ip.octets();
        Ipv4Addr::new(o[12], o[13], o[14], o[15])
    };
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible, deprecated), ::ffff:0:a.b.c.d (translated).
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return classify_v4(embedded());
    }
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return classify_v4(embedded());
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded());
    }
    // 6to4 2002::/16 carries an IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        let [h1, h2] = s[1].to_be_bytes();
        let [l1, l2] = s[2].to_be_bytes();
        return classify_v4(Ipv4Addr::new(h1, h2, l1, l2));
    }
    if s[0] & 0xff00 == 0xff00 {
        return AddressClass::Multicast;
    }
    if s[0] & 0xffc0 == 0xfe80 {
        return AddressClass::LinkLocal;
    }
    if s[0] & 0xfe00 == 0xfc00 {
        return AddressClass::UniqueLocal;
    }
    if s[0] & 0xffc0 == 0xfec0 {
        return AddressClass::Reserved; // site-local, deprecated
    }
    // Teredo 2001::/32 and documentation 2001:db8::/32; ORCHID and other IETF 2001::/23 blocks.
    if s[0] == 0x2001 && (s[1] == 0 || s[1] == 0xdb8 || s[1] < 0x200) {
        return AddressClass::Reserved;
    }
    // 64:ff9b:1::/48 (local-use NAT64), 100::/64 (discard-only) and everything outside the
    // global unicast block 2000::/3.
    if s[0] & 0xe000 != 0x2000 {
        return AddressClass::Reserved;
    }
    AddressClass::Public
}

/// Checks one address against the policy.
pub fn check_ip(ip: IpAddr, policy: NetworkPolicy) -> Result<(), SsrfError> {
    let class = classify(ip);
    if policy.permits(class) {
        Ok(())
    } else {
        Err(SsrfError::Refused { ip, class })
    }
}

/// A destination that passed the guard: connect to `addr` (the checked address) for `host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The host name to pin, when the URL names one (an IP literal needs no pinning).
    pub domain: Option<String>,
    pub addr: SocketAddr,
}

/// Resolves the URL's host and checks every address it resolves to: one refused address
/// refuses the URL (a name that also resolves to a private address is not sent to).
pub async fn check_url(url: &Url, policy: NetworkPolicy) -> Result<Destination, SsrfError> {
    let port = url.port_or_known_default().ok_or(SsrfError::NoPort)?;
    match url.host().ok_or(SsrfError::NoHost)? {
        url::Host::Ipv4(ip) => {
            check_ip(IpAddr::V4(ip), policy)?;
            Ok(Destination {
                domain: None,
                addr: SocketAddr::new(IpAddr::V4(ip), port),
            })
        }
        url::Host::Ipv6(ip) => {
            check_ip(IpAddr::V6(ip), policy)?;
            Ok(Destination {
                domain: None,
                addr: SocketAddr::new(IpAddr::V6(ip), port),
            })
        }
        url::Host::Domain(host) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| SsrfError::Resolve {
                    host: host.to_owned(),
                    source,
                })?
                .collect();
            for a in &addrs {
                check_ip(a.ip(), policy)?;
            }
            let addr = addrs.first().copied().ok_or_else(|| SsrfError::NoAddress {
                host: host.to_owned(),
            })?;
            Ok(Destination {
                domain: Some(host.to_owned()),
                addr,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().expect("ip"))
    }

    #[test]
    fn ipv4_ranges() {
        use AddressClass::*;
        for (ip, want) in [
            ("8.8.8.8", Public),
            ("1.1.1.1", Public),
            ("172.32.0.1", Public),
            ("100.128.0.1", Public),
            ("192.169.0.1", Public),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.10", Private),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("169.254.169.254", LinkLocal),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Reserved),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("192.0.0.8", Reserved),
            ("192.0.2.1", Reserved),
            ("198.18.0.1", Reserved),
            ("198.51.100.7", Reserved),
            ("203.0.113.9", Reserved),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges_and_embedded_ipv4() {
        use AddressClass::*;
        for (ip, want) in [
            ("2606:4700:4700::1111", Public),
            ("2a00:1450:4001:80b::200e", Public),
            ("::1", Loopback),
            ("::", Unspecified),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("ff02::1", Multicast),
            ("fec0::1", Reserved),
            ("2001:db8::1", Reserved),
            ("2001::1", Reserved),
            ("100::1", Reserved),
            ("64:ff9b:1::1", Reserved),
            ("4000::1", Reserved),
            // IPv4-mapped, -compatible, -translated, NAT64 and 6to4 forms of private targets.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:192.168.1.10", Private),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:100.64.0.1", SharedCgnat),
            ("::ffff:0.0.0.0", Unspecified),
            ("::ffff:255.255.255.255", Broadcast),
            ("::ffff:224.0.0.1", Multicast),
            ("::10.0.0.1", Private),
            ("::ffff:0:10.0.0.1", Private),
            ("64:ff9b::a00:1", Private),
            ("64:ff9b::808:808", Public),
            ("2002:a00:1::1", Private),
            ("2002:a9fe:a9fe::1", LinkLocal),
            ("2002:808:808::1", Public),
            ("::ffff:8.8.8.8", Public),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn policy_opens_only_what_it_names() {
        use AddressClass::*;
        let strict = NetworkPolicy::default();
        let loopback = NetworkPolicy {
            allow_loopback: true,
            ..strict
        };
        let private = NetworkPolicy {
            allow_private_networks: true,
            ..strict
        };
        assert!(strict.permits(Public));
        for c in [
            Loopback,
            Private,
            SharedCgnat,
            UniqueLocal,
            LinkLocal,
            Unspecified,
            Multicast,
            Broadcast,
            Reserved,
        ] {
            assert!(!strict.permits(c), "{c:?}");
        }
        assert!(loopback.permits(Loopback));
        assert!(!loopback.permits(Private));
        assert!(private.permits(Private) && private.permits(SharedCgnat));
        assert!(private.permits(UniqueLocal));
        assert!(!private.permits(Loopback));
        let both = NetworkPolicy {
            allow_loopback: true,
            allow_private_networks: true,
        };
        for c in [LinkLocal, Unspecified, Multicast, Broadcast, Reserved] {
            assert!(!both.permits(c), "{c:?} is never allowed");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_without_connecting() {
        let strict = NetworkPolicy::default();
        for u in [
            "https://10.0.0.1/hook",
            "https://192.168.1.10/x",
            "https://169.254.169.254/",
            "https://[::ffff:10.0.0.1]/",
            "https://[fd00::1]:8443/",
            "https://127.0.0.1/",
            "https://0.0.0.0/",
        ] {
            let url = Url::parse(u).expect("url");
            let err = check_url(&url, strict).await.expect_err(u);
            assert!(matches!(err, SsrfError::Refused { .. }), "{u}: {err}");
        }
        let err = check_url(&Url::parse("https://10.0.0.1/").expect("url"), strict)
            .await
            .expect_err("private");
        assert!(err.to_string().contains("10.0.0.1"), "{err}");
        assert!(
            err.to_string()
                .contains("KEYGATE_WEBHOOK_ALLOW_PRIVATE_NETWORKS")
        );
        let ok = check_url(
            &Url::parse("http://127.0.0.1:9/x").expect("url"),
            NetworkPolicy {
                allow_loopback: true,
                ..strict
            },
        )
        .await
        .expect("loopback allowed");
        assert_eq!(ok.domain, None);
        assert_eq!(ok.addr, "127.0.0.1:9".parse().expect("addr"));
        // A name is resolved and every address checked: localhost is loopback.
        let err = check_url(&Url::parse("https://localhost/").expect("url"), strict)
            .await
            .expect_err("localhost");
        assert!(matches!(
            err,
            SsrfError::Refused {
                class: AddressClass::Loopback,
                ..
            }
        ));
    }
}
