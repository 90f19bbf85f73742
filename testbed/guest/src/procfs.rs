//! Pure parsers for `/proc` files and command output (unit-tested on the host).

use std::collections::BTreeMap;

/// Parses the "header line / value line" format shared by `/proc/net/netstat`
/// and `/proc/net/snmp` into `section -> (counter -> value)`.
///
/// Lines come in pairs: `TcpExt: SyncookiesSent ...` then `TcpExt: 0 ...`.
/// Malformed pairs and non-numeric values are skipped.
pub fn parse_net_counters(text: &str) -> BTreeMap<String, BTreeMap<String, i64>> {
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut i = 0;
    while i + 1 < lines.len() {
        let (Some((s1, names)), Some((s2, values))) = (lines[i].split_once(':'), lines[i + 1].split_once(':')) else {
            i += 1;
            continue;
        };
        if s1 != s2 {
            i += 1;
            continue;
        }
        let sec = out.entry(s1.trim().to_string()).or_default();
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse::<i64>() {
                sec.insert(n.to_string(), v);
            }
        }
        i += 2;
    }
    out
}

/// Parses `/proc/uptime` ("12345.67 890.12") into milliseconds.
pub fn parse_uptime_ms(text: &str) -> Option<u64> {
    let first = text.split_whitespace().next()?;
    let secs: f64 = first.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// Parses `ip -o -4 addr show` output into `(interface, "a.b.c.d/prefix")` pairs.
pub fn parse_ip_addr(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let Some(pos) = toks.iter().position(|t| *t == "inet") else {
            continue;
        };
        if toks.len() < 2 || pos + 1 >= toks.len() {
            continue;
        }
        let ifname = toks[1].trim_end_matches(':');
        let ifname = ifname.split('@').next().unwrap_or(ifname);
        out.push((ifname.to_string(), toks[pos + 1].to_string()));
    }
    out
}

/// Extracts `(transmitted, received)` from ping's summary line
/// ("3 packets transmitted, 2 packets received, 33% packet loss"; both the
/// busybox and iputils wordings are accepted).
pub fn parse_ping_summary(text: &str) -> Option<(u64, u64)> {
    for line in text.lines() {
        if !line.contains("transmitted") {
            continue;
        }
        let mut sent = None;
        let mut recv = None;
        for part in line.split(',') {
            let part = part.trim();
            let num = part.split_whitespace().next().and_then(|n| n.parse::<u64>().ok());
            if part.contains("transmitted") {
                sent = num;
            } else if part.contains("received") {
                recv = num;
            }
        }
        if let (Some(s), Some(r)) = (sent, recv) {
            return Some((s, r));
        }
    }
    None
}

/// Returns the last non-empty line of `text`, trimmed.
pub fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_pairs() {
        let t = "TcpExt: SyncookiesSent TCPTimeouts TCPLossProbes\n\
                 TcpExt: 0 7 3\n\
                 IpExt: InNoRoutes InOctets\n\
                 IpExt: 1 123456789012\n";
        let m = parse_net_counters(t);
        assert_eq!(m["TcpExt"]["TCPTimeouts"], 7);
        assert_eq!(m["TcpExt"]["TCPLossProbes"], 3);
        assert_eq!(m["IpExt"]["InOctets"], 123456789012);
    }

    #[test]
    fn snmp_negative_and_sections() {
        let t = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                 Tcp: RtoAlgorithm MaxConn RetransSegs\nTcp: 1 -1 42\n";
        let m = parse_net_counters(t);
        assert_eq!(m["Tcp"]["RetransSegs"], 42);
        assert_eq!(m["Tcp"]["MaxConn"], -1);
        assert_eq!(m["Ip"]["DefaultTTL"], 64);
    }

    #[test]
    fn netstat_garbage_tolerated() {
        let m = parse_net_counters("junk\nTcpExt: A B\nTcpExt: 1 x\n");
        assert_eq!(m["TcpExt"].get("A"), Some(&1));
        assert_eq!(m["TcpExt"].get("B"), None);
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime_ms("12.34 5.00\n"), Some(12340));
        assert_eq!(parse_uptime_ms(""), None);
    }

    #[test]
    fn ip_addr() {
        let t = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                 2: eth0    inet 10.0.0.1/24 scope global eth0\\       valid_lft forever\n\
                 2: eth0    inet 10.0.1.1/16 scope global eth0\n";
        let v = parse_ip_addr(t);
        assert_eq!(v.len(), 3);
        assert_eq!(v[1], ("eth0".to_string(), "10.0.0.1/24".to_string()));
        assert_eq!(v[2].1, "10.0.1.1/16");
    }

    #[test]
    fn ping_summary() {
        let bb = "--- 10.0.0.2 ping statistics ---\n3 packets transmitted, 2 packets received, 33% packet loss\n";
        assert_eq!(parse_ping_summary(bb), Some((3, 2)));
        let iputils = "5 packets transmitted, 5 received, 0% packet loss, time 4005ms\n";
        assert_eq!(parse_ping_summary(iputils), Some((5, 5)));
        assert_eq!(parse_ping_summary("ping: bad address"), None);
    }

    #[test]
    fn last_line_works() {
        assert_eq!(last_line("1\n2\n3\n"), Some("3"));
        assert_eq!(last_line("1\n2\n\n"), Some("2"));
        assert_eq!(last_line(""), None);
    }
}
