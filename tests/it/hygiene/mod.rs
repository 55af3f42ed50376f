//! Hygiene: what the upstream can trust. Keygate's own headers, hop-by-hop, forwarding and
//! URL-rewrite headers in every spelling; the request id; the one canonical path that is both
//! authorised and forwarded; trailers; and the size and time limits that stop a client from
//! holding keygate or the upstream hostage.

mod headers;
mod limits;
mod paths;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) use crate::support::*;

const READ_SCOPES: &str = "interactions:read metrics:read campaigns:read clinics:read";
