//! Bodies stream in both directions: nothing waits for a whole body.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use stagedoor::{Body, BoxError};
use tokio::sync::{mpsc, oneshot};

use crate::support::{Upstream, proxy_to};

/// A body fed from a channel, as a slow client or upstream would produce it.
fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, BoxError>(Frame::data(chunk)), rx))
    });
    (tx, Body::new(StreamBody::new(stream)))
}

fn client()
-> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

const STEP: Duration = Duration::from_secs(5);

#[tokio::test]
async fn response_chunks_arrive_before_the_body_ends() {
    let release: Arc<Mutex<Option<oneshot::Receiver<()>>>> = Arc::default();
    let (release_tx, release_rx) = oneshot::channel();
    *release.lock().unwrap() = Some(release_rx);
    let up = Upstream::start(move |_req| {
        let gate = release.lock().unwrap().take();
        async move {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"data: first\n\n"))
                    .await
                    .unwrap();
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                let _ = tx.send(Bytes::from_static(b"data: second\n\n")).await;
            });
            let mut resp = Response::new(body);
            resp.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            resp
        }
    })
    .await;
    let proxy = proxy_to(&up).await;
    let resp = client()
        .get(format!("http://{}/events", proxy.addr()).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(STEP, body.frame())
        .await
        .expect("first event arrived while the upstream was still holding the body open")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: first\n\n");
    release_tx.send(()).unwrap();
    let rest = tokio::time::timeout(STEP, body.collect())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest.to_bytes(), "data: second\n\n");
}

#[tokio::test]
async fn request_chunks_reach_the_upstream_before_the_upload_ends() {
    let (got_first_tx, got_first_rx) = oneshot::channel::<Bytes>();
    let got_first = Arc::new(Mutex::new(Some(got_first_tx)));
    let up = Upstream::start(move |req| {
        let got_first = got_first.lock().unwrap().take();
        async move {
            let mut body = req.into_body();
            let mut total = 0usize;
            let mut notify = got_first;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    total += data.len();
                    if let Some(tx) = notify.take() {
                        let _ = tx.send(data.clone());
                    }
                }
            }
            Response::new(stagedoor::full(total.to_string()))
        }
    })
    .await;
    let proxy = proxy_to(&up).await;
    let (tx, body) = channel_body();
    let request = Request::post(format!("http://{}/upload", proxy.addr()))
        .body(body)
        .unwrap();
    let response = tokio::spawn(client().request(request));
    tx.send(Bytes::from_static(b"first chunk")).await.unwrap();
    let first = tokio::time::timeout(STEP, got_first_rx)
        .await
        .expect("the upstream saw the first chunk while the upload was still open")
        .unwrap();
    assert_eq!(first, "first chunk");
    tx.send(Bytes::from_static(b" and the rest")).await.unwrap();
    drop(tx);
    let response = response.await.unwrap().unwrap();
    let total = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(total, "24");
}

const MIB: usize = 1 << 20;
const LARGE: usize = 64;

#[tokio::test]
async fn large_bodies_pass_both_ways() {
    let up = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/download" {
            let chunk = Bytes::from(vec![b'd'; MIB]);
            let stream = futures_util::stream::iter(0..LARGE)
                .map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone())));
            return Response::new(Body::new(StreamBody::new(stream)));
        }
        let mut body = req.into_body();
        let mut total = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            total += frame.data_ref().map_or(0, |d| d.len());
        }
        Response::new(stagedoor::full(total.to_string()))
    })
    .await;
    let proxy = proxy_to(&up).await;

    let chunk = Bytes::from(vec![b'u'; MIB]);
    let stream = futures_util::stream::iter(0..LARGE)
        .map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone())));
    let request = Request::post(format!("http://{}/upload", proxy.addr()))
        .body(Body::new(StreamBody::new(stream)))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let total = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(total, (LARGE * MIB).to_string());

    let response = client()
        .get(format!("http://{}/download", proxy.addr()).parse().unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(total, LARGE * MIB);
}
