//! Whether a Docker engine answers, asked the way testcontainers will reach it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `GET /_ping` to the engine at `DOCKER_HOST` (default `unix:///var/run/docker.sock`).
pub async fn ping() -> Result<(), String> {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
    let answer = tokio::time::timeout(Duration::from_secs(3), request(&host))
        .await
        .map_err(|_| format!("no answer from the Docker engine at {host}"))?
        .map_err(|e| format!("no Docker engine at {host}: {e}"))?;
    if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!(
            "the Docker engine at {host} answered {:?}",
            answer.lines().next().unwrap_or_default()
        ))
    }
}

async fn request(host: &str) -> std::io::Result<String> {
    const PING: &[u8] = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    let mut answer = Vec::new();
    if let Some(path) = host.strip_prefix("unix://") {
        let mut stream = tokio::net::UnixStream::connect(path).await?;
        stream.write_all(PING).await?;
        stream.read_to_end(&mut answer).await?;
    } else if let Some(addr) = host.strip_prefix("tcp://") {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(PING).await?;
        stream.read_to_end(&mut answer).await?;
    } else {
        return Err(std::io::Error::other(format!(
            "unsupported DOCKER_HOST {host}"
        )));
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}
