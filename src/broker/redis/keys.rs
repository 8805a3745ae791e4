//! Redis key and channel names (contract section 2), in one place.

use crate::envelope::Topic;

/// Key and channel names under one prefix (`REALTIME_KEY_PREFIX`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The topic's replay stream.
    pub fn stream(&self, topic: &Topic) -> String {
        match topic {
            Topic::Org(org) => format!("{}:org:{org}:stream", self.prefix),
            Topic::Ops => format!("{}:ops:stream", self.prefix),
        }
    }

    /// The topic's pub/sub channel.
    pub fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Org(org) => format!("{}:org:{org}:events", self.prefix),
            Topic::Ops => format!("{}:ops:events", self.prefix),
        }
    }

    /// The idempotency key of an envelope id (hub-internal).
    pub fn id_key(&self, topic: &Topic, id: &str) -> String {
        match topic {
            Topic::Org(org) => format!("{}:org:{org}:id:{id}", self.prefix),
            Topic::Ops => format!("{}:ops:id:{id}", self.prefix),
        }
    }

    /// The private canary channel of one hub instance.
    pub fn canary(&self, instance: &str) -> String {
        format!("{}:hub:canary:{instance}", self.prefix)
    }

    /// The key whose value changes when Redis loses its data set.
    pub fn epoch(&self) -> String {
        format!("{}:hub:epoch", self.prefix)
    }
}
