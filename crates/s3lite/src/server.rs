//! The listener, the routing of path-style S3 requests, and one handler per operation.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use gzship_core::store::checksum;
use gzship_core::types::{ETag, MAX_PART_SIZE, MAX_PARTS, PartNumber};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, ETAG, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::state::{self, Body, Object, PartInfo, State, Upload};
use crate::xml::{self, Doc};
use crate::{Config, EtagKind, Storage};

type ResBody = UnsyncBoxBody<Bytes, io::Error>;

/// What every connection shares.
pub struct Shared {
    config: Config,
    addr: SocketAddr,
    state: Mutex<State>,
    request_ids: AtomicU64,
}

impl Shared {
    pub fn new(config: Config, addr: SocketAddr) -> io::Result<Shared> {
        if let Storage::Dir(dir) = &config.storage {
            std::fs::create_dir_all(dir.join(".uploads"))?;
        }
        let mut state = State::default();
        for b in &config.buckets {
            state.buckets.entry(b.clone()).or_default();
        }
        Ok(Shared {
            config,
            addr,
            state: Mutex::new(state),
            request_ids: AtomicU64::new(0),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A handler that panicked left no half-updated invariant worth refusing service for.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Accepts connections until `shutdown` resolves; each connection is served on its own task.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // Out of file descriptors and the like: keep serving the open connections.
                Err(_) => continue,
            },
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, shared.clone(), false));
    }
}

/// Serves the requests of one HTTP/1.1 connection until the client closes it. With
/// `half_close`, a client that shuts down its side still gets the replies to what it sent
/// (hyper's default, off, drops them; the fuzz target's client sends everything, then closes).
pub async fn serve_connection<IO>(io: IO, shared: Arc<Shared>, half_close: bool)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    });
    // A client that goes away mid-request is its own problem.
    let _ = hyper::server::conn::http1::Builder::new()
        .half_close(half_close)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// An S3 error reply.
struct S3Error {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Vec<(&'static str, String)>,
}

impl S3Error {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> S3Error {
        S3Error {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            message: message.into(),
            extra: Vec::new(),
        }
    }

    fn no_such_bucket(bucket: &str) -> S3Error {
        let mut e = S3Error::new(404, "NoSuchBucket", "The specified bucket does not exist");
        e.extra.push(("BucketName", bucket.to_owned()));
        e
    }

    fn no_such_upload(id: &str) -> S3Error {
        let mut e = S3Error::new(
            404,
            "NoSuchUpload",
            "The specified upload does not exist. The upload ID may be invalid, or the upload \
             may have been aborted or completed.",
        );
        e.extra.push(("UploadId", id.to_owned()));
        e
    }

    fn no_such_key(key: &str) -> S3Error {
        let mut e = S3Error::new(404, "NoSuchKey", "The specified key does not exist.");
        e.extra.push(("Key", key.to_owned()));
        e
    }

    fn io(e: io::Error) -> S3Error {
        S3Error::new(500, "InternalError", format!("gzship-s3lite: {e}"))
    }
}

impl From<state::Refusal> for S3Error {
    fn from(r: state::Refusal) -> S3Error {
        S3Error {
            status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
            code: r.code,
            message: r.message,
            extra: r.extra,
        }
    }
}

type Reply = Result<Response<ResBody>, S3Error>;

/// The request, split into what the handlers need.
struct Req {
    method: Method,
    bucket: String,
    key: String,
    query: BTreeMap<String, String>,
    headers: HeaderMap,
    body: Incoming,
}

impl Req {
    fn q(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn resource(&self) -> String {
        format!("/{}/{}", self.bucket, self.key)
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<ResBody> {
    let request_id = format!(
        "{:016X}",
        shared.request_ids.fetch_add(1, Ordering::Relaxed) + 1
    );
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path();
    let path = percent_encoding::percent_decode_str(raw_path)
        .decode_utf8_lossy()
        .into_owned();
    let path = path.strip_prefix('/').unwrap_or(&path);
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) => (b.to_owned(), k.to_owned()),
        None => (path.to_owned(), String::new()),
    };
    let query = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let req = Req {
        method: parts.method,
        bucket,
        key,
        query,
        headers: parts.headers,
        body,
    };
    let is_head = req.method == Method::HEAD;
    let resource = req.resource();
    let reply = route(shared, req).await;
    let mut response = match reply {
        Ok(r) => r,
        Err(e) => {
            let body = if is_head {
                // HEAD replies carry no body; the SDK maps the status alone.
                empty()
            } else {
                full(xml::error(
                    e.code,
                    &e.message,
                    &resource,
                    &request_id,
                    &e.extra,
                ))
            };
            let mut r = Response::new(body);
            *r.status_mut() = e.status;
            if !is_head {
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
            }
            r
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amz-request-id", v);
    }
    response
}

async fn route(shared: &Shared, req: Req) -> Reply {
    let has = |name: &str| req.query.contains_key(name);
    match (&req.method, req.bucket.is_empty(), req.key.is_empty()) {
        (_, true, _) => {
            // ListBuckets and friends: answer so that health checks see an S3-like server.
            let mut doc = Doc::new("ListAllMyBucketsResult");
            doc.open("Buckets");
            for name in shared.state().buckets.keys() {
                doc.open("Bucket").el("Name", name).close("Bucket");
            }
            doc.close("Buckets");
            Ok(xml_reply(doc.finish()))
        }
        (&Method::PUT, false, true) => create_bucket(shared, &req),
        (&Method::HEAD, false, true) => head_bucket(shared, &req),
        (&Method::GET, false, true) if has("uploads") => list_uploads(shared, &req),
        (&Method::GET, false, true) if req.q("list-type") == Some("2") => {
            list_objects(shared, &req)
        }
        (&Method::PUT, false, false) if !has("uploadId") && !has("partNumber") => {
            if req.header("x-amz-copy-source").is_some() {
                return Err(not_implemented("CopyObject"));
            }
            put_object(shared, req).await
        }
        (&Method::POST, false, false) if has("uploads") => create_upload(shared, &req),
        (&Method::PUT, false, false) if has("uploadId") && has("partNumber") => {
            if req.header("x-amz-copy-source").is_some() {
                return Err(not_implemented("UploadPartCopy"));
            }
            upload_part(shared, req).await
        }
        (&Method::POST, false, false) if has("uploadId") => complete(shared, req).await,
        (&Method::DELETE, false, false) if has("uploadId") => abort(shared, &req).await,
        (&Method::GET, false, false) if has("uploadId") => list_parts(shared, &req),
        (&Method::HEAD, false, false) => head_object(shared, &req),
        (&Method::GET, false, false) => get_object(shared, &req).await,
        (&Method::DELETE, false, false) => delete_object(shared, &req).await,
        _ => Err(not_implemented(&format!(
            "{} {}",
            req.method,
            req.query.keys().cloned().collect::<Vec<_>>().join("&")
        ))),
    }
}

fn not_implemented(what: &str) -> S3Error {
    S3Error::new(
        501,
        "NotImplemented",
        format!("gzship-s3lite does not implement {what}"),
    )
}

fn empty() -> ResBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn full(s: impl Into<Bytes>) -> ResBody {
    Full::new(s.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn xml_reply(doc: String) -> Response<ResBody> {
    let mut r = Response::new(full(doc));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    r
}

fn set_header(r: &mut Response<ResBody>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

fn create_bucket(shared: &Shared, req: &Req) -> Reply {
    // S3 in us-east-1 answers 200 to a bucket that its owner creates again.
    shared
        .state()
        .buckets
        .entry(req.bucket.clone())
        .or_default();
    let mut r = Response::new(empty());
    set_header(&mut r, "location", &format!("/{}", req.bucket));
    Ok(r)
}

fn head_bucket(shared: &Shared, req: &Req) -> Reply {
    if shared.state().buckets.contains_key(&req.bucket) {
        Ok(Response::new(empty()))
    } else {
        Err(S3Error::no_such_bucket(&req.bucket))
    }
}

fn create_upload(shared: &Shared, req: &Req) -> Reply {
    let metadata: Vec<(String, String)> = req
        .headers
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix("x-amz-meta-")?;
            Some((key.to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let algorithm = req
        .header("x-amz-checksum-algorithm")
        .map(str::to_ascii_uppercase);
    if let Some(a) = &algorithm
        && a != "CRC32C"
    {
        return Err(not_implemented(&format!("checksum algorithm {a}")));
    }
    let mut state = shared.state();
    if !state.buckets.contains_key(&req.bucket) {
        return Err(S3Error::no_such_bucket(&req.bucket));
    }
    let id = state.new_upload_id();
    state.uploads.insert(
        id.clone(),
        Upload {
            bucket: req.bucket.clone(),
            key: req.key.clone(),
            content_type: req.header("content-type").map(str::to_owned),
            metadata,
            checksum_algorithm: algorithm.clone(),
            initiated: SystemTime::now(),
            parts: BTreeMap::new(),
        },
    );
    drop(state);
    let mut doc = Doc::new("InitiateMultipartUploadResult");
    doc.el("Bucket", &req.bucket)
        .el("Key", &req.key)
        .el("UploadId", &id);
    let mut r = xml_reply(doc.finish());
    if let Some(a) = &algorithm {
        set_header(&mut r, "x-amz-checksum-algorithm", a);
        set_header(&mut r, "x-amz-checksum-type", "COMPOSITE");
    }
    Ok(r)
}

/// Finds the upload `id` for `req`'s bucket and key.
fn upload_of<'a>(state: &'a mut State, req: &Req, id: &str) -> Result<&'a mut Upload, S3Error> {
    match state.uploads.get_mut(id) {
        Some(u) if u.bucket == req.bucket && u.key == req.key => Ok(u),
        _ => Err(S3Error::no_such_upload(id)),
    }
}

async fn upload_part(shared: &Shared, mut req: Req) -> Reply {
    let id = req.q("uploadId").unwrap_or_default().to_owned();
    let number: u32 = req
        .q("partNumber")
        .and_then(|n| n.parse().ok())
        .and_then(|n| PartNumber::new(n).ok())
        .map(PartNumber::get)
        .ok_or_else(|| {
            let mut e = S3Error::new(
                400,
                "InvalidArgument",
                format!("Part number must be an integer between 1 and {MAX_PARTS}, inclusive"),
            );
            e.extra.push(("ArgumentName", "partNumber".into()));
            e
        })?;
    if req
        .header("content-encoding")
        .is_some_and(|e| e.contains("aws-chunked"))
    {
        return Err(not_implemented("aws-chunked bodies (send Content-Length)"));
    }
    let declared: Option<u64> = req.header("content-length").and_then(|n| n.parse().ok());
    if declared.is_some_and(|n| n > MAX_PART_SIZE) {
        return Err(S3Error::new(
            400,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size",
        ));
    }
    upload_of(&mut shared.state(), &req, &id)?;

    // Read the body at full speed: checksum every frame, keep it only if asked to.
    let file = match &shared.config.storage {
        Storage::Dir(dir) => {
            let path = dir
                .join(".uploads")
                .join(format!("{id}.{number}.{}", next_file_id()));
            Some((
                tokio::fs::File::create(&path).await.map_err(S3Error::io)?,
                path,
            ))
        }
        _ => None,
    };
    let mut file = file;
    let mut kept = Vec::new();
    let mut md5 = (shared.config.etag == EtagKind::Md5).then(<md5::Md5 as md5::Digest>::new);
    let mut crc = 0u32;
    let mut size = 0u64;
    while let Some(frame) = req.body.frame().await {
        let frame = frame.map_err(|e| {
            S3Error::new(
                400,
                "IncompleteBody",
                format!("You did not provide the number of bytes specified by the Content-Length HTTP header: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        crc = crc32c::crc32c_append(crc, &data);
        size += data.len() as u64;
        if let Some(h) = md5.as_mut() {
            md5::Digest::update(h, &data);
        }
        match (&shared.config.storage, file.as_mut()) {
            (Storage::Memory, _) => kept.push(data),
            (_, Some((f, _))) => f.write_all(&data).await.map_err(S3Error::io)?,
            _ => {}
        }
    }
    if size > MAX_PART_SIZE {
        return Err(S3Error::new(
            400,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size",
        ));
    }
    let sent_crc = req.header("x-amz-checksum-crc32c").map(str::to_owned);
    if let Some(sent) = &sent_crc
        && checksum::decode_crc32c(sent.trim()).ok() != Some(crc)
    {
        return Err(S3Error::new(
            400,
            "BadDigest",
            "The CRC32C you specified did not match the calculated checksum.",
        ));
    }
    let body = match (&shared.config.storage, file) {
        (Storage::Memory, _) => Body::Memory(kept),
        (_, Some((mut f, path))) => {
            f.flush().await.map_err(S3Error::io)?;
            Body::File(path)
        }
        _ => Body::Dropped,
    };
    let md5 = md5.map(|h| -> [u8; 16] { md5::Digest::finalize(h).into() });
    let etag = match md5 {
        Some(m) => format!("\"{}\"", hex::encode(m)),
        None => format!("\"{crc:08x}{size:016x}\""),
    };
    // Never empty, so never refused.
    let etag = ETag::new(etag).map_err(|e| S3Error::io(io::Error::other(e)))?;
    let replaced = {
        let mut state = shared.state();
        let upload = upload_of(&mut state, &req, &id)?;
        upload.parts.insert(
            number,
            PartInfo {
                etag: etag.clone(),
                size,
                crc32c: crc,
                md5,
                body: body.clone(),
                last_modified: SystemTime::now(),
            },
        )
    };
    if let Some(old) = replaced {
        remove_body(&old.body, &body).await;
    }
    let mut r = Response::new(empty());
    r.headers_mut().insert(
        ETAG,
        HeaderValue::from_str(etag.as_str()).map_err(|e| S3Error::io(io::Error::other(e)))?,
    );
    if let Some(sent) = &sent_crc {
        set_header(&mut r, "x-amz-checksum-crc32c", sent);
    }
    Ok(r)
}

/// Distinguishes concurrent uploads of the same part number in file names.
fn next_file_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Deletes a replaced part's file (unless the new part reuses it).
async fn remove_body(old: &Body, new: &Body) {
    if let Body::File(p) = old
        && !matches!(new, Body::File(q) if q == p)
    {
        let _ = tokio::fs::remove_file(p).await;
    }
}

async fn complete(shared: &Shared, mut req: Req) -> Reply {
    let id = req.q("uploadId").unwrap_or_default().to_owned();
    let mut raw = Vec::new();
    while let Some(frame) = req.body.frame().await {
        let frame = frame
            .map_err(|e| S3Error::new(400, "IncompleteBody", format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            raw.extend_from_slice(&data);
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let requested = xml::parse_complete(&text).ok_or_else(|| {
        S3Error::new(
            400,
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published \
             schema",
        )
    })?;
    let (upload, parts) = {
        let mut state = shared.state();
        let upload = upload_of(&mut state, &req, &id)?;
        let parts = state::check_complete(upload, &requested)?;
        (upload.clone(), parts)
    };
    let size = parts.iter().map(|p| p.size).sum();
    let body = match &shared.config.storage {
        Storage::Discard => Body::Dropped,
        Storage::Memory => Body::Memory(
            parts
                .iter()
                .flat_map(|p| match &p.body {
                    Body::Memory(chunks) => chunks.clone(),
                    _ => Vec::new(),
                })
                .collect(),
        ),
        Storage::Dir(dir) => {
            let path = object_path(dir, &req.bucket, &req.key)?;
            join_files(&parts, &path).await.map_err(S3Error::io)?;
            Body::File(path)
        }
    };
    let etag = state::object_etag(&parts);
    let checksum = upload
        .checksum_algorithm
        .as_deref()
        .filter(|a| *a == "CRC32C")
        .map(|_| checksum::encode_composite_crc32c(parts.iter().map(|p| p.crc32c)));
    let object = Object {
        size,
        etag: etag.clone(),
        content_type: upload.content_type.clone(),
        metadata: upload.metadata.clone(),
        checksum_crc32c: checksum.clone(),
        body,
        last_modified: SystemTime::now(),
    };
    let leftovers = {
        let mut state = shared.state();
        let Some(done) = state.uploads.remove(&id) else {
            // Aborted while we assembled it.
            return Err(S3Error::no_such_upload(&id));
        };
        state
            .buckets
            .entry(req.bucket.clone())
            .or_default()
            .insert(req.key.clone(), object);
        done.parts
    };
    for part in leftovers.values() {
        remove_body(&part.body, &Body::Dropped).await;
    }
    let mut doc = Doc::new("CompleteMultipartUploadResult");
    doc.el(
        "Location",
        &format!("http://{}/{}/{}", shared.addr, req.bucket, req.key),
    )
    .el("Bucket", &req.bucket)
    .el("Key", &req.key)
    .el("ETag", &etag);
    if let Some(c) = &checksum {
        doc.el("ChecksumCRC32C", c).el("ChecksumType", "COMPOSITE");
    }
    Ok(xml_reply(doc.finish()))
}

/// `DIR/BUCKET/KEY`, refusing keys that would leave the directory.
fn object_path(dir: &Path, bucket: &str, key: &str) -> Result<PathBuf, S3Error> {
    let rel = Path::new(key);
    if bucket.contains(['/', '\\'])
        || bucket.starts_with('.')
        || rel.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(S3Error::new(
            400,
            "InvalidArgument",
            "gzship-s3lite keeps objects as files: the key must be a relative path without '..'",
        ));
    }
    Ok(dir.join(bucket).join(rel))
}

async fn join_files(parts: &[PartInfo], path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let mut out = tokio::fs::File::create(path).await?;
    let mut buf = vec![0u8; 1 << 20];
    for p in parts {
        let Body::File(src) = &p.body else {
            return Err(io::Error::other("a part's file is missing"));
        };
        let mut f = tokio::fs::File::open(src).await?;
        loop {
            let n = f.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).await?;
        }
    }
    out.flush().await
}

async fn abort(shared: &Shared, req: &Req) -> Reply {
    let id = req.q("uploadId").unwrap_or_default().to_owned();
    let upload = {
        let mut state = shared.state();
        upload_of(&mut state, req, &id)?;
        state.uploads.remove(&id)
    };
    if let Some(u) = upload {
        for part in u.parts.values() {
            remove_body(&part.body, &Body::Dropped).await;
        }
    }
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

fn list_uploads(shared: &Shared, req: &Req) -> Reply {
    let prefix = req.q("prefix").unwrap_or_default();
    let key_marker = req.q("key-marker").unwrap_or_default();
    let id_marker = req.q("upload-id-marker").unwrap_or_default();
    let max: usize = req
        .q("max-uploads")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
        .clamp(1, 1000);
    let state = shared.state();
    if !state.buckets.contains_key(&req.bucket) {
        return Err(S3Error::no_such_bucket(&req.bucket));
    }
    let mut uploads: Vec<(&str, &str, &Upload)> = state
        .uploads
        .iter()
        .filter(|(_, u)| u.bucket == req.bucket && u.key.starts_with(prefix))
        .map(|(id, u)| (u.key.as_str(), id.as_str(), u))
        .filter(|(key, id, _)| {
            key_marker.is_empty()
                || *key > key_marker
                || (*key == key_marker && !id_marker.is_empty() && *id > id_marker)
        })
        .collect();
    uploads.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let truncated = uploads.len() > max;
    uploads.truncate(max);
    let mut doc = Doc::new("ListMultipartUploadsResult");
    doc.el("Bucket", &req.bucket)
        .el("KeyMarker", key_marker)
        .el("UploadIdMarker", id_marker);
    if truncated && let Some((key, id, _)) = uploads.last() {
        doc.el("NextKeyMarker", key).el("NextUploadIdMarker", id);
    }
    doc.el("Prefix", prefix)
        .el("MaxUploads", &max.to_string())
        .el("IsTruncated", if truncated { "true" } else { "false" });
    for (key, id, u) in &uploads {
        doc.open("Upload")
            .el("Key", key)
            .el("UploadId", id)
            .el("Initiated", &xml::iso8601(u.initiated))
            .el("StorageClass", "STANDARD");
        if let Some(a) = &u.checksum_algorithm {
            doc.el("ChecksumAlgorithm", a);
        }
        doc.close("Upload");
    }
    Ok(xml_reply(doc.finish()))
}

fn list_parts(shared: &Shared, req: &Req) -> Reply {
    let id = req.q("uploadId").unwrap_or_default().to_owned();
    let marker: u32 = req
        .q("part-number-marker")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let max: usize = req
        .q("max-parts")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
        .clamp(1, 1000);
    let mut state = shared.state();
    let upload = upload_of(&mut state, req, &id)?;
    // Saturating: a marker of u32::MAX (no part has that number) lists nothing.
    let parts: Vec<(&u32, &PartInfo)> = upload.parts.range(marker.saturating_add(1)..).collect();
    let truncated = parts.len() > max;
    let parts = &parts[..parts.len().min(max)];
    let with_crc = upload.checksum_algorithm.as_deref() == Some("CRC32C");
    let mut doc = Doc::new("ListPartsResult");
    doc.el("Bucket", &req.bucket)
        .el("Key", &req.key)
        .el("UploadId", &id)
        .el("PartNumberMarker", &marker.to_string());
    if let Some((n, _)) = parts.last() {
        doc.el("NextPartNumberMarker", &n.to_string());
    }
    doc.el("MaxParts", &max.to_string())
        .el("IsTruncated", if truncated { "true" } else { "false" });
    for (n, p) in parts {
        doc.open("Part")
            .el("PartNumber", &n.to_string())
            .el("LastModified", &xml::iso8601(p.last_modified))
            .el("ETag", p.etag.as_str())
            .el("Size", &p.size.to_string());
        if with_crc {
            doc.el("ChecksumCRC32C", &checksum::encode_crc32c(p.crc32c));
        }
        doc.close("Part");
    }
    doc.el("StorageClass", "STANDARD");
    if let Some(a) = &upload.checksum_algorithm {
        doc.el("ChecksumAlgorithm", a)
            .el("ChecksumType", "COMPOSITE");
    }
    Ok(xml_reply(doc.finish()))
}

fn find_object(shared: &Shared, req: &Req) -> Result<Object, S3Error> {
    let state = shared.state();
    let bucket = state
        .buckets
        .get(&req.bucket)
        .ok_or_else(|| S3Error::no_such_bucket(&req.bucket))?;
    bucket
        .get(&req.key)
        .cloned()
        .ok_or_else(|| S3Error::no_such_key(&req.key))
}

fn object_headers(r: &mut Response<ResBody>, o: &Object, req: &Req) {
    set_header(r, "content-length", &o.size.to_string());
    set_header(r, "etag", &o.etag);
    set_header(
        r,
        "content-type",
        o.content_type.as_deref().unwrap_or("binary/octet-stream"),
    );
    set_header(r, "accept-ranges", "bytes");
    set_header(r, "last-modified", &xml::http_date(o.last_modified));
    for (k, v) in &o.metadata {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(format!("x-amz-meta-{k}").as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(name, value);
        }
    }
    let mode = req.header("x-amz-checksum-mode").unwrap_or_default();
    if mode.eq_ignore_ascii_case("ENABLED")
        && let Some(c) = &o.checksum_crc32c
    {
        set_header(r, "x-amz-checksum-crc32c", c);
        set_header(r, "x-amz-checksum-type", "COMPOSITE");
    }
}

fn head_object(shared: &Shared, req: &Req) -> Reply {
    let o = find_object(shared, req)?;
    let mut r = Response::new(empty());
    object_headers(&mut r, &o, req);
    Ok(r)
}

async fn get_object(shared: &Shared, req: &Req) -> Reply {
    if req.header("range").is_some() {
        return Err(not_implemented("ranged GetObject"));
    }
    let o = find_object(shared, req)?;
    let body: ResBody = match &o.body {
        Body::Dropped => {
            return Err(not_implemented(
                "GetObject on a server that discards bodies (start it with --dir DIR)",
            ));
        }
        Body::Memory(chunks) => {
            let frames =
                futures::stream::iter(chunks.clone().into_iter().map(|c| Ok(Frame::data(c))));
            BodyExt::boxed_unsync(StreamBody::new(frames))
        }
        Body::File(path) => {
            let file = tokio::fs::File::open(path).await.map_err(S3Error::io)?;
            let chunks = futures::stream::try_unfold(file, |mut f| async move {
                let mut buf = vec![0u8; 1 << 20];
                let n = f.read(&mut buf).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some((Frame::data(Bytes::from(buf)), f)))
            });
            BodyExt::boxed_unsync(StreamBody::new(chunks))
        }
    };
    let mut r = Response::new(body);
    object_headers(&mut r, &o, req);
    Ok(r)
}

/// The most a PutObject body may be: gzship puts only job records (a few MiB at most).
const MAX_PUT_SIZE: u64 = 64 * 1024 * 1024;

/// PutObject of a small object (gzship's job records). Its body is always kept, in memory or in
/// the directory, whatever the storage mode: records are read back, and they are small. With
/// `If-None-Match: *` it is written only if no object is at the key (412 otherwise).
async fn put_object(shared: &Shared, mut req: Req) -> Reply {
    if req
        .header("content-encoding")
        .is_some_and(|e| e.contains("aws-chunked"))
    {
        return Err(not_implemented("aws-chunked bodies (send Content-Length)"));
    }
    if !shared.state().buckets.contains_key(&req.bucket) {
        return Err(S3Error::no_such_bucket(&req.bucket));
    }
    let mut data = Vec::new();
    while let Some(frame) = req.body.frame().await {
        let frame = frame
            .map_err(|e| S3Error::new(400, "IncompleteBody", format!("reading the body: {e}")))?;
        if let Ok(chunk) = frame.into_data() {
            data.extend_from_slice(&chunk);
        }
        if data.len() as u64 > MAX_PUT_SIZE {
            return Err(S3Error::new(
                400,
                "EntityTooLarge",
                format!("gzship-s3lite keeps PutObject bodies of at most {MAX_PUT_SIZE} bytes"),
            ));
        }
    }
    let md5: [u8; 16] = <md5::Md5 as md5::Digest>::digest(&data).into();
    let etag = format!("\"{}\"", hex::encode(md5));
    let body = match &shared.config.storage {
        Storage::Dir(dir) => {
            // Beside the parts, under a name of its own: it replaces the object at the key
            // only once it is in the state (a conditional put may be refused).
            object_path(dir, &req.bucket, &req.key)?;
            let path = dir.join(".uploads").join(format!("put-{}", next_file_id()));
            tokio::fs::write(&path, &data).await.map_err(S3Error::io)?;
            Body::File(path)
        }
        _ => Body::Memory(vec![Bytes::from(data.clone())]),
    };
    let metadata = req
        .headers
        .iter()
        .filter_map(|(k, v)| {
            let name = k.as_str().strip_prefix("x-amz-meta-")?;
            Some((name.to_owned(), v.to_str().ok()?.to_owned()))
        })
        .collect();
    let object = Object {
        size: data.len() as u64,
        etag: etag.clone(),
        content_type: req.header("content-type").map(str::to_owned),
        metadata,
        checksum_crc32c: None,
        body: body.clone(),
        last_modified: SystemTime::now(),
    };
    let only_if_absent = req.header("if-none-match").is_some_and(|v| v.trim() == "*");
    let replaced = {
        let mut state = shared.state();
        let objects = state.buckets.entry(req.bucket.clone()).or_default();
        if only_if_absent && objects.contains_key(&req.key) {
            None
        } else {
            Some(objects.insert(req.key.clone(), object))
        }
    };
    let Some(replaced) = replaced else {
        remove_body(&body, &Body::Dropped).await;
        return Err(S3Error::new(
            412,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
        ));
    };
    if let Some(old) = replaced {
        remove_body(&old.body, &body).await;
    }
    let mut r = Response::new(empty());
    set_header(&mut r, "etag", &etag);
    Ok(r)
}

/// ListObjectsV2: the keys under `prefix`, in key order, `max-keys` (at most 1,000) a page,
/// continued by an opaque token (here: the last key listed).
fn list_objects(shared: &Shared, req: &Req) -> Reply {
    let prefix = req.q("prefix").unwrap_or_default();
    let after = req
        .q("continuation-token")
        .or(req.q("start-after"))
        .unwrap_or_default();
    let max: usize = req
        .q("max-keys")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
        .clamp(1, 1000);
    let state = shared.state();
    let objects = state
        .buckets
        .get(&req.bucket)
        .ok_or_else(|| S3Error::no_such_bucket(&req.bucket))?;
    let page: Vec<(&String, &Object)> = objects
        .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
        .filter(|(k, _)| k.starts_with(prefix))
        .take(max + 1)
        .collect();
    let truncated = page.len() > max;
    let page = &page[..page.len().min(max)];
    let mut doc = Doc::new("ListBucketResult");
    doc.el("Name", &req.bucket)
        .el("Prefix", prefix)
        .el("KeyCount", &page.len().to_string())
        .el("MaxKeys", &max.to_string())
        .el("IsTruncated", if truncated { "true" } else { "false" });
    if let Some(token) = req.q("continuation-token") {
        doc.el("ContinuationToken", token);
    }
    if truncated && let Some((last, _)) = page.last() {
        doc.el("NextContinuationToken", last);
    }
    for (key, o) in page {
        doc.open("Contents")
            .el("Key", key)
            .el("LastModified", &xml::iso8601(o.last_modified))
            .el("ETag", &o.etag)
            .el("Size", &o.size.to_string())
            .el("StorageClass", "STANDARD")
            .close("Contents");
    }
    Ok(xml_reply(doc.finish()))
}

async fn delete_object(shared: &Shared, req: &Req) -> Reply {
    let removed = {
        let mut state = shared.state();
        let bucket = state
            .buckets
            .get_mut(&req.bucket)
            .ok_or_else(|| S3Error::no_such_bucket(&req.bucket))?;
        bucket.remove(&req.key)
    };
    if let Some(o) = removed {
        remove_body(&o.body, &Body::Dropped).await;
    }
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}
