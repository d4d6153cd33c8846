//! What the kernel dropped on Sluice's UDP sockets (receive buffer full), read from
//! `/proc/net/udp*` by socket inode at scrape time.

/// Datagrams the kernel dropped on Sluice's UDP sockets (receive buffer full), kept monotonic
/// across sockets that close (a reload removing a UDP source): their last count stays in.
#[derive(Debug, Default)]
pub struct KernelUdpDrops {
    last: std::collections::HashMap<u64, u64>,
    closed: u64,
}

impl KernelUdpDrops {
    /// Updates from the open sockets' current counts (inode → drops); returns the total.
    pub fn update(
        &mut self,
        open: &[u64],
        drops_by_inode: &std::collections::HashMap<u64, u64>,
    ) -> u64 {
        let gone: Vec<u64> = self
            .last
            .keys()
            .filter(|inode| !open.contains(inode))
            .copied()
            .collect();
        for inode in gone {
            self.closed += self.last.remove(&inode).unwrap_or(0);
        }
        for inode in open {
            if let Some(&drops) = drops_by_inode.get(inode) {
                let seen = self.last.entry(*inode).or_insert(0);
                *seen = (*seen).max(drops);
            }
        }
        self.closed + self.last.values().sum::<u64>()
    }
}

/// `inode → drops` of every UDP socket in /proc/net/udp and /proc/net/udp6 (the last column).
pub fn kernel_udp_drops() -> std::collections::HashMap<u64, u64> {
    let mut by_inode = std::collections::HashMap::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            by_inode.extend(parse_udp_table(&text));
        }
    }
    by_inode
}

fn parse_udp_table(text: &str) -> impl Iterator<Item = (u64, u64)> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let inode = fields.get(9)?.parse().ok()?;
        let drops = fields.last()?.parse().ok()?;
        Some((inode, drops))
    })
}

/// The inode of a socket (from /proc/self/fd), to find it in /proc/net/udp.
pub fn socket_inode(fd: std::os::fd::RawFd) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let text = link.to_str()?;
    text.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod udp_tests {
    use super::*;

    #[test]
    fn udp_table_drops_by_inode() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  123: 0100007F:14F2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
  124: 0100007F:14F3 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 0\n";
        let map: std::collections::HashMap<u64, u64> = parse_udp_table(text).collect();
        assert_eq!(map.get(&4242), Some(&17));
        assert_eq!(map.get(&4243), Some(&0));
    }

    #[test]
    fn drops_stay_counted_after_a_socket_closes() {
        let mut t = KernelUdpDrops::default();
        let now = |pairs: &[(u64, u64)]| pairs.iter().copied().collect();
        assert_eq!(t.update(&[1, 2], &now(&[(1, 5), (2, 3)])), 8);
        // Socket 2 closed (a reload removed its source): its 3 drops stay counted.
        assert_eq!(t.update(&[1], &now(&[(1, 6)])), 9);
        assert_eq!(t.update(&[1, 3], &now(&[(1, 6), (3, 1)])), 10);
    }

    #[test]
    fn a_udp_socket_is_found_by_its_inode() {
        use std::os::fd::AsRawFd;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = socket_inode(socket.as_raw_fd()).expect("a socket inode");
        assert_eq!(kernel_udp_drops().get(&inode), Some(&0));
    }
}
