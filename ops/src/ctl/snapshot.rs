//! `snapshot save`: a backup streamed from a replica. (A new cluster is made from one on the
//! new replica's machine: `slapmaster restore`.)

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
            "saved {bytes} bytes to {} (from {}); restore it with `slapmaster restore`",
            file.display(),
            conn.url
        ),
        serde_json::json!({"file": file, "bytes": bytes}),
    ))
}
