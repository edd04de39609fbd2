//! Searching Docker Hub: the index's v1 search API
//! (`GET /v1/search?q=TERM&n=LIMIT`), as `docker search` uses it.
//! Registries other than Docker Hub are searched through their catalog
//! ([`Client::catalog`]).

use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::client::{Client, Target, classify};
use crate::error::{Error, Result};

/// The host of Docker Hub's search API.
pub const DOCKER_HUB_INDEX_HOST: &str = "index.docker.io";

/// Largest number of results the search API returns.
pub const MAX_SEARCH_LIMIT: usize = 100;

/// One repository found by [`Client::search`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct SearchResult {
    /// The repository name (`busybox`, `user/app`).
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub star_count: u64,
    #[serde(default)]
    pub is_official: bool,
    #[serde(default)]
    pub is_automated: bool,
}

#[derive(Deserialize)]
struct SearchResponse {
    #[serde(default)]
    results: Vec<SearchResult>,
}

impl Client {
    /// Searches the v1 search API of `index` (a host such as
    /// [`DOCKER_HUB_INDEX_HOST`], with optional port; loopback and
    /// insecure hosts may be spoken to over HTTP) for `term`, returning at
    /// most `limit` results (1 to [`MAX_SEARCH_LIMIT`]) in the order the
    /// index ranks them.
    pub async fn search(&self, index: &str, term: &str, limit: usize) -> Result<Vec<SearchResult>> {
        let ep = self.endpoint(index).await?;
        let limit = limit.clamp(1, MAX_SEARCH_LIMIT);
        let mut url = ep.url("v1/search")?;
        url.query_pairs_mut()
            .append_pair("q", term)
            .append_pair("n", &limit.to_string());
        let resp = self
            .send(&ep, &[], Method::GET, &url, &|rb| {
                Ok(rb.header(header::ACCEPT, HeaderValue::from_static("application/json")))
            })
            .await?;
        let resp = self
            .check(
                &ep.host,
                Method::GET,
                resp,
                &[StatusCode::OK],
                Target {
                    repository: "",
                    manifest: None,
                },
            )
            .await?;
        let url_text = resp.url().to_string();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| classify(&ep.host, &url_text, e))?;
        let mut body: SearchResponse =
            serde_json::from_slice(&bytes).map_err(|e| Error::InvalidResponse {
                registry: ep.host.clone(),
                url: url_text,
                reason: e.to_string(),
            })?;
        body.results.truncate(limit);
        tracing::debug!(index = %ep.host, %term, found = body.results.len(), "searched");
        Ok(body.results)
    }
}
