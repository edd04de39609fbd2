//! Listing: a repository's tags and a registry's catalog, following
//! `Link: <…>; rel="next"` pagination.

use kiln_oci::Reference;
use reqwest::header;
use reqwest::{Method, StatusCode, Url};

use crate::client::{Client, Endpoint, Target, api_host, classify};
use crate::error::{Error, Result};

/// Entries asked for per page.
const PAGE_SIZE: u32 = 1000;
/// Pages followed at most, against a registry that links in circles.
const MAX_PAGES: usize = 1000;

impl Client {
    /// The tags of `repository` (its tag and digest, if any, are ignored).
    pub async fn list_tags(&self, repository: &Reference) -> Result<Vec<String>> {
        let repository = crate::pull::normalize(repository);
        let ep = self.endpoint(repository.registry_host()).await?;
        let repo = repository.path().to_owned();
        let mut url = ep.url(&format!("v2/{repo}/tags/list"))?;
        url.query_pairs_mut()
            .append_pair("n", &PAGE_SIZE.to_string());
        let scope = format!("repository:{repo}:pull");
        self.paginate(&ep, &scope, &repo, url, "tags").await
    }

    /// The repositories of `registry` (`host[:port]`) whose name contains
    /// `filter` (all of them without one): `search` against registries
    /// other than Docker Hub.
    pub async fn catalog(&self, registry: &str, filter: Option<&str>) -> Result<Vec<String>> {
        let ep = self.endpoint(&api_host(registry)).await?;
        let mut url = ep.url("v2/_catalog")?;
        url.query_pairs_mut()
            .append_pair("n", &PAGE_SIZE.to_string());
        let mut repos = self
            .paginate(&ep, "registry:catalog:*", "", url, "repositories")
            .await?;
        if let Some(filter) = filter.filter(|f| !f.is_empty()) {
            let filter = filter.to_lowercase();
            repos.retain(|r| r.to_lowercase().contains(&filter));
        }
        Ok(repos)
    }

    async fn paginate(
        &self,
        ep: &Endpoint,
        scope: &str,
        repo: &str,
        first: Url,
        field: &str,
    ) -> Result<Vec<String>> {
        let scopes = [scope.to_owned()];
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let resp = self.send(ep, &scopes, Method::GET, &url, &Ok).await?;
            let resp = self
                .check(
                    &ep.host,
                    Method::GET,
                    resp,
                    &[StatusCode::OK],
                    Target {
                        repository: repo,
                        manifest: None,
                    },
                )
                .await?;
            if pages < MAX_PAGES
                && let Some(link) = resp
                    .headers()
                    .get(header::LINK)
                    .and_then(|v| v.to_str().ok())
                    .and_then(next_link)
            {
                next = Some(resp.url().join(&link).map_err(|e| Error::InvalidUrl {
                    url: link.clone(),
                    reason: e.to_string(),
                })?);
            }
            let url_text = resp.url().to_string();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| classify(&ep.host, &url_text, e))?;
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| Error::InvalidResponse {
                    registry: ep.host.clone(),
                    url: url_text.clone(),
                    reason: e.to_string(),
                })?;
            if let Some(items) = value.get(field).and_then(|v| v.as_array()) {
                out.extend(items.iter().filter_map(|v| v.as_str().map(str::to_owned)));
            }
        }
        Ok(out)
    }
}

/// The target of `rel="next"` in a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_headers() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }
}
