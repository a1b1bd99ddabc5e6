//! `snapshot save` (a backup streamed from a replica) and `snapshot restore` (a new data directory
//! from one, locally).

use super::*;

pub(super) async fn snapshot_save(
    conn: &Conn,
    file: &std::path::Path,
    progress: bool,
) -> Result<Output, CtlError> {
    use std::io::Write;
    let mut chunks = conn
        .answer(conn.admin().snapshot(conn.request(pb::SnapshotRequest {})?))
        .await?;
    // Written beside the target, synced, then renamed: the file is whole or absent.
    let partial = file.with_extension("partial");
    let mut out = std::fs::File::create(&partial)
        .map_err(CtlError::io(format!("creating {}", partial.display())))?;
    let mut bar = Progress::new(format!("saving {}", file.display()), progress);
    let mut bytes = 0u64;
    let streamed: Result<(), CtlError> = async {
        while let Some(chunk) = chunks.message().await.map_err(|e| conn.failed(e))? {
            out.write_all(&chunk.data)
                .map_err(CtlError::io(format!("writing {}", partial.display())))?;
            bytes += u64::try_from(chunk.data.len()).unwrap_or(u64::MAX);
            bar.update(bytes, None, "bytes");
        }
        out.sync_all()
            .map_err(CtlError::io(format!("syncing {}", partial.display())))
    }
    .await;
    bar.finish();
    if let Err(e) = streamed {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, file)
        .map_err(CtlError::io(format!("renaming to {}", file.display())))?;
    Ok(Output::message(
        format!(
            "saved {bytes} bytes to {} (from {}); restore it with `slapctl snapshot restore`",
            file.display(),
            conn.url
        ),
        serde_json::json!({"file": file, "bytes": bytes}),
    ))
}

pub(super) async fn restore(
    file: &std::path::Path,
    replica_config: &std::path::Path,
    progress: bool,
) -> Result<Output, CtlError> {
    use master_cluster::daemon::{FileConfig, Overrides};
    let config = FileConfig::load(Some(replica_config))
        .and_then(|c| c.validate(Overrides::default()))
        .map_err(|e| CtlError::Config(e.to_string()))?;
    let data_dir = config.replica.data_dir.clone();
    let bar = std::sync::Arc::new(std::sync::Mutex::new(Progress::new(
        format!("restoring {}", file.display()),
        progress,
    )));
    let drawing = bar.clone();
    master_cluster::daemon::restore_reporting(config, file, move |done, total| {
        drawing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(done, Some(total), "bytes");
    })
    .await
    .map_err(|e| CtlError::Refused(e.to_string()))?;
    bar.lock().unwrap_or_else(|p| p.into_inner()).finish();
    Ok(Output::message(
        format!(
            "restored {} into {}: start it with `slapmaster run --config {}`, then join others",
            file.display(),
            data_dir.display(),
            replica_config.display()
        ),
        serde_json::json!({"file": file, "data_dir": data_dir}),
    ))
}
