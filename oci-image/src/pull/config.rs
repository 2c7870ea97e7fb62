//! The parts of an image's config blob a function needs: what to run, where, with what
//! environment, and the platform it was built for.

use serde::Deserialize;

/// What the image says to run; the function's `ImageConfig` overrides each part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct ConfigBlob {
    architecture: Option<String>,
    os: Option<String>,
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    env: Option<Vec<String>>,
    user: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("the image config is not valid JSON: {0}")]
    Json(String),
    #[error("the image is for {os}/{architecture}; functions run linux/amd64 images")]
    Platform { os: String, architecture: String },
}

/// Parses a config blob and checks it is a linux/amd64 image.
pub fn parse(blob: &[u8]) -> Result<ImageConfig, ConfigError> {
    let c: ConfigBlob =
        serde_json::from_slice(blob).map_err(|e| ConfigError::Json(e.to_string()))?;
    let os = c.os.unwrap_or_default();
    let architecture = c.architecture.unwrap_or_default();
    if os != "linux" || architecture != "amd64" {
        return Err(ConfigError::Platform { os, architecture });
    }
    let r = c.config.unwrap_or_default();
    Ok(ImageConfig {
        entrypoint: r.entrypoint.unwrap_or_default(),
        cmd: r.cmd.unwrap_or_default(),
        working_dir: r.working_dir.filter(|w| !w.is_empty()),
        env: r.env.unwrap_or_default(),
        user: r.user.filter(|u| !u.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_settings_are_read_and_other_platforms_refused() {
        let c = parse(br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/lambda-entrypoint.sh"],"Cmd":["app.handler"],"WorkingDir":"/var/task","Env":["PATH=/usr/bin"]}}"#).unwrap();
        assert_eq!(c.entrypoint, ["/lambda-entrypoint.sh"]);
        assert_eq!(c.cmd, ["app.handler"]);
        assert_eq!(c.working_dir.as_deref(), Some("/var/task"));
        assert_eq!(c.env, ["PATH=/usr/bin"]);
        let arm = parse(br#"{"architecture":"arm64","os":"linux"}"#).unwrap_err();
        assert!(matches!(arm, ConfigError::Platform { .. }), "{arm}");
        assert!(matches!(parse(b"[").unwrap_err(), ConfigError::Json(_)));
    }
}
