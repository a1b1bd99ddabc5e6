//! The web panel in a real browser: headless Chromium (`.ci/setup` installs it, with the NSS
//! tools and the policy that picks a client certificate without a prompt) logs in with a
//! person's certificate, as SlapOS users do, against a three-replica cluster of real
//! `slapmaster` processes. Once through a follower's panel and once through the leader's:
//! a user requests an instance (a wrong field first), sees it placed and its connection
//! parameters once the node publishes them, stops it and destroys it; another user neither
//! sees it nor may destroy it, and a form from another site is refused; an operator sees the
//! failing promise of a bad instance as an alert, which closes once it is fixed. Pages fit a
//! phone's width. Every page is screenshot into `target/tmp/panel-screenshots/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use slapcluster_api::client;
use slapcluster_api::v1 as pb;
use slapcluster_api::v1::node_client::NodeClient;
use slapcluster_api::v1::user_client::UserClient;
use test_kit::browser::{self, Browser, NssHome};
use test_kit::cluster::Cluster;
use tonic::transport::Channel;

const SOFTWARE: &str = "https://lab.example/software/web/software.cfg";
const COMPUTER: &str = "COMP-PANEL";
const SIZE: (u32, u32) = (1000, 800);

/// What this machine lacks to run the test, if anything.
fn missing() -> Option<String> {
    if browser::chromium().is_none() {
        return Some("chromium is not installed".into());
    }
    if !Path::new(browser::POLICY).exists() {
        return Some(format!(
            "the Chromium policy {} is not installed",
            browser::POLICY
        ));
    }
    for tool in ["certutil", "pk12util", "openssl"] {
        let found = std::process::Command::new(tool)
            .arg("--help")
            .output()
            .is_ok();
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Retries `check` until it holds, for at most 30 s (a follower applies a moment after the
/// leader commits; a page shows what its replica applied).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A person's browser: their certificate in its NSS database.
fn browser_of(cluster: &Cluster, dir: &Path, identity: &str) -> Browser {
    let credentials = cluster.credentials_dir(identity).expect("credentials");
    let home = dir.join(identity.replace(':', "-"));
    let nss = NssHome::create(
        &home,
        &credentials.join("roots.pem"),
        &credentials.join("chain.pem"),
        &credentials.join("key.pem"),
    )
    .expect("an NSS database");
    Browser::launch(
        browser::chromium().expect("chromium"),
        &home.join("profile"),
        &nss.home,
        SIZE,
    )
    .expect("chromium starts")
}

struct People {
    alice: Browser,
    bob: Browser,
    operator: Browser,
    shots: PathBuf,
}

impl People {
    fn shot(&mut self, who: &str, name: &str) {
        let path = self.shots.join(format!("{name}.png"));
        let browser = match who {
            "alice" => &mut self.alice,
            "bob" => &mut self.bob,
            _ => &mut self.operator,
        };
        browser.screenshot(&path).expect("a screenshot");
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 5_000, "{} is {size} bytes", path.display());
        println!("screenshot: {}", path.display());
    }
}

fn text(browser: &mut Browser, selector: &str) -> String {
    browser
        .text(selector)
        .expect("the page answers")
        .unwrap_or_default()
}

/// The node's side: reports and connection parameters over gRPC, with its computer's
/// certificate.
struct Node {
    client: NodeClient<Channel>,
}

impl Node {
    fn partition(partition: &str) -> Option<pb::PartitionId> {
        Some(pb::PartitionId {
            computer: COMPUTER.into(),
            partition: partition.into(),
        })
    }

    async fn report(&mut self, partition: &str, state: pb::ReportedState, error: &str) {
        self.client
            .report_instance(pb::ReportInstanceRequest {
                partition: Self::partition(partition),
                state: state.into(),
                error_log: error.into(),
                ..Default::default()
            })
            .await
            .expect("a report");
    }

    async fn publish(&mut self, partition: &str, url: &str) {
        self.client
            .publish_connection(pb::PublishConnectionRequest {
                partition: Self::partition(partition),
                parameters: [("url".to_string(), url.to_string())].into(),
                ..Default::default()
            })
            .await
            .expect("published");
    }
}

/// Alice requests `title` through the form, and lands on its page: answers its guid and
/// partition.
fn request(people: &mut People, panel: &str, title: &str) -> (String, String) {
    let alice = &mut people.alice;
    alice.open(&format!("{panel}request")).expect("the form");
    alice.fill("#title", title).expect("title");
    alice.fill("#software_release", SOFTWARE).expect("release");
    alice
        .fill("#parameters", "port = 8080")
        .expect("parameters");
    alice.fill("#sla", "region = eu").expect("sla");
    alice.click("#submit", true).expect("submitted");
    let location = alice.location().expect("location");
    assert!(location.contains("done=requested"), "{location}");
    let guid = location
        .split("/instances/")
        .nth(1)
        .and_then(|rest| rest.split('?').next())
        .expect("a guid")
        .to_string();
    let placement = text(alice, "#placement");
    let partition = placement
        .strip_prefix(&format!("{COMPUTER}/"))
        .unwrap_or_else(|| panic!("placed on {COMPUTER}: {placement}"))
        .to_string();
    (guid, partition)
}

/// The flows of the issue, through the panel at `panel`; `tag` names the pass.
async fn flows(people: &mut People, node: &mut Node, panel: &str, tag: &str) {
    let web = format!("web-{tag}");

    // Home, then a form error that names its field.
    people.alice.open(panel).expect("home");
    assert!(text(&mut people.alice, "#who").contains("user alice"));
    people.shot("alice", &format!("{tag}-1-home"));
    people
        .alice
        .open(&format!("{panel}request"))
        .expect("the form");
    people.alice.fill("#title", &web).expect("title");
    people
        .alice
        .fill("#software_release", SOFTWARE)
        .expect("release");
    people
        .alice
        .fill("#parameters", "port 8080")
        .expect("parameters");
    people.alice.click("#submit", true).expect("submitted");
    assert_eq!(
        text(&mut people.alice, "#error-parameters"),
        "line 1: write key = value, not \"port 8080\""
    );
    people.shot("alice", &format!("{tag}-2-request-form-error"));

    // Requested: placed, and its connection parameters once the node publishes them.
    let (guid, partition) = request(people, panel, &web);
    assert!(text(&mut people.alice, "#notice").contains("Requested"));
    assert_eq!(text(&mut people.alice, "#connection"), "none published yet");
    node.publish(&partition, &format!("https://{web}.example:8080"))
        .await;
    node.report(&partition, pb::ReportedState::Started, "")
        .await;
    let page = format!("{panel}instances/{guid}");
    // The page shows what its replica applied: the report lands after the parameters.
    eventually("the connection parameters and the report", || {
        people.alice.open(&page).expect("the page");
        text(&mut people.alice, "#connection").contains(&format!("https://{web}.example:8080"))
            && text(&mut people.alice, "#status").starts_with("ok")
    });
    people.shot("alice", &format!("{tag}-3-instance"));

    // Stopped.
    people.alice.click("#change-state", true).expect("stop");
    assert_eq!(text(&mut people.alice, "#requested"), "stopped");
    assert!(text(&mut people.alice, "#notice").contains("stop"));
    people.shot("alice", &format!("{tag}-4-stopped"));

    // Bob neither sees it nor may destroy it; a form from another site is refused.
    people.bob.open(&page).expect("the page");
    let refused = text(&mut people.bob, "#problem");
    assert!(
        refused.contains("user bob may not read instance"),
        "{refused}"
    );
    people.shot("bob", &format!("{tag}-5-other-user"));
    people.bob.open(panel).expect("home");
    assert!(!text(&mut people.bob, "#instances").contains(&web));
    let forged = format!(
        "(() => {{ const f = document.createElement('form'); f.method = 'post'; \
         f.action = '{page}/destroy'; const c = document.createElement('input'); \
         c.name = 'confirm'; c.value = 'yes'; f.appendChild(c); document.body.appendChild(f); \
         f.submit(); return true; }})()"
    );
    people.bob.eval(&forged).expect("a form");
    eventually("bob's refusal", || {
        text(&mut people.bob, "#problem").contains("may not destroy")
    });
    people
        .bob
        .open("data:text/html,<p>another site</p>")
        .expect("another site");
    people.bob.eval(&forged).expect("a form");
    eventually("the cross-site refusal", || {
        text(&mut people.bob, "#problem").contains("did not come from the panel")
    });

    // A bad instance: its failing promise is an alert for the operator, closed once fixed.
    let bad = format!("bad-{tag}");
    let (_, bad_partition) = request(people, panel, &bad);
    node.report(
        &bad_partition,
        pb::ReportedState::Unspecified,
        "promise check-port failed: connection refused",
    )
    .await;
    let alerts = format!("{panel}alerts");
    eventually("the alert", || {
        people.operator.open(&alerts).expect("alerts");
        text(&mut people.operator, "#open").contains(&bad)
    });
    assert!(
        text(&mut people.operator, "#open")
            .contains("its node reported an error: promise check-port failed")
    );
    people.shot("operator", &format!("{tag}-6-alert-open"));
    node.report(&bad_partition, pb::ReportedState::Started, "")
        .await;
    eventually("the alert to close", || {
        people.operator.open(&alerts).expect("alerts");
        !text(&mut people.operator, "#open").contains(&bad)
            && text(&mut people.operator, "#closed").contains(&bad)
    });
    people.shot("operator", &format!("{tag}-7-alert-closed"));

    // Destroyed: gone from the list once the node has removed it.
    people.alice.open(&page).expect("the page");
    people
        .alice
        .click("#confirm-destroy", false)
        .expect("confirmed");
    people.alice.click("#destroy", true).expect("destroy");
    assert!(text(&mut people.alice, "#notice").contains("destroy"));
    node.report(&partition, pb::ReportedState::Destroyed, "")
        .await;
    eventually("the instance to go", || {
        people.alice.open(panel).expect("home");
        !text(&mut people.alice, "#instances").contains(&web)
    });
    people.shot("alice", &format!("{tag}-8-destroyed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_operators_work_through_the_panel_in_a_browser() {
    if let Some(missing) = missing() {
        test_kit::skip!("{missing} (./.ci/setup installs it, as root)");
        return;
    }
    let dir = tempfile::tempdir().expect("a directory");
    let cluster = Cluster::start(env!("CARGO_BIN_EXE_slapmaster").as_ref(), dir.path(), 3)
        .await
        .expect("a cluster");
    let urls = cluster.urls();

    // The catalog and a computer of eight partitions in region eu, supplying the release.
    let operator = client::connect_with(&urls[0], Some(cluster.operator()))
        .await
        .expect("connect");
    let mut user = UserClient::new(operator);
    user.publish_software_release(pb::PublishSoftwareReleaseRequest {
        url: SOFTWARE.into(),
        title: "Web server".into(),
        software_types: vec!["default".into()],
    })
    .await
    .expect("published");
    let computer = cluster
        .credentials(&format!("computer:{COMPUTER}"))
        .expect("credentials");
    let mut node = Node {
        client: NodeClient::new(
            client::connect_with(&urls[0], Some(computer.tls_config()))
                .await
                .expect("connect"),
        ),
    };
    node.client
        .register_computer(pb::RegisterComputerRequest {
            computer: COMPUTER.into(),
            attributes: [("region".to_string(), "eu".to_string())].into(),
            set_attributes: true,
            partitions: (0..8)
                .map(|i| pb::PartitionDefinition {
                    reference: format!("slappart{i}"),
                    addresses: vec![pb::NetworkAddress {
                        addr: format!("fd00:c72::{i}"),
                        netmask: "64".into(),
                    }],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await
        .expect("registered");
    user.supply(pb::SupplyRequest {
        computer: COMPUTER.into(),
        url: SOFTWARE.into(),
        state: pb::SupplyState::Available.into(),
    })
    .await
    .expect("supplied");

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("panel-screenshots");
    std::fs::create_dir_all(&shots).expect("a directory");
    let mut people = People {
        alice: browser_of(&cluster, dir.path(), "user:alice"),
        bob: browser_of(&cluster, dir.path(), "user:bob"),
        operator: browser_of(&cluster, dir.path(), test_kit::cluster::OPERATOR),
        shots,
    };

    let leader = cluster.leader().await.expect("a leader");
    let index_of = |id: u64| usize::try_from(id - 1).expect("an index");
    let follower = cluster
        .replicas
        .iter()
        .find(|r| r.id != leader)
        .expect("a follower")
        .id;
    for (tag, id) in [("follower", follower), ("leader", leader)] {
        println!("--- through the {tag}'s panel (replica {id})");
        let panel = cluster.replicas[index_of(id)].panel_url();
        flows(&mut people, &mut node, &panel, tag).await;
    }

    // The operator's own pages.
    let panel = cluster.replicas[index_of(leader)].panel_url();
    for (page, selector, expected) in [
        ("computers", "#computers", COMPUTER),
        ("cluster", "#members", "leader"),
        ("pending", "#pending", "none"),
        ("members", "h1", "Projects"),
    ] {
        people
            .operator
            .open(&format!("{panel}{page}"))
            .expect("a page");
        let shown = text(&mut people.operator, selector);
        assert!(shown.contains(expected), "{page}: {shown}");
        people.shot("operator", &format!("operator-{page}"));
    }
    // On a phone: one column, nothing wider than the screen (tables scroll in their box).
    people.alice.phone(Some((390, 844))).expect("a phone");
    for page in ["", "request", "alerts"] {
        people
            .alice
            .open(&format!("{panel}{page}"))
            .expect("a page");
        let fits = people
            .alice
            .eval("document.documentElement.scrollWidth <= window.innerWidth")
            .expect("a width");
        assert_eq!(
            fits,
            serde_json::Value::Bool(true),
            "{page} is wider than a phone"
        );
        let name = if page.is_empty() { "home" } else { page };
        people.shot("alice", &format!("phone-{name}"));
    }
    people.alice.phone(None).expect("a window");

    // A user is not shown the operators' pages.
    people.bob.open(&format!("{panel}cluster")).expect("a page");
    assert!(text(&mut people.bob, "#problem").contains("may not read the status of"));
}
