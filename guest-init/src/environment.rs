//! The runtime's environment, as Lambda sets it.

use crate::config::Config;
use runtime_api::protocol::Init;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Lambda's default `PATH` (extendable by the function's own variables).
pub const DEFAULT_PATH: &str = "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin";

/// Variables a function may not override: Lambda rejects them in the configuration,
/// and guest-init applies them last so a host that forwards them anyway cannot win.
const RESERVED: [&str; 13] = [
    "_HANDLER",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "_X_AMZN_TRACE_ID",
];

/// Builds the complete environment for the runtime (nothing is inherited).
pub fn runtime_env(init: &Init, config: &Config, api: SocketAddr) -> BTreeMap<String, String> {
    let task = config.task_root.display().to_string();
    let rt = config.runtime_dir.display().to_string();
    let opt = config.opt_dir.display().to_string();
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    // Defaults the function may extend or replace.
    set("PATH", DEFAULT_PATH.to_string());
    set(
        "LD_LIBRARY_PATH",
        format!("/var/lang/lib:/lib64:/usr/lib64:{rt}:{rt}/lib:{task}:{task}/lib:{opt}/lib"),
    );
    set("LANG", "en_US.UTF-8".to_string());
    set("TZ", ":UTC".to_string());
    for (k, v) in &init.env {
        if !RESERVED.contains(&k.as_str()) && !k.is_empty() && !k.contains('=') {
            env.insert(k.clone(), v.clone());
        }
    }
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("_HANDLER", init.handler.clone());
    set("LAMBDA_TASK_ROOT", task);
    set("LAMBDA_RUNTIME_DIR", rt);
    set("AWS_LAMBDA_RUNTIME_API", api.to_string());
    set("AWS_LAMBDA_FUNCTION_NAME", init.function_name.clone());
    set(
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        init.memory_mib.to_string(),
    );
    set("AWS_LAMBDA_FUNCTION_VERSION", init.function_version.clone());
    set("AWS_LAMBDA_LOG_GROUP_NAME", init.log_group.clone());
    set("AWS_LAMBDA_LOG_STREAM_NAME", init.log_stream.clone());
    set(
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        init.initialization_type.clone(),
    );
    set("AWS_REGION", init.region.clone());
    set("AWS_DEFAULT_REGION", init.region.clone());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_variables_win_and_extendable_ones_are_replaced() {
        let init = Init {
            handler: "app.handler".into(),
            function_name: "f".into(),
            memory_mib: 256,
            region: "eu-west-1".into(),
            env: vec![
                ("PATH".into(), "/custom".into()),
                ("AWS_REGION".into(), "evil".into()),
                ("CUSTOM_VAR".into(), "x".into()),
                ("BAD=KEY".into(), "y".into()),
            ],
            ..Init::default()
        };
        let env = runtime_env(
            &init,
            &Config::host_defaults(),
            "127.0.0.1:9001".parse().unwrap(),
        );
        assert_eq!(env["PATH"], "/custom");
        assert_eq!(env["AWS_REGION"], "eu-west-1");
        assert_eq!(env["AWS_DEFAULT_REGION"], "eu-west-1");
        assert_eq!(env["CUSTOM_VAR"], "x");
        assert!(!env.contains_key("BAD=KEY"));
        assert_eq!(env["_HANDLER"], "app.handler");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
        assert_eq!(env["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001");
        assert_eq!(env["TZ"], ":UTC");
        assert_eq!(env["LAMBDA_TASK_ROOT"], "/var/task");
    }
}
