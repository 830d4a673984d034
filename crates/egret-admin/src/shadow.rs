//! The shadow candidate over the admin socket: a policy loaded next to the live one, deciding
//! every request without being carried out, then promoted or dropped.
//!
//! | endpoint | `egret ctl` | answer |
//! |----------|-------------|--------|
//! | `PUT /v1/policy/shadow` (TOML or JSON policy) | `policy shadow FILE` | [`Applied`] |
//! | `GET /v1/policy/shadow` | `policy shadow report` | [`ShadowView`] |
//! | `POST /v1/policy/shadow/promote` | `policy shadow promote` | [`Applied`] |
//! | `DELETE /v1/policy/shadow` | `policy shadow drop` | [`ShadowView`] (the last report) |
//!
//! What the proxy compares and how the report is bounded is `egret_policy::shadow`'s; how a
//! candidate is validated, kept across live swaps and promoted is the [`Control`]
//! implementor's.

use egret_policy::{PolicyConfig, ShadowSummary};
use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::{AdminClient, AdminClientError};
use crate::control::{Applied, Control, ControlError};

/// The path of the candidate.
pub const SHADOW_PATH: &str = "/v1/policy/shadow";
/// The path that promotes it.
pub const PROMOTE_PATH: &str = "/v1/policy/shadow/promote";

/// What is asked of the candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum ShadowOp {
    /// Load (or replace) the candidate; its report starts empty.
    Load(Box<PolicyConfig>),
    /// Its report so far.
    Report,
    /// Make it the live policy (generation + 1) and remove it.
    Promote,
    /// Remove it.
    Drop,
}

/// `GET /v1/policy/shadow`, `DELETE /v1/policy/shadow`: the candidate's differences from the
/// live policy since it was loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowView {
    /// Generation of the live policy.
    pub generation: u64,
    /// When the candidate was loaded, seconds since the Unix epoch.
    pub loaded_at: u64,
    /// Requests both policies decided since then.
    pub requests: u64,
    /// The differences: totals and rows.
    #[serde(flatten)]
    pub summary: ShadowSummary,
}

/// The refusal when no candidate is loaded.
pub fn no_shadow() -> ControlError {
    ControlError::NotFound(
        "no shadow policy is loaded; load one with `egret ctl policy shadow FILE` (PUT /v1/policy/shadow)"
            .into(),
    )
}

/// Carries out `op` on `control`: what the server does for a shadow request.
pub(crate) async fn carry_out(
    control: &dyn Control,
    op: ShadowOp,
    if_generation: Option<u64>,
) -> Result<ShadowAnswer, ControlError> {
    Ok(match op {
        ShadowOp::Load(cfg) => {
            ShadowAnswer::Applied(control.shadow_load(*cfg, if_generation).await?)
        }
        ShadowOp::Report => ShadowAnswer::View(control.shadow_report()?),
        ShadowOp::Promote => ShadowAnswer::Applied(control.shadow_promote(if_generation).await?),
        ShadowOp::Drop => ShadowAnswer::View(control.shadow_drop().await?),
    })
}

/// The body of a successful shadow request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(crate) enum ShadowAnswer {
    Applied(Applied),
    View(ShadowView),
}

impl AdminClient {
    /// `PUT /v1/policy/shadow`: loads a candidate policy given as text in `content_type`
    /// (`application/toml` or `application/json`), validated like `PUT /v1/policy`.
    pub async fn shadow_load_text(
        &self,
        text: String,
        content_type: &'static str,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        self.put_policy_text(SHADOW_PATH, text, content_type, if_generation)
            .await
    }

    /// `GET /v1/policy/shadow`: the candidate's report.
    pub async fn shadow_report(&self) -> Result<ShadowView, AdminClientError> {
        self.send_json::<(), _>(Method::GET, SHADOW_PATH, None, None)
            .await
    }

    /// `POST /v1/policy/shadow/promote`: makes the candidate live.
    pub async fn shadow_promote(
        &self,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        self.send_json::<(), _>(Method::POST, PROMOTE_PATH, None, if_generation)
            .await
    }

    /// `DELETE /v1/policy/shadow`: removes the candidate, answering its last report.
    pub async fn shadow_drop(&self) -> Result<ShadowView, AdminClientError> {
        self.send_json::<(), _>(Method::DELETE, SHADOW_PATH, None, None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_round_trip_flat() {
        let v = ShadowView {
            generation: 3,
            loaded_at: 10,
            requests: 7,
            summary: ShadowSummary {
                differences: 2,
                overflow: 0,
                max_rows: 1000,
                rows: vec![],
            },
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["differences"], 2);
        assert_eq!(json["requests"], 7);
        assert_eq!(serde_json::from_value::<ShadowView>(json).unwrap(), v);
    }
}
