//! The status page in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `.ci/setup`) loads a follower's page of a three-replica cluster with a pending request;
//! the DOM it rendered lists the members, the computer and the request with its reason, and
//! its screenshot shows the role badges in their colours and the partition-use bar.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use master_cluster::daemon::dev::{self, DEMO_SOFTWARE, DEMO_USER};
use slapcluster_api::client::{self, as_actor};
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::user_client::UserClient;

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 800;

/// Runs headless Chromium on `url` with `args`, at most a minute; returns its stdout.
fn browse(browser: &str, profile: &Path, url: &str, args: &[&str]) -> String {
    let mut child = Command::new(browser)
        .args(test_kit::browser::HEADLESS)
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("waits").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    assert!(
        output.status.success(),
        "chromium failed: {:?}",
        output.status
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Pixels within a few units of `rgb` on every channel.
fn count_colour(image: &[u8], channels: usize, rgb: [u8; 3]) -> usize {
    image
        .chunks_exact(channels)
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= 6))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_a_browser() {
    let Some(browser) = test_kit::browser::chromium() else {
        test_kit::skip!("chromium is not installed (./.ci/setup installs it, as root)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let options = dev::DevOptions::plaintext_for_tests(&dir.path().join("data"));
    let cluster = dev::start(&options, &mut Vec::new())
        .await
        .expect("dev cluster starts");
    let leader = cluster.leader().expect("a leader");
    let follower = cluster.follower().expect("a follower");
    let mut user = UserClient::new(client::connect(follower.url()).await.expect("connects"));
    let waiting = pb::RequestInstanceRequest {
        title: "needs-a-gpu".into(),
        software_release: DEMO_SOFTWARE.into(),
        sla: [("cpu_type".to_string(), "gpu".to_string())].into(),
        ..Default::default()
    };
    user.request_instance(as_actor(waiting, DEMO_USER).expect("actor"))
        .await
        .expect("requested");
    let url = format!(
        "http://{}/",
        follower.http_addr().expect("the dev replicas serve HTTP")
    );
    // Every member has answered a status once the page shows their applied index.
    let ready = Instant::now() + Duration::from_secs(20);
    while test_kit::http::get(follower.http_addr().expect("addr"), "/")
        .await
        .expect("the page")
        .body
        .contains("did not answer")
    {
        assert!(Instant::now() < ready, "members never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let profile = dir.path().join("chromium");
    let dom = tokio::task::block_in_place(|| browse(browser, &profile, &url, &["--dump-dom"]));
    let member_rows = dom.matches("<span class=\"role ").count();
    assert_eq!(member_rows, 3, "three members:\n{dom}");
    assert!(
        dom.contains("<span class=\"role leader\">leader</span>"),
        "{dom}"
    );
    assert!(dom.contains(&format!("leader: replica {leader}")), "{dom}");
    assert!(dom.contains("COMP-DEMO") && dom.contains("3 / 8"), "{dom}");
    assert!(dom.contains("needs-a-gpu"), "the pending request:\n{dom}");
    assert!(dom.contains("Pending requests (1)"), "{dom}");

    let shot = dir.path().join("status.png");
    let arg = format!("--screenshot={}", shot.display());
    tokio::task::block_in_place(|| browse(browser, &profile, &url, &[&arg]));
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).expect("a screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut pixels).expect("a frame");
    assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
    let channels = info.color_type.samples();
    let pixels = &pixels[..info.buffer_size()];
    // The badges: one green leader, two blue followers (each badge is ~60x20 px of fill).
    let green = count_colour(pixels, channels, [0x1a, 0x7f, 0x37]);
    let blue = count_colour(pixels, channels, [0x09, 0x69, 0xda]);
    assert!(
        green > 400,
        "the leader's badge is drawn green ({green} px)"
    );
    assert!(
        blue > green + 400,
        "two follower badges and the use bar are blue ({blue} px)"
    );
    // Not a blank page: the background covers most, but far from all, of it.
    let background = count_colour(pixels, channels, [0xf6, 0xf8, 0xfa]);
    let all = (WIDTH * HEIGHT) as usize;
    assert!(
        background < all * 95 / 100,
        "mostly blank: {background} of {all}"
    );
    cluster.shutdown().await.expect("stops");
}
