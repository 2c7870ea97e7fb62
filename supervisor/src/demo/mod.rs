//! `supervisor demo`: the README's first command. Starts a supervisor on an
//! embedded default (data dir under the user's cache dir, auto isolation), deploys a
//! sample shell function, invokes it, prints the response and the REPORT line.

pub mod client;
pub mod sample;

use std::path::PathBuf;

use base64::Engine as _;
use clap::Args;

use crate::config::Config;
use crate::dataplane::DataPlaneArgs;
use client::Client;

pub const FUNCTION_NAME: &str = "demo-hello";

#[derive(Debug, Args, Default)]
pub struct DemoArgs {
    /// Data dir [default: $XDG_CACHE_HOME/lambda-supervisor/demo or ~/.cache/...].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Event sent to the function (JSON).
    #[arg(long, value_name = "JSON", default_value = r#"{"name":"demo"}"#)]
    pub payload: String,
    #[command(flatten)]
    pub data_plane: DataPlaneArgs,
}

fn default_data_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("lambda-supervisor").join("demo")
}

pub async fn run(args: DemoArgs) -> Result<(), String> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let mut config = Config::with_data_dir(&data_dir);
    config.listen = ([127, 0, 0, 1], 0).into();
    config.data_plane = args
        .data_plane
        .resolve(Default::default())
        .map_err(|e| format!("demo: {e}"))?;
    eprintln!("demo: data dir {}", data_dir.display());
    let prepared = crate::serve::prepare(config).await?;
    let client = Client {
        addr: prepared.addr,
        access_key_id: prepared.sup.credentials().access_key_id.clone(),
        secret_access_key: prepared.sup.credentials().secret_access_key.clone(),
        region: prepared.sup.config().region.clone(),
    };
    eprintln!("demo: supervisor listening on http://{}", prepared.addr);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(prepared.run(async {
        let _ = stop_rx.await;
    }));
    let payload = args.payload;
    let result = tokio::task::spawn_blocking(move || deploy_and_invoke(&client, &payload))
        .await
        .map_err(|e| format!("demo task failed: {e}"))
        .and_then(|r| r);
    let _ = stop_tx.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("demo: {e}"),
        Err(e) => eprintln!("demo: server task failed: {e}"),
    }
    result
}

fn check(r: &client::Response, want: u16, what: &str) -> Result<(), String> {
    if r.status == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ))
    }
}

fn deploy_and_invoke(c: &Client, payload: &str) -> Result<(), String> {
    let e = |e: client::ClientError| e.to_string();
    let path = format!("/2015-03-31/functions/{FUNCTION_NAME}");
    // A previous run's function is replaced, so the demo always shows a cold start.
    let r = c.send("DELETE", &path, &[], b"").map_err(e)?;
    if r.status != 204 && r.status != 404 {
        check(&r, 204, "DeleteFunction")?;
    }
    let zip = sample::zip().map_err(|e| e.to_string())?;
    let create = serde_json::json!({
        "FunctionName": FUNCTION_NAME,
        "Runtime": "provided.al2023",
        "Role": "arn:aws:iam::000000000000:role/demo",
        "Handler": sample::HANDLER,
        "Code": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) },
    });
    let body = create.to_string();
    let r = c
        .send(
            "POST",
            "/2015-03-31/functions",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .map_err(e)?;
    check(&r, 201, "CreateFunction")?;
    println!("deployed {FUNCTION_NAME} (provided.al2023, shell bootstrap)");
    let r = c
        .send(
            "POST",
            &format!("{path}/invocations"),
            &[("x-amz-log-type", "Tail")],
            payload.as_bytes(),
        )
        .map_err(e)?;
    check(&r, 200, "Invoke")?;
    println!("response: {}", String::from_utf8_lossy(&r.body));
    if let Some(err) = r.header("x-amz-function-error") {
        println!("function error: {err}");
    }
    let logs = r
        .header("x-amz-log-result")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    match logs.lines().find(|l| l.starts_with("REPORT ")) {
        Some(line) => println!("{}", line.trim_end()),
        None => return Err(format!("no REPORT line in the invoke's logs:\n{logs}")),
    }
    Ok(())
}
