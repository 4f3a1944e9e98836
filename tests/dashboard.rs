//! The dashboard (`GET /ui`) in a real browser: Debian's headless Chromium, driven over the
//! DevTools protocol. Each test asserts what a person looking at the page would see, as the hive
//! changes under it, without reloading: a drone appears, a task goes from pending to succeeded,
//! its output shows, cancel and drain work, and a hive with a token asks for it once.

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::{Value, json};

/// Debian's chromium (`scripts/test.sh` installs it).
const CHROMIUM: &str = "/usr/bin/chromium";

/// The window: what the screenshot shows.
const WINDOW: (u32, u32) = (1280, 800);

/// A token a queen takes (long and varied enough).
const TOKEN: &str = "dashboard-test-token-7fK2pQ9xLm4vR8sT";

fn browser() -> Browser {
    // Root in a container has no user namespaces for Chromium's sandbox; the page is our own.
    let options = LaunchOptions::default_builder()
        .path(Some(PathBuf::from(CHROMIUM)))
        .sandbox(false)
        .window_size(Some(WINDOW))
        .idle_browser_timeout(Duration::from_secs(120))
        .args(vec![OsStr::new("--disable-dev-shm-usage")])
        .build()
        .expect("launch options");
    Browser::new(options).expect("Chromium to start (is the chromium package installed?)")
}

/// `expression`'s value in the page (`null` when it throws).
fn eval(tab: &Tab, expression: &str) -> Value {
    let wrapped =
        format!("(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()");
    tab.evaluate(&wrapped, false)
        .expect("the page to answer")
        .value
        .unwrap_or(Value::Null)
}

/// The text a person sees in the first element `selector` matches, if there is one.
fn text(tab: &Tab, selector: &str) -> Option<String> {
    let selector = serde_json::to_string(selector).unwrap();
    eval(
        tab,
        &format!("document.querySelector({selector}).innerText"),
    )
    .as_str()
    .map(str::to_string)
}

/// Waits until the element `selector` shows text containing `needle`; the text.
fn shows(tab: &Tab, selector: &str, needle: &str) -> String {
    eventually(SOON, &format!("{selector} to show {needle:?}"), || {
        text(tab, selector).filter(|t| t.contains(needle))
    })
}

fn click(tab: &Tab, selector: &str) {
    tab.wait_for_element(selector)
        .and_then(|element| element.click().map(|_| ()))
        .unwrap_or_else(|e| panic!("click {selector}: {e}"));
}

fn exec_drone(queen: &Larve, label: &str) -> Larve {
    Larve::start(&[
        "--queen-host",
        &queen.addr,
        "--port",
        "0",
        "--allow-exec",
        "--label",
        label,
    ])
}

/// Creates a task; its id.
fn create(queen: &Larve, token: Option<&str>, task: Value) -> String {
    let (status, task) = post_as(&queen.url("/tasks"), &task.to_string(), token);
    assert_eq!(status, 202, "{task}");
    task["id"].as_str().unwrap().to_string()
}

fn open(browser: &Browser, url: &str) -> std::sync::Arc<Tab> {
    let tab = browser.new_tab().expect("a tab");
    tab.navigate_to(url)
        .and_then(|tab| tab.wait_until_navigated())
        .expect("the page to load");
    tab
}

#[test]
fn a_person_sees_drones_arrive_tasks_run_their_output_and_can_cancel_and_drain() {
    let queen = Larve::fast_queen();
    let first = exec_drone(&queen, "zone=eu");
    let browser = browser();
    let tab = open(&browser, &queen.url("/ui"));
    // Set once: still there at the end, so nothing reloaded the page.
    eval(&tab, "window.untouched = true");

    let row = shows(&tab, "#drones tbody", &first.addr);
    assert!(row.contains("drone-0") && row.contains("zone=eu"), "{row}");
    shows(&tab, "tr[data-name=drone-0] .state", "ready");

    // A task no drone can take yet: pending, until one arrives that can.
    let id = create(
        &queen,
        None,
        json!({"command": ["sh", "-c", "echo hello from the hive"], "constraints": ["zone=us"]}),
    );
    let row = format!("tr[data-id='{id}']");
    shows(&tab, &format!("{row} .state"), "pending");
    let second = exec_drone(&queen, "zone=us");
    shows(&tab, "#drones tbody", &second.addr);
    shows(&tab, &format!("{row} .state"), "succeeded");
    assert!(text(&tab, &row).unwrap().contains("drone-1"));

    // Its page: the attempt, and the output.
    click(&tab, &format!("{row} a"));
    shows(&tab, "#task-state", "succeeded");
    shows(&tab, "#output", "hello from the hive");
    let attempts = shows(&tab, "#attempts tbody", "drone-1");
    assert_eq!(attempts.lines().count(), 1, "{attempts}");

    // Cancel a running task from its page.
    let sleeper = create(&queen, None, json!({"command": ["sleep", "60"]}));
    click(&tab, "#task a[href='#']");
    let row = format!("tr[data-id='{sleeper}']");
    shows(&tab, &format!("{row} .state"), "running");
    click(&tab, &format!("{row} a"));
    shows(&tab, "#task-state", "running");
    click(&tab, "#cancel");
    shows(&tab, "#task-state", "cancelled");
    let (_, task) = get(&queen.url(&format!("/tasks/{sleeper}")));
    assert_eq!(task["state"], "cancelled");

    // Drain a drone from the list.
    click(&tab, "#task a[href='#']");
    click(&tab, "tr[data-name=drone-0] button.drain");
    shows(&tab, "tr[data-name=drone-0] .state", "draining");
    let (_, drones) = get(&queen.url("/drones"));
    let drained = drones
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "drone-0");
    assert_eq!(drained.unwrap()["draining"], true);

    assert_eq!(
        eval(&tab, "window.untouched"),
        true,
        "the page was never reloaded"
    );
}

#[test]
fn on_a_hive_with_a_token_the_page_asks_once_and_keeps_it_for_the_tab() {
    let queen = Larve::start_with(&["--queen", "--port", "0"], &Launch::token(TOKEN));
    let drone = Larve::start_with(
        &["--queen-host", &queen.addr, "--port", "0"],
        &Launch::token(TOKEN),
    );
    let browser = browser();
    let tab = open(&browser, &queen.url("/ui"));
    eventually(SOON, "the page to ask for a token", || {
        (eval(&tab, "document.querySelector('#login').hidden") == false).then_some(())
    });
    assert!(text(&tab, "#drones tbody").unwrap_or_default().is_empty());

    click(&tab, "#token");
    tab.type_str(TOKEN)
        .and_then(|t| t.press_key("Enter"))
        .expect("typing");
    shows(&tab, "#drones tbody", &drone.addr);
    assert_eq!(eval(&tab, "sessionStorage.getItem('hive.token')"), TOKEN);
    assert_eq!(
        eval(&tab, "localStorage.length"),
        0,
        "nothing kept beyond the tab"
    );

    // Live under the token: a task shows up without being asked again.
    let id = create(&queen, Some(TOKEN), json!({"command": ["true"]}));
    shows(&tab, "#tasks tbody", &id);
    // The same tab opened again does not ask.
    tab.reload(false, None).expect("a reload");
    shows(&tab, "#drones tbody", &drone.addr);
    assert_eq!(eval(&tab, "document.querySelector('#login').hidden"), true);
}

/// Writes docs/dashboard.png: `cargo test --test dashboard -- --ignored screenshot`.
#[test]
#[ignore = "writes docs/dashboard.png"]
fn screenshot() {
    let queen = Larve::fast_queen();
    let drones = [
        exec_drone(&queen, "zone=eu"),
        exec_drone(&queen, "zone=eu"),
        exec_drone(&queen, "zone=us"),
    ];
    let mut ids = Vec::new();
    for (command, constraints) in [
        (json!(["sh", "-c", "echo building; sleep 0.2"]), json!([])),
        (json!(["make", "-C", "/nonexistent"]), json!([])),
        (json!(["sh", "-c", "echo indexing"]), json!(["zone=us"])),
        (json!(["sleep", "600"]), json!(["zone=eu"])),
        (json!(["nvidia-smi"]), json!(["gpu"])),
        (json!(["sh", "-c", "echo backup done"]), json!(["zone=eu"])),
    ] {
        let task = json!({"command": command, "constraints": constraints});
        ids.push(create(&queen, None, task));
    }
    let browser = browser();
    let tab = open(&browser, &queen.url("/ui"));
    shows(&tab, "#drones tbody", &drones[2].addr);
    shows(
        &tab,
        &format!("tr[data-id='{}'] .state", ids[5]),
        "succeeded",
    );
    shows(&tab, &format!("tr[data-id='{}'] .state", ids[3]), "running");
    click(&tab, "tr[data-name=drone-1] button.drain");
    shows(&tab, "tr[data-name=drone-1] .state", "draining");
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("a screenshot");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    std::fs::write(&path, png).expect("docs/dashboard.png written");
}
