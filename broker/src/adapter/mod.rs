//! Adapters: how a namespace's broadcasts, joins and leaves reach the
//! sockets of every node. Today only the wire format of the Redis adapter
//! lives here ([`redis::wire`], [`redis::request`]); the local room table is
//! still [`crate::rooms`].

pub mod redis;
