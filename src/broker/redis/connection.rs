//! The command connection of the Redis backend: one server, through a self-reconnecting
//! multiplexed connection, or a cluster, through the `redis` crate's cluster client (which
//! follows `MOVED`/`ASK` and new and removed nodes). Both carry the same commands, so the
//! command side is written once against [`Connection`].

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::topology::{ClusterUrl, SlotMap};

/// One server or a cluster; cheap to clone (clones share the underlying connections).
#[derive(Clone)]
pub enum Connection {
    /// A single Redis server.
    Single(ConnectionManager),
    /// A Redis Cluster; `fallback_host` reaches masters advertised without a host.
    Cluster {
        /// The cluster client's connection (one multiplexed connection per node).
        connection: ClusterConnection,
        /// The first seed's host.
        fallback_host: String,
    },
}

impl Connection {
    /// A lazily connecting connection to one server.
    pub fn single(client: redis::Client, timeout: Duration) -> redis::RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self::Single(ConnectionManager::new_lazy_with_config(
            client, config,
        )?))
    }

    /// A lazily connecting connection to the cluster of `url`'s seeds. A request fails
    /// within `timeout` however many redirects and retries it takes (the crate's own
    /// defaults are no response timeout and at least 1.28 s between retries).
    pub fn cluster(url: &ClusterUrl, timeout: Duration) -> redis::RedisResult<Self> {
        let client = ClusterClientBuilder::new(url.seeds())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .overall_response_timeout(Some(timeout))
            .retries(4)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .build()?;
        let connection =
            client.get_pending_async_connection_with_config(redis::cluster::ClusterConfig::new());
        let fallback_host = url.first_host().to_owned();
        Ok(Self::Cluster {
            connection,
            fallback_host,
        })
    }

    /// The cluster's slot map (`CLUSTER SLOTS` from any node); an error on a single server.
    pub async fn slot_map(&self) -> redis::RedisResult<SlotMap> {
        let Self::Cluster {
            connection,
            fallback_host,
        } = self
        else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "CLUSTER SLOTS needs a cluster",
            )));
        };
        let mut command = redis::cmd("CLUSTER");
        command.arg("SLOTS");
        let reply = connection
            .clone()
            .route_command(
                command,
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        SlotMap::parse(&reply, fallback_host)
            .map_err(|e| redis::RedisError::from((redis::ErrorKind::Parse, "CLUSTER SLOTS", e)))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster { connection, .. } => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster { connection, .. } => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster { connection, .. } => connection.get_db(),
        }
    }
}
