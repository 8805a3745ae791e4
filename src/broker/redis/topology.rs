//! Redis Cluster topology, as pure data: the `redis+cluster://` URL's seeds, the slot of a
//! key, and which master owns which slots (`CLUSTER SLOTS`).

use std::collections::BTreeSet;

use redis::Value;

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// True for the URL schemes that select cluster mode.
pub fn is_cluster_url(url: &str) -> bool {
    url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://")
}

/// What a `redis[s]+cluster://[user:pass@]h1:p1[,h2:p2…][/db][?query][#fragment]` URL holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    /// `redis` or `rediss` (TLS).
    scheme: &'static str,
    /// `user:pass@` or empty.
    userinfo: String,
    /// `host:port` of each seed node.
    hosts: Vec<String>,
    /// `/db?query#fragment`, given to every seed as it was written.
    tail: String,
}

impl ClusterUrl {
    /// Splits the seed list; the `redis` crate understands only one node per URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "missing ://".to_owned())?;
        let scheme = match scheme {
            "redis+cluster" => "redis",
            "rediss+cluster" => "rediss",
            other => return Err(format!("{other}:// is not a cluster URL")),
        };
        let split_at = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split_at);
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), authority),
        };
        let hosts: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if hosts.is_empty() || hosts.iter().any(|h| !h.contains(':')) {
            return Err("needs seed nodes as host:port[,host:port…]".to_owned());
        }
        Ok(Self {
            scheme,
            userinfo,
            hosts,
            tail: tail.to_owned(),
        })
    }

    /// One plain URL per seed node, for the cluster client.
    pub fn seeds(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|host| format!("{}://{}{host}{}", self.scheme, self.userinfo, self.tail))
            .collect()
    }

    /// The first seed's host, for masters the cluster advertises without one.
    pub fn first_host(&self) -> &str {
        self.hosts
            .first()
            .and_then(|h| h.rsplit_once(':'))
            .map_or("127.0.0.1", |(host, _)| host)
    }

    /// The URL of one node (`host:port`) for a RESP3 pub/sub connection: the seeds'
    /// credentials and TLS, database 0 (a cluster has no other), the fragment kept
    /// (`#insecure`).
    pub fn node(&self, node: &str) -> String {
        let fragment = self.tail.find('#').map_or("", |i| &self.tail[i..]);
        format!(
            "{}://{}{node}/?protocol=resp3{fragment}",
            self.scheme, self.userinfo
        )
    }
}

/// The hash slot of a key: CRC16 of its hash tag (the text between the first `{` and the
/// next `}`, when not empty) or of the whole key.
pub fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let inner = &bytes[open + 1..];
            inner
                .iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &inner[..close])
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// One range of slots and the address (`host:port`) of its master.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotRange {
    start: u16,
    end: u16,
    master: String,
}

/// Which master owns which slots, as `CLUSTER SLOTS` said at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    ranges: Vec<SlotRange>,
}

impl SlotMap {
    /// Parses a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, …], replicas…], …]`.
    /// A master advertised without a host (`""` or `?`) is reached at `fallback_host`.
    pub fn parse(reply: &Value, fallback_host: &str) -> Result<Self, String> {
        let Value::Array(items) = reply else {
            return Err(format!("CLUSTER SLOTS: not an array: {reply:?}"));
        };
        let mut ranges = Vec::with_capacity(items.len());
        for item in items {
            let Value::Array(fields) = item else {
                return Err(format!("CLUSTER SLOTS: bad range {item:?}"));
            };
            let number = |v: Option<&Value>| -> Option<i64> {
                v.and_then(|v| redis::from_redis_value_ref::<i64>(v).ok())
            };
            let (Some(start), Some(end), Some(Value::Array(master))) =
                (number(fields.first()), number(fields.get(1)), fields.get(2))
            else {
                return Err(format!("CLUSTER SLOTS: bad range {item:?}"));
            };
            let host = master
                .first()
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .filter(|h| !h.is_empty() && h != "?")
                .unwrap_or_else(|| fallback_host.to_owned());
            let port = number(master.get(1))
                .ok_or_else(|| format!("CLUSTER SLOTS: master without port {master:?}"))?;
            let in_range = |n: i64| u16::try_from(n).ok().filter(|&s| s < SLOTS);
            let (Some(start), Some(end)) = (in_range(start), in_range(end)) else {
                return Err(format!("CLUSTER SLOTS: slots out of range {item:?}"));
            };
            ranges.push(SlotRange {
                start,
                end,
                master: format!("{host}:{port}"),
            });
        }
        ranges.sort_by_key(|r| r.start);
        Ok(Self { ranges })
    }

    /// The master owning `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<&str> {
        let i = self.ranges.partition_point(|r| r.end < slot);
        self.ranges
            .get(i)
            .filter(|r| r.start <= slot)
            .map(|r| r.master.as_str())
    }

    /// The master owning `key`'s slot, if any.
    pub fn owner_of(&self, key: &str) -> Option<&str> {
        self.owner(slot_of(key))
    }

    /// Every master that owns at least one slot.
    pub fn masters(&self) -> BTreeSet<String> {
        self.ranges.iter().map(|r| r.master.clone()).collect()
    }

    /// How many slots no master owns (the cluster cannot serve them).
    pub fn uncovered(&self) -> usize {
        let covered: usize = self
            .ranges
            .iter()
            .map(|r| usize::from(r.end.saturating_sub(r.start)) + 1)
            .sum();
        usize::from(SLOTS).saturating_sub(covered)
    }
}

/// The first channel from `candidate(0)`, `candidate(1)`, … whose slot `master` owns: each
/// shard's canary must be served by that shard. `None` when the master owns no slot.
pub fn channel_on(
    map: &SlotMap,
    master: &str,
    candidate: impl Fn(u32) -> String,
) -> Option<String> {
    if !map.ranges.iter().any(|r| r.master == master) {
        return None;
    }
    // A master owning one slot in 16384 is found within a few hundred thousand tries at worst;
    // masters usually own thousands, found in a handful.
    (0..4 * u32::from(SLOTS) * 16)
        .map(candidate)
        .find(|channel| map.owner_of(channel) == Some(master))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn range(start: i64, end: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]),
            Value::Array(vec![bulk(host), Value::Int(port + 3), bulk("replica")]),
        ])
    }

    #[test]
    fn seeds_and_node_urls() {
        let url = ClusterUrl::parse("redis+cluster://u:p@a:1,b:2/0?protocol=2").unwrap();
        assert_eq!(
            url.seeds(),
            vec![
                "redis://u:p@a:1/0?protocol=2",
                "redis://u:p@b:2/0?protocol=2"
            ]
        );
        assert_eq!(url.node("c:3"), "redis://u:p@c:3/?protocol=resp3");
        assert_eq!(url.first_host(), "a");
        let tls = ClusterUrl::parse("rediss+cluster://h:1#insecure").unwrap();
        assert_eq!(tls.seeds(), vec!["rediss://h:1#insecure"]);
        assert_eq!(tls.node("h:2"), "rediss://h:2/?protocol=resp3#insecure");
        assert!(ClusterUrl::parse("redis://h:1").is_err());
        assert!(ClusterUrl::parse("redis+cluster://").is_err());
        assert!(ClusterUrl::parse("redis+cluster://nohostport").is_err());
        assert!(is_cluster_url("rediss+cluster://h:1"));
        assert!(!is_cluster_url("redis://h:1"));
    }

    #[test]
    fn slots_follow_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("123456789"), 12739);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(slot_of("foo{}{bar}"), slot_of("foo{}{bar}"));
        assert_ne!(slot_of("foo{}{bar}"), slot_of("bar"));
        assert_eq!(slot_of("foo{{bar}}zap"), slot_of("{bar"));
        assert_eq!(
            slot_of("dc:org:{org_a}:stream"),
            slot_of("dc:org:{org_a}:events")
        );
        for key in ["a", "{x}y", "dc:org:{org_zz}:id:evt_1", "{}", "{"] {
            let ours = slot_of(key);
            let theirs = format!("{:?}", redis::cluster_routing::Slot::for_key(key));
            assert_eq!(theirs, format!("Slot({ours})"), "{key}");
        }
    }

    #[test]
    fn slot_map_owners_and_coverage() {
        let reply = Value::Array(vec![
            range(5461, 10922, "127.0.0.1", 7002),
            range(0, 5460, "", 7001),
            range(10923, 16383, "127.0.0.1", 7003),
        ]);
        let map = SlotMap::parse(&reply, "10.0.0.9").unwrap();
        assert_eq!(map.owner(0), Some("10.0.0.9:7001"));
        assert_eq!(map.owner(5461), Some("127.0.0.1:7002"));
        assert_eq!(map.owner(16383), Some("127.0.0.1:7003"));
        assert_eq!(map.uncovered(), 0);
        assert_eq!(map.masters().len(), 3);
        let partial = SlotMap::parse(&Value::Array(vec![range(0, 99, "h", 1)]), "x").unwrap();
        assert_eq!(partial.owner(100), None);
        assert_eq!(partial.uncovered(), 16384 - 100);
        assert!(SlotMap::parse(&Value::Int(1), "x").is_err());
        let out_of_range = Value::Array(vec![range(0, 16384, "h", 1)]);
        assert!(SlotMap::parse(&out_of_range, "x").is_err());
    }

    #[test]
    fn a_canary_lands_on_its_shard() {
        let reply = Value::Array(vec![range(0, 0, "h", 1), range(1, 16383, "h", 2)]);
        let map = SlotMap::parse(&reply, "x").unwrap();
        let tiny = channel_on(&map, "h:1", |n| format!("c:{{i-{n}}}")).unwrap();
        assert_eq!(slot_of(&tiny), 0);
        let big = channel_on(&map, "h:2", |n| format!("c:{{i-{n}}}")).unwrap();
        assert_eq!(map.owner_of(&big), Some("h:2"));
        assert_eq!(channel_on(&map, "h:3", |n| format!("{n}")), None);
    }
}
