//! `Client::search` against a fake v1 search API on 127.0.0.1.

use std::collections::HashMap;

use axum::extract::Query;
use kiln_registry::{Client, ClientConfig, Error, SearchResult};

async fn serve() -> String {
    async fn search(Query(q): Query<HashMap<String, String>>) -> axum::response::Response {
        use axum::response::IntoResponse;
        let term = q.get("q").cloned().unwrap_or_default();
        let n: usize = q.get("n").and_then(|n| n.parse().ok()).unwrap_or(25);
        if term == "broken" {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response();
        }
        let results: Vec<serde_json::Value> = (0..n.min(3))
            .map(|i| {
                serde_json::json!({
                    "name": format!("{term}{i}"),
                    "description": format!("image number {i}"),
                    "star_count": 10 - i,
                    "is_official": i == 0,
                    "is_automated": false,
                })
            })
            .collect();
        axum::Json(serde_json::json!({
            "num_pages": 1,
            "num_results": results.len(),
            "page_size": n,
            "query": term,
            "results": results,
        }))
        .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/v1/search", axum::routing::get(search));
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("127.0.0.1:{}", addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_the_v1_api() {
    let host = serve().await;
    let client = Client::new(
        ClientConfig {
            max_retries: 0,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let found = client.search(&host, "busy", 2).await.unwrap();
    assert_eq!(
        found,
        vec![
            SearchResult {
                name: "busy0".into(),
                description: "image number 0".into(),
                star_count: 10,
                is_official: true,
                is_automated: false,
            },
            SearchResult {
                name: "busy1".into(),
                description: "image number 1".into(),
                star_count: 9,
                is_official: false,
                is_automated: false,
            },
        ]
    );
    let err = client.search(&host, "broken", 5).await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 500, .. }), "{err:?}");
}
