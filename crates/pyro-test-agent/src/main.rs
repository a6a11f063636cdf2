//! A hostile guest agent, for pyro's tests only (never installed, never shipped).
//!
//! It is the real agent, except that it reads `/hostile` in the guest (any command can write it)
//! before each request and, in the mode named there, forges the reply the way a guest that replaced
//! the agent could: unsafe or endless manifests, sizes that lie, archives with huge header records
//! or links that lead out, command output where none belongs, replies that never come. Commands,
//! activation and power-off stay honest, so a test can switch modes with `workspace exec`.

use futures::future::BoxFuture;
use pyro_agent::serve::Forger;
use pyro_proto::{
    ArchiveSummary, ArtifactType, FileRead, GuestErrorKind, Manifest, ManifestEntry, OutputStream,
    Reply, Request, Written,
};
use sha2::{Digest, Sha256};
use tokio_yamux::StreamHandle;

struct Hostile;

fn mode() -> String {
    std::fs::read_to_string(format!("{}/hostile", pyro_agent::activate::ROOT))
        .map(|m| m.trim().to_string())
        .unwrap_or_default()
}

fn entry(path: &str, content: &[u8]) -> ManifestEntry {
    ManifestEntry {
        path: path.to_string(),
        artifact_type: ArtifactType::File,
        mode: 0o644,
        size_bytes: content.len() as u64,
        sha256: Some(hex::encode(Sha256::digest(content))),
        link_target: None,
    }
}

/// A raw 512-byte tar header (ustar), with its checksum.
fn header(name: &str, kind: u8, size: u64, link: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[157..157 + link.len().min(100)].copy_from_slice(&link.as_bytes()[..link.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

async fn send_tar(stream: &mut StreamHandle, tar: Vec<u8>, kind: ArtifactType, path: String) {
    for chunk in tar.chunks(64 << 10) {
        let _ = pyro_proto::write_data(stream, chunk).await;
    }
    let _ = pyro_proto::write_data(stream, &[]).await;
    let summary = ArchiveSummary {
        path,
        artifact_type: kind,
        entry_count: 1,
        bytes_written: 1,
    };
    let _ = pyro_proto::write_message(stream, &Reply::Exported(summary)).await;
}

fn finish_tar(mut tar: Vec<u8>) -> Vec<u8> {
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

impl Hostile {
    async fn forge_request(&self, request: Request, stream: &mut StreamHandle) -> Option<Request> {
        // Commands, activation and power-off stay honest: tests switch modes through them.
        if matches!(
            request,
            Request::Hello { .. }
                | Request::Activate(_)
                | Request::Exec(_)
                | Request::PowerOff
                | Request::Sync
        ) {
            return Some(request);
        }
        let mode = mode();
        match (mode.as_str(), &request) {
            ("manifest-unsafe", Request::Manifest { .. }) => {
                self.manifest(stream, vec![entry("../escape", b"x"), entry("ok", b"y")])
                    .await;
            }
            ("manifest-absolute", Request::Manifest { .. }) => {
                self.manifest(stream, vec![entry("/etc/cron.d/x", b"x")])
                    .await;
            }
            ("manifest-duplicate", Request::Manifest { .. }) => {
                self.manifest(stream, vec![entry("twice", b"x"), entry("twice", b"y")])
                    .await;
            }
            ("manifest-endless", Request::Manifest { .. }) => {
                let chunk = vec![b'['; 1 << 20];
                while pyro_proto::write_data(stream, &chunk).await.is_ok() {}
            }
            ("size-lies", Request::Manifest { .. }) => {
                self.manifest(stream, vec![entry("lie.txt", b"1234")]).await;
            }
            ("size-lies", Request::ReadFile { path, .. }) => {
                let _ = pyro_proto::write_payload(stream, &vec![b'a'; 1 << 20]).await;
                let info = FileRead {
                    path: path.clone(),
                    size_bytes: 4,
                    offset: 0,
                    bytes_returned: 1 << 20,
                };
                let _ = pyro_proto::write_message(stream, &Reply::FileRead(info)).await;
            }
            // A snapshot's tree comes back as an export does, and is forged the same ways.
            (
                "export-longname",
                Request::ExportArchive { path, .. } | Request::ExportSnapshotView { path, .. },
            ) => {
                let mut tar = header("././@LongLink", b'L', 1 << 30, "").to_vec();
                tar.extend(std::iter::repeat_n(b'a', 1 << 20));
                send_tar(stream, tar, ArtifactType::Directory, path.clone()).await;
            }
            (
                "export-pax-hidden",
                Request::ExportArchive { path, .. } | Request::ExportSnapshotView { path, .. },
            ) => {
                // A PAX `size=0` makes a tar reader take the next member's data for a header: there
                // sits a long-name record claiming a gigabyte, hidden from a walk by header sizes.
                let record = b"11 size=0\n";
                let mut tar = header("pax", b'x', record.len() as u64, "").to_vec();
                tar.extend_from_slice(record);
                tar.resize(1024, 0);
                tar.extend_from_slice(&header("a", b'0', 512, ""));
                tar.extend_from_slice(&header("././@LongLink", b'L', 1 << 30, ""));
                tar.extend(std::iter::repeat_n(b'a', 1 << 20));
                send_tar(stream, tar, ArtifactType::Directory, path.clone()).await;
            }
            ("export-file-is-link", Request::ExportArchive { path, .. }) => {
                let name = path.rsplit('/').next().unwrap_or("x");
                let tar =
                    finish_tar(header(name, b'2', 0, "../../../../../../etc/passwd").to_vec());
                send_tar(stream, tar, ArtifactType::File, path.clone()).await;
            }
            ("export-deep-link", Request::ExportArchive { path, .. }) => {
                let deep = format!("{}x", "a/".repeat(40));
                let up = format!("{}root/.ssh", "../".repeat(40));
                let tar = finish_tar(header(&deep, b'2', 0, &up).to_vec());
                send_tar(stream, tar, ArtifactType::File, path.clone()).await;
            }
            ("export-tree-escape", Request::ExportArchive { path, .. }) => {
                let mut tar = header("ok.txt", b'0', 3, "").to_vec();
                tar.extend_from_slice(b"ok\n");
                tar.resize(1024, 0);
                tar.extend_from_slice(&header("keys", b'2', 0, "/root/.ssh"));
                tar.extend_from_slice(&header("up", b'2', 0, "../.."));
                send_tar(
                    stream,
                    finish_tar(tar),
                    ArtifactType::Directory,
                    path.clone(),
                )
                .await;
            }
            ("output-flood", Request::ListFiles { .. } | Request::ReadFile { .. }) => {
                let chunk = vec![b'x'; 64 << 10];
                while pyro_proto::write_chunk(stream, OutputStream::Stdout, &chunk)
                    .await
                    .is_ok()
                {}
            }
            ("error-escape", Request::ListFiles { .. }) => {
                let message = "boom \u{1b}]0;PWNED\u{7}\u{1b}[2K\rall is well".to_string();
                let reply = Reply::Error {
                    kind: GuestErrorKind::Failed,
                    message,
                };
                let _ = pyro_proto::write_message(stream, &reply).await;
            }
            ("detach-refused", Request::Detach) => {
                // Keeps its session: the host must not save a guest whose agent is still in it.
                let reply = Reply::Error {
                    kind: GuestErrorKind::Failed,
                    message: "not now".to_string(),
                };
                let _ = pyro_proto::write_message(stream, &reply).await;
            }
            ("wrong-reply", Request::ListFiles { .. }) => {
                let reply = Reply::Written(Written {
                    files: Vec::new(),
                    deleted: Vec::new(),
                });
                let _ = pyro_proto::write_message(stream, &reply).await;
            }
            ("silent", _) | ("stall-writes", Request::WriteFiles { .. }) => {
                // Never read, never answer: the host must give up on its own.
                std::future::pending::<()>().await;
            }
            _ => return Some(request),
        }
        None
    }

    async fn manifest(&self, stream: &mut StreamHandle, entries: Vec<ManifestEntry>) {
        let payload = serde_json::to_vec(&entries).unwrap_or_default();
        let _ = pyro_proto::write_payload(stream, &payload).await;
        let reply = Reply::Manifest(Manifest {
            entries: Vec::new(),
            truncated: false,
        });
        let _ = pyro_proto::write_message(stream, &reply).await;
    }
}

impl Forger for Hostile {
    fn forge<'a>(
        &'a self,
        request: Request,
        stream: &'a mut StreamHandle,
    ) -> BoxFuture<'a, Option<Request>> {
        Box::pin(self.forge_request(request, stream))
    }
}

static HOSTILE: Hostile = Hostile;

fn main() {
    pyro_agent::run(Some(&HOSTILE));
}
