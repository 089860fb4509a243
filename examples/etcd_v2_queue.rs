//! A work queue on etcd v2 in-order keys: producers POST jobs, the consumer lists them sorted,
//! takes the oldest with compare-and-delete (so two consumers never take the same job) and
//! waits for new ones when the queue is empty.
//!
//! Needs an etcd with `--enable-v2=true`:
//! cargo run --example etcd_v2_queue -- --endpoint http://127.0.0.1:2379 --jobs 10

use std::time::Duration;

use portico::etcd::v2::{V2GetOptions, V2WaitOptions, V2};
use portico::etcd::{Client, ClientOptions, Error, V2Code};

const QUEUE: &str = "/queue/jobs";

/// Takes the oldest job, waiting for one if the queue is empty.
async fn take(v2: &V2) -> Result<String, Error> {
    loop {
        let listing = match v2
            .get(
                QUEUE,
                V2GetOptions {
                    sorted: true,
                    ..Default::default()
                },
            )
            .await
        {
            Ok(l) => l,
            Err(Error::V2 {
                code: V2Code::KeyNotFound,
                index,
                ..
            }) => {
                wait_for_job(v2, index + 1).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(oldest) = listing.node.nodes.first() else {
            wait_for_job(v2, listing.etcd_index.unwrap_or(0) + 1).await?;
            continue;
        };
        let value = oldest.value.clone().unwrap_or_default();
        // Another consumer may have taken it first: then try the next one.
        match v2
            .compare_and_delete(&oldest.key, None, Some(oldest.modified_index))
            .await
        {
            Ok(_) => return Ok(value),
            Err(Error::V2 {
                code: V2Code::CompareFailed | V2Code::KeyNotFound,
                ..
            }) => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn wait_for_job(v2: &V2, from: u64) -> Result<(), Error> {
    let opts = V2WaitOptions {
        recursive: true,
        wait_index: Some(from),
    };
    match v2.wait(QUEUE, opts).await {
        Ok(_) => Ok(()),
        // Too far behind: just list again.
        Err(Error::V2 {
            code: V2Code::EventIndexCleared,
            ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut endpoint = "http://127.0.0.1:2379".to_string();
    let mut jobs = 10usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--endpoint", Some(v)) => endpoint = v,
            ("--jobs", Some(v)) => jobs = v.parse().unwrap_or(10),
            _ => {
                eprintln!("usage: etcd_v2_queue [--endpoint URL] [--jobs N]");
                std::process::exit(2);
            }
        }
    }
    let v2 = Client::new(ClientOptions {
        endpoints: vec![endpoint],
        ..Default::default()
    })?
    .v2();

    // The producer adds jobs slowly, so the consumer also has to wait for some.
    let producer = {
        let v2 = v2.clone();
        tokio::spawn(async move {
            for n in 0..jobs {
                match v2.create_in_order(QUEUE, &format!("job-{n}"), None).await {
                    Ok(r) => println!("queued {} as {}", format_args!("job-{n}"), r.node.key),
                    Err(e) => eprintln!("queue job-{n}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    for _ in 0..jobs {
        let job = take(&v2).await?;
        println!("took {job}");
    }
    let _ = producer.await;
    Ok(())
}
