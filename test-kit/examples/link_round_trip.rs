//! What a delay link adds to the round trip it is asked for: an echo server behind links of
//! 0, 0.5 (a region's inside) and 40 ms one way, 200 small exchanges each, their quantiles.
//!
//! `cargo run --release -p test-kit --example link_round_trip`

use std::time::{Duration, Instant};

use test_kit::distance::DelayLink;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("[::1]:0").await?;
    let echo = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let (mut read, mut write) = stream.into_split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    for one_way_us in [0, 500, 40_000] {
        let one_way = Duration::from_micros(one_way_us);
        let link = DelayLink::start(echo, one_way, Duration::ZERO, 1).await?;
        let mut stream = TcpStream::connect(link.addr()).await?;
        stream.set_nodelay(true)?;
        let mut answer = [0u8; 4];
        let mut round_trips = Vec::new();
        for _ in 0..200 {
            let sent = Instant::now();
            stream.write_all(b"ping").await?;
            stream.read_exact(&mut answer).await?;
            round_trips.push(sent.elapsed());
        }
        // The first exchange also waited for the connection to cross the link.
        round_trips.remove(0);
        round_trips.sort();
        // 199 exchanges: the 99th and 197th are their p50 and p99.
        let at = |rank: usize| round_trips[rank];
        println!(
            "one way {:>6.3} ms: round trip p50 {:.3} ms, p99 {:.3} ms, above twice the delay by {:.3} ms at p50",
            one_way.as_secs_f64() * 1e3,
            at(99).as_secs_f64() * 1e3,
            at(197).as_secs_f64() * 1e3,
            (at(99) - one_way * 2).as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
