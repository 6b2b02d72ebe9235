//! Zed registers language servers only through extensions; this one starts
//! `hrm-lsp serve` for Go and forwards the `lsp.hrm-lsp` settings to it.
//!
//! Executable: `lsp.hrm-lsp.binary.path` (+ `arguments`) if set, else `hrm-lsp` on the
//! worktree's PATH (Zed reads PATH from the project's shell, so an activated virtualenv
//! counts). Settings: `lsp.hrm-lsp.initialization_options` become initializationOptions,
//! and `lsp.hrm-lsp.settings` answer `workspace/configuration` for the `hrmLsp` section.
use zed_extension_api::{self as zed, serde_json, settings::LspSettings, LanguageServerId, Result};

const SERVER: &str = "hrm-lsp";

struct HrmLspExtension;

impl zed::Extension for HrmLspExtension {
    fn new() -> Self {
        HrmLspExtension
    }

    fn language_server_command(
        &mut self,
        _id: &LanguageServerId,
        worktree: &zed::Worktree,
    ) -> Result<zed::Command> {
        let binary = LspSettings::for_worktree(SERVER, worktree).ok().and_then(|s| s.binary);
        let configured = binary.as_ref().and_then(|b| b.path.clone());
        let args = binary
            .as_ref()
            .and_then(|b| b.arguments.clone())
            .unwrap_or_else(|| vec!["serve".to_string()]);
        let command = configured.or_else(|| worktree.which(SERVER)).ok_or_else(|| {
            "hrm-lsp was not found on PATH. Install it with `python3 -m pip install hrm-lsp` \
             (into the project's virtualenv), or set lsp.hrm-lsp.binary.path in settings.json"
                .to_string()
        })?;
        Ok(zed::Command { command, args, env: worktree.shell_env() })
    }

    fn language_server_initialization_options(
        &mut self,
        _id: &LanguageServerId,
        worktree: &zed::Worktree,
    ) -> Result<Option<serde_json::Value>> {
        let options = LspSettings::for_worktree(SERVER, worktree)
            .ok()
            .and_then(|s| s.initialization_options);
        // An object even when empty: the server ignores anything else with a warning.
        Ok(Some(options.unwrap_or_else(|| serde_json::json!({}))))
    }

    fn language_server_workspace_configuration(
        &mut self,
        _id: &LanguageServerId,
        worktree: &zed::Worktree,
    ) -> Result<Option<serde_json::Value>> {
        let settings = LspSettings::for_worktree(SERVER, worktree).ok().and_then(|s| s.settings);
        Ok(Some(serde_json::json!({ "hrmLsp": settings.unwrap_or_else(|| serde_json::json!({})) })))
    }
}

zed::register_extension!(HrmLspExtension);
