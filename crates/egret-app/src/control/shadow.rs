//! The shadow candidate (`egret ctl policy shadow`): loaded, kept across live swaps,
//! promoted and dropped under the control plane's mutex, like every change.
//!
//! The candidate is a static layer, as `policy set` sends: it is compiled with the live
//! runtime layer (`set-outbound`, `set-outbound-by-host`), and compiled again after every live
//! swap so that runtime edits apply to both, as they would after promoting it. Edits of the
//! live static layer (`policy set`, `allow-host`, `handler set`, ...) leave the candidate as
//! loaded. It is held in memory only: a restarted egret has none.

use std::sync::Arc;

use egret_admin::{Applied, ControlError, ShadowView};
use egret_policy::{PolicyConfig, RuntimeLayer};
use egret_proxy::Shadow;

use super::{check_generation, now_secs, ControlPlane, Guarded};
use crate::policy_source::compile;

/// Rows a candidate's report keeps; past them differences are only counted.
const MAX_ROWS: usize = egret_policy::shadow::DEFAULT_MAX_ROWS;

impl ControlPlane {
    pub(super) async fn shadow_load_inner(
        &self,
        cfg: PolicyConfig,
        if_generation: Option<u64>,
    ) -> Result<Applied, ControlError> {
        let mut guard = self.guarded.lock().await;
        let g = &mut *guard;
        check_generation(g, if_generation)?;
        let generation = g.state.generation;
        let rt = g.state.runtime.clone();
        // Validated as `policy set` would validate it, modules included; nothing is installed.
        let (compiled, _handlers) = self.prepare(g, &cfg, &rt, generation).await?;
        let warnings = compiled
            .warnings()
            .iter()
            .map(ToString::to_string)
            .collect();
        self.shadow
            .store(Some(Arc::new(Shadow::new(compiled, now_secs(), MAX_ROWS))));
        g.shadow_cfg = Some(cfg);
        tracing::info!(generation, "shadow policy loaded");
        Ok(Applied {
            generation,
            warnings,
        })
    }

    pub(super) async fn shadow_promote_inner(
        &self,
        if_generation: Option<u64>,
    ) -> Result<Applied, ControlError> {
        let mut guard = self.guarded.lock().await;
        let g = &mut *guard;
        check_generation(g, if_generation)?;
        let cfg = g
            .shadow_cfg
            .take()
            .ok_or_else(egret_admin::shadow::no_shadow)?;
        let rt = g.state.runtime.clone();
        match self.commit(g, cfg.clone(), rt, "promote_shadow").await {
            Ok(applied) => {
                self.shadow.store(None);
                tracing::info!(generation = applied.generation, "shadow policy promoted");
                Ok(applied)
            }
            Err(e) => {
                g.shadow_cfg = Some(cfg);
                Err(e)
            }
        }
    }

    pub(super) async fn shadow_drop_inner(&self) -> Result<ShadowView, ControlError> {
        let mut guard = self.guarded.lock().await;
        if guard.shadow_cfg.take().is_none() {
            return Err(egret_admin::shadow::no_shadow());
        }
        let last = self.shadow.swap(None);
        tracing::info!("shadow policy dropped");
        let shadow = last.ok_or_else(egret_admin::shadow::no_shadow)?;
        Ok(self.shadow_view(&shadow))
    }

    /// After a live swap to `generation` with runtime layer `rt`: the candidate compiled
    /// anew, keeping its report. A candidate that no longer compiles (a runtime route names a
    /// handler it lacks) is dropped, and the warning returned says so.
    pub(super) fn reshadow(
        &self,
        g: &mut Guarded,
        rt: &RuntimeLayer,
        generation: u64,
    ) -> Option<String> {
        let cfg = g.shadow_cfg.as_ref()?;
        let current = self.shadow.load_full()?;
        match compile(cfg, rt, generation, &self.pins) {
            Ok(p) => {
                self.shadow.store(Some(Arc::new(current.recompiled(p))));
                None
            }
            Err(e) => {
                g.shadow_cfg = None;
                self.shadow.store(None);
                tracing::warn!(error = %e, "shadow policy dropped: it does not compile with the new runtime layer");
                Some(format!(
                    "the shadow policy was dropped: it does not compile with the new runtime layer: {e}"
                ))
            }
        }
    }

    pub(super) fn shadow_view(&self, shadow: &Shadow) -> ShadowView {
        ShadowView {
            generation: self.policy.load().generation(),
            loaded_at: shadow.loaded_at(),
            requests: shadow.requests(),
            summary: shadow.summary(),
        }
    }
}
