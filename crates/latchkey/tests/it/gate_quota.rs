//! `latchkey gate --quota`: request quotas per client through the real binary, alone, shared
//! by two gates through the machine's Redis, and counted locally while a private Redis is
//! stopped.

use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use crate::gateways::{
    API, Background, gate_command, log_field, recording_echo_upstream, start_logged, token,
};
use crate::helpers::{TestApp, TestClient, spawn_app_at_real_time};

const DAY: u64 = 86_400;

/// A gate in front of `upstream` with `extra` flags and a metrics listener: the process, its
/// URL, its metrics URL and its later log lines.
fn gate(
    app: &TestApp,
    upstream: &str,
    extra: &[&str],
) -> (Background, String, String, Receiver<String>) {
    let mut command = gate_command(app, upstream);
    command
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(extra);
    let (process, line, logs) = start_logged(command, "latchkey gate is serving");
    (
        process,
        format!("http://{}", log_field(&line, "listen")),
        format!("http://{}/metrics", log_field(&line, "metrics")),
        logs,
    )
}

async fn api_token(app: &TestApp, client: &TestClient) -> String {
    token(app, client, &format!("resource={API}")).await
}

async fn get(url: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn unix_now() -> u64 {
    std::time::UNIX_EPOCH.elapsed().unwrap().as_secs()
}

/// The quotas below are per UTC day: a test started in the last minute of a day waits for the
/// next, so its window cannot end half way.
async fn not_at_the_end_of_a_day() {
    let left = DAY - unix_now() % DAY;
    if left < 60 {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

/// Waits up to 10 s for a log line containing `text`.
fn logged(logs: &Receiver<String>, text: &str) -> String {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match logs.recv_timeout(left) {
            Ok(line) if line.contains(text) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line containing {text:?}"),
        }
    }
}

/// The value of the unlabelled series `name` in a metrics page.
async fn metric(metrics_url: &str, name: &str) -> f64 {
    let page = reqwest::get(metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    page.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in\n{page}"))
        .parse()
        .unwrap()
}

/// The Redis at 127.0.0.1:6379, or `None` to skip (a failure under CI).
fn machine_redis() -> Option<&'static str> {
    match std::net::TcpStream::connect("127.0.0.1:6379") {
        Ok(_) => Some("redis://127.0.0.1:6379/"),
        Err(error) if std::env::var_os("CI").is_some() => {
            panic!("CI needs Redis on 127.0.0.1:6379: {error}")
        }
        Err(error) => {
            eprintln!("skipped: no Redis on 127.0.0.1:6379 ({error})");
            None
        }
    }
}

/// How many requests of `n` through `urls` in turn (each with `token`) were let through; any
/// other answer than 200 or 429 fails.
async fn admitted(urls: &[&str], token: &str, n: usize) -> usize {
    let mut admitted = 0;
    for i in 0..n {
        let response = get(urls[i % urls.len()], token).await;
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("{other}"),
        }
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_refuses_a_client_past_its_quota_and_spares_the_others() {
    not_at_the_end_of_a_day().await;
    let app = spawn_app_at_real_time().await;
    let (a, b, c) = (
        app.client(|_| {}).await,
        app.client(|_| {}).await,
        app.client(|_| {}).await,
    );
    let (upstream, seen) = recording_echo_upstream().await;
    // b's quota comes from a file, read again on SIGHUP.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quotas");
    std::fs::write(&file, format!("# per client\n{}=5/day\n", b.id())).unwrap();
    let (gate_process, url, metrics_url, logs) = gate(
        &app,
        &upstream,
        &[
            "--quota",
            "default=3/day",
            "--quota-file",
            file.to_str().unwrap(),
            "--quota",
            &format!("{}=off", c.id()),
        ],
    );
    let (a_token, b_token, c_token) = (
        api_token(&app, &a).await,
        api_token(&app, &b).await,
        api_token(&app, &c).await,
    );

    // a: three, each saying how many are left, then 429.
    for left in [2, 1, 0] {
        let response = get(&format!("{url}/a"), &a_token).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "ratelimit-policy").unwrap(),
            "\"day\";q=3;w=86400"
        );
        let state = header(&response, "ratelimit").unwrap();
        assert!(
            state.starts_with(&format!("\"day\";r={left};t=")),
            "{state}"
        );
    }
    let refused = get(&format!("{url}/a"), &a_token).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    let to_midnight = DAY - unix_now() % DAY;
    assert!(
        retry_after.abs_diff(to_midnight) <= 2,
        "Retry-After {retry_after}, midnight UTC in {to_midnight} s"
    );
    assert_eq!(
        header(&refused, "ratelimit-policy").unwrap(),
        "\"day\";q=3;w=86400"
    );
    assert_eq!(
        header(&refused, "ratelimit").unwrap(),
        format!("\"day\";r=0;t={retry_after}")
    );
    assert_eq!(
        header(&refused, "content-type").unwrap(),
        "application/problem+json"
    );
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["status"], 429);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("3 requests per day"),
        "{problem}"
    );
    // The upstream never saw the refused request.
    let to_a = || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| *r == "GET /a")
            .count()
    };
    assert_eq!(to_a(), 3);

    // b has a quota of its own; c has none.
    assert_eq!(admitted(&[&format!("{url}/b")], &b_token, 7).await, 5);
    // Raised to 7 in the file and read again: 2 more today, not 7.
    std::fs::write(&file, format!("{}=7/day\n", b.id())).unwrap();
    hang_up(&gate_process);
    logged(&logs, "quota file read again");
    assert_eq!(admitted(&[&format!("{url}/b")], &b_token, 4).await, 2);
    for _ in 0..8 {
        let response = get(&format!("{url}/c"), &c_token).await;
        assert_eq!(response.status(), 200);
        assert!(header(&response, "ratelimit").is_none());
    }
    // A new token changes nothing: the quota is the client's.
    let again = api_token(&app, &a).await;
    assert_eq!(get(&format!("{url}/a"), &again).await.status(), 429);
    assert_eq!(to_a(), 3);
    assert_eq!(
        metric(&metrics_url, "latchkey_gate_quota_exceeded_total").await,
        6.0
    );
    // A file that does not parse is refused, and the quotas stay.
    std::fs::write(&file, "b=7/fortnight\n").unwrap();
    hang_up(&gate_process);
    logged(&logs, "quota file not read again");
    assert_eq!(get(&format!("{url}/b"), &b_token).await.status(), 429);
}

/// Sends SIGHUP to the gate.
fn hang_up(gate: &Background) {
    let status = Command::new("kill")
        .args(["-HUP", &gate.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_a_quota_file_does_not_stop_a_gate() {
    let app = spawn_app_at_real_time().await;
    let client = app.client(|_| {}).await;
    let (upstream, _) = recording_echo_upstream().await;
    let (gate_process, url, metrics_url, logs) = gate(&app, &upstream, &[]);
    hang_up(&gate_process);
    logged(&logs, "no --quota-file to read again");
    let token = api_token(&app, &client).await;
    assert_eq!(get(&url, &token).await.status(), 200);
    // The quota figures exist, at zero, with no quota set.
    assert_eq!(
        metric(&metrics_url, "latchkey_gate_quota_exceeded_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gates_share_a_clients_quota_through_redis() {
    let Some(redis) = machine_redis() else {
        return;
    };
    not_at_the_end_of_a_day().await;
    let app = spawn_app_at_real_time().await;
    let (small, big) = (app.client(|_| {}).await, app.client(|_| {}).await);
    let (upstream, seen) = recording_echo_upstream().await;
    // Keys of this run only.
    let prefix = format!("latchkey-test:{}:", fastrand::u64(..));
    let flags = [
        "--quota",
        "default=10/day",
        "--quota",
        &format!("{}=100/day", big.id()),
        "--quota-redis",
        redis,
        "--quota-redis-prefix",
        &prefix,
    ];
    let (_one, one, one_metrics, _) = gate(&app, &upstream, &flags);
    let (_two, two, _, _) = gate(&app, &upstream, &flags);
    assert_eq!(
        metric(&one_metrics, "latchkey_gate_quota_redis_up").await,
        1.0
    );
    let (one_small, two_small) = (format!("{one}/small"), format!("{two}/small"));

    // Quotas up to 20 are leased one request at a time: exact across gates.
    let small_token = api_token(&app, &small).await;
    assert_eq!(
        admitted(&[&one_small, &two_small], &small_token, 30).await,
        10
    );
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| *r == "GET /small")
            .count(),
        10
    );
    // Each gate got its share, and each now refuses.
    for url in [&one_small, &two_small] {
        assert_eq!(get(url, &small_token).await.status(), 429);
    }

    // Larger quotas in leases of a twentieth: never over, at most (2 - 1) twentieths under.
    let big_token = api_token(&app, &big).await;
    let through = admitted(
        &[&format!("{one}/big"), &format!("{two}/big")],
        &big_token,
        130,
    )
    .await;
    assert!((95..=100).contains(&through), "{through} of 100");
    let day = unix_now() - unix_now() % DAY;
    let count = Command::new("redis-cli")
        .args(["-u", redis, "GET"])
        .arg(format!(
            "{prefix}{}:{API}:{}:{DAY}:{day}",
            API.len(),
            big.id()
        ))
        .output();
    if let Ok(count) = count {
        let count = String::from_utf8_lossy(&count.stdout);
        assert_eq!(count.trim(), "100", "the shared count");
    }
}

/// A Redis of this test's own, on a free port, saving to `dir` when shut down.
struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    process: Option<Background>,
}

impl PrivateRedis {
    fn start() -> Option<PrivateRedis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs redis-server (apt-get install redis-server)"
            );
            eprintln!("skipped: no redis-server");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = PrivateRedis {
            port,
            dir: tempfile::tempdir().unwrap(),
            process: None,
        };
        redis.restart();
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Starts it (again, from what it saved) and waits until it answers.
    fn restart(&mut self) {
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.dir.path().to_str().unwrap(),
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let (process, _, _) = start_logged(command, "Ready to accept connections");
        self.process = Some(process);
        assert_eq!(self.cli(&["PING"]), "PONG");
    }

    /// Saves and stops.
    fn stop(&mut self) {
        self.cli(&["SHUTDOWN", "SAVE"]);
        if let Some(mut process) = self.process.take() {
            process.child().wait().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_counts_locally_while_redis_is_away_and_catches_up_when_it_returns() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    not_at_the_end_of_a_day().await;
    let app = spawn_app_at_real_time().await;
    let client = app.client(|_| {}).await;
    let (upstream, _) = recording_echo_upstream().await;
    let flags = ["--quota", "default=8/day", "--quota-redis", &redis.url()];
    let (_gate, url, metrics_url, logs) = gate(&app, &upstream, &flags);
    assert_eq!(
        metric(&metrics_url, "latchkey_gate_quota_redis_up").await,
        1.0
    );
    let token = api_token(&app, &client).await;
    let key = format!(
        "latchkey:gate:{}:{API}:{}:{DAY}:{}",
        API.len(),
        client.id(),
        unix_now() - unix_now() % DAY
    );
    assert_eq!(admitted(&[&url], &token, 2).await, 2);
    assert_eq!(redis.cli(&["GET", &key]), "2");

    // Redis stops: the gate says so and counts on alone from the 2 Redis had, to 8.
    redis.stop();
    assert_eq!(admitted(&[&url], &token, 8).await, 6);
    let warning = logged(&logs, "counting locally");
    assert!(warning.contains("WARN"), "{warning}");
    assert_eq!(
        metric(&metrics_url, "latchkey_gate_quota_redis_up").await,
        0.0
    );
    assert!(metric(&metrics_url, "latchkey_gate_quota_local_leases_total").await >= 6.0);
    assert!(metric(&metrics_url, "latchkey_gate_quota_redis_errors_total").await >= 1.0);

    // Redis is back (with what it saved): the gate notices by itself within about a second,
    // with no request needing it.
    redis.restart();
    logged(&logs, "quota counts are shared through Redis");
    assert_eq!(
        metric(&metrics_url, "latchkey_gate_quota_redis_up").await,
        1.0
    );
    // The client's next request asks Redis again, adding the 6 admitted alone: still refused,
    // and the shared count is right, so another gate refuses too.
    assert_eq!(get(&url, &token).await.status(), 429);
    assert_eq!(redis.cli(&["GET", &key]), "8");
    let (_other, other_url, _, _) = gate(&app, &upstream, &flags);
    assert_eq!(get(&other_url, &token).await.status(), 429);
}
