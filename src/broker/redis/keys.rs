//! Redis key and channel names (contract section 7.1), in one place, for both layouts.

use crate::envelope::Topic;

/// How names are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScheme {
    /// One Redis server: DashClaw's own names, byte for byte (its Node publisher writes them).
    Single,
    /// Redis Cluster: every key and the channel of a topic carry the topic as a hash tag
    /// (`{org_id}`, `{ops}`), so one publish script touches one slot, on one shard.
    Cluster,
}

/// Key and channel names under one prefix (`REALTIME_KEY_PREFIX`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    scheme: KeyScheme,
}

impl Keys {
    /// Names under `prefix`, laid out by `scheme`.
    pub fn new(prefix: &str, scheme: KeyScheme) -> Self {
        Self {
            prefix: prefix.to_owned(),
            scheme,
        }
    }

    /// The layout in use.
    pub fn scheme(&self) -> KeyScheme {
        self.scheme
    }

    /// `org:<org>` / `ops` (single) or `org:{<org>}` / `{ops}` (cluster): what follows the
    /// prefix in every name of the topic.
    fn topic_part(&self, topic: &Topic) -> String {
        match (self.scheme, topic) {
            (KeyScheme::Single, Topic::Org(org)) => format!("org:{org}"),
            (KeyScheme::Single, Topic::Ops) => "ops".to_owned(),
            (KeyScheme::Cluster, Topic::Org(org)) => format!("org:{{{org}}}"),
            (KeyScheme::Cluster, Topic::Ops) => "{ops}".to_owned(),
        }
    }

    /// The topic's replay stream.
    pub fn stream(&self, topic: &Topic) -> String {
        format!("{}:{}:stream", self.prefix, self.topic_part(topic))
    }

    /// The topic's pub/sub channel (a shard channel in cluster mode).
    pub fn channel(&self, topic: &Topic) -> String {
        format!("{}:{}:events", self.prefix, self.topic_part(topic))
    }

    /// The idempotency key of an envelope id (hub-internal).
    pub fn id_key(&self, topic: &Topic, id: &str) -> String {
        format!("{}:{}:id:{id}", self.prefix, self.topic_part(topic))
    }

    /// The private canary channel of one hub instance (single server).
    pub fn canary(&self, instance: &str) -> String {
        format!("{}:hub:canary:{instance}", self.prefix)
    }

    /// Candidate `n` for the canary channel of one instance on one shard: the hash tag
    /// `{<instance>-<n>}` picks the slot, so the caller tries `n` until the slot is the
    /// shard's.
    pub fn shard_canary(&self, instance: &str, n: u32) -> String {
        format!("{}:hub:canary:{{{instance}-{n}}}", self.prefix)
    }

    /// True for any canary channel of `instance` (either layout).
    pub fn is_canary_of(&self, channel: &str, instance: &str) -> bool {
        let Some(rest) = channel
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix(":hub:canary:"))
        else {
            return false;
        };
        rest == instance
            || rest
                .strip_prefix('{')
                .and_then(|r| r.strip_prefix(instance))
                .is_some_and(|r| r.starts_with('-') && r.ends_with('}'))
    }

    /// The key whose value changes when a single Redis server loses its data set.
    pub fn epoch(&self) -> String {
        format!("{}:hub:epoch", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::OrgId;

    fn org(id: &str) -> Topic {
        Topic::Org(OrgId::parse(id).unwrap())
    }

    #[test]
    fn single_server_names_are_dashclaws() {
        let keys = Keys::new("dashclaw", KeyScheme::Single);
        let acme = org("org_acme");
        assert_eq!(keys.stream(&acme), "dashclaw:org:org_acme:stream");
        assert_eq!(keys.channel(&acme), "dashclaw:org:org_acme:events");
        assert_eq!(
            keys.id_key(&acme, "evt_1"),
            "dashclaw:org:org_acme:id:evt_1"
        );
        assert_eq!(keys.stream(&Topic::Ops), "dashclaw:ops:stream");
        assert_eq!(keys.channel(&Topic::Ops), "dashclaw:ops:events");
        assert_eq!(keys.id_key(&Topic::Ops, "evt_1"), "dashclaw:ops:id:evt_1");
        assert_eq!(keys.canary("I"), "dashclaw:hub:canary:I");
        assert_eq!(keys.epoch(), "dashclaw:hub:epoch");
    }

    #[test]
    fn cluster_names_carry_the_topic_as_hash_tag() {
        let keys = Keys::new("dc", KeyScheme::Cluster);
        let acme = org("org_acme");
        assert_eq!(keys.stream(&acme), "dc:org:{org_acme}:stream");
        assert_eq!(keys.channel(&acme), "dc:org:{org_acme}:events");
        assert_eq!(keys.id_key(&acme, "evt_1"), "dc:org:{org_acme}:id:evt_1");
        assert_eq!(keys.stream(&Topic::Ops), "dc:{ops}:stream");
        assert_eq!(keys.channel(&Topic::Ops), "dc:{ops}:events");
        assert_eq!(keys.shard_canary("I", 7), "dc:hub:canary:{I-7}");
    }

    #[test]
    fn canaries_are_recognized_in_both_layouts() {
        let keys = Keys::new("dc", KeyScheme::Cluster);
        assert!(keys.is_canary_of(&keys.canary("I"), "I"));
        assert!(keys.is_canary_of(&keys.shard_canary("I", 12), "I"));
        assert!(!keys.is_canary_of(&keys.shard_canary("J", 12), "I"));
        assert!(!keys.is_canary_of(&keys.canary("IX"), "I"));
        assert!(!keys.is_canary_of("dc:org:{I-1}:events", "I"));
    }
}
