// The dashboard: lists the drones and the tasks once, then follows GET /events after the revision
// the lists reflect and redraws as changes come. Everything goes through the queen's public API,
// with the token of this tab (sessionStorage) when the hive has one. No framework, no build step.
"use strict";

const TOKEN_KEY = "hive.token";
// Tasks kept in the page, the newest; the table shows the newest of them that pass the filters.
const TASKS_KEPT = 1000;
const TASKS_SHOWN = 200;
// A drone's event says what the store holds of it, not its slots in use or whether it is
// available: the drones are read again after changes, at most this often.
const DRONES_REFRESH_MS = 300;
const RETRY_MS = 1000;

const page = {
  tasks: new Map(),
  drones: [],
  // The revision seen: the stream is opened again after it.
  rev: null,
  stream: null,
  open: null, // the task whose page is shown: {id, task, output: AbortController, live}
  dronesDue: null,
  drawDue: null,
};

const $ = (selector) => document.querySelector(selector);

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

// --- the API ---------------------------------------------------------------------------------

class Unauthorized extends Error {}

async function call(method, path, signal) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const answer = await fetch(path, { method, headers, signal, cache: "no-store" });
  if (answer.status === 401) {
    askForToken(token ? "the queen refused this token" : "");
    throw new Unauthorized();
  }
  return answer;
}

async function json(method, path) {
  const answer = await call(method, path);
  const body = await answer.json();
  if (!answer.ok) throw new Error(body.error || method + " " + path + ": " + answer.status);
  return { body, answer };
}

function askForToken(why) {
  $("#login").hidden = false;
  $("#login-error").textContent = why;
  $("#token").focus();
  status("a token is needed", true);
}

$("#login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  $("#token").value = "";
  $("#login").hidden = true;
  start();
});

function status(text, down) {
  const node = $("#status");
  node.textContent = text;
  node.classList.toggle("down", Boolean(down));
}

// --- lists, then the stream --------------------------------------------------------------------

async function list() {
  const tasks = await json("GET", "/tasks?limit=1000");
  const drones = await json("GET", "/drones");
  page.tasks = new Map(tasks.body.tasks.map((task) => [task.id, task]));
  page.drones = drones.body;
  const droneRev = Number(drones.answer.headers.get("X-Hive-Revision"));
  // Follow after the older of the two: a change seen twice is drawn twice, none is missed.
  page.rev = Math.min(tasks.body.revision, Number.isFinite(droneRev) ? droneRev : tasks.body.revision);
  draw();
}

async function start() {
  if (page.stream) page.stream.abort();
  try {
    await list();
  } catch (e) {
    if (!(e instanceof Unauthorized)) {
      status("cannot reach the queen: " + e.message, true);
      setTimeout(start, RETRY_MS);
    }
    return;
  }
  route();
  follow();
}

async function follow() {
  const stream = new AbortController();
  page.stream = stream;
  while (!stream.signal.aborted) {
    let answer;
    try {
      answer = await call("GET", "/events?after=" + page.rev, stream.signal);
    } catch (e) {
      if (e instanceof Unauthorized || stream.signal.aborted) return;
      status("reconnecting…", true);
      await pause(RETRY_MS);
      continue;
    }
    if (answer.status === 410) {
      // The changes after our revision are gone: list again, then follow after the new lists.
      status("listing again…");
      try { await list(); } catch (e) { await pause(RETRY_MS); }
      continue;
    }
    if (!answer.ok) {
      status("the queen answered " + answer.status + "; trying again", true);
      await pause(RETRY_MS);
      continue;
    }
    status("live · revision " + page.rev);
    try {
      await read(answer.body.getReader(), stream.signal);
    } catch (e) {
      if (stream.signal.aborted) return;
      status("reconnecting…", true);
      await pause(RETRY_MS);
    }
  }
}

// Reads the stream's lines until it ends (the queen cut it off, or the connection broke).
async function read(reader, signal) {
  const decoder = new TextDecoder();
  let rest = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done || signal.aborted) return;
    rest += decoder.decode(value, { stream: true });
    const lines = rest.split("\n");
    rest = lines.pop();
    for (const line of lines) {
      if (!line.trim()) continue;
      const event = JSON.parse(line);
      if (event.rev === undefined) {
        // A last line: resume after its revision, or list again.
        if (typeof event.after === "number") {
          page.rev = event.after;
        } else {
          await list();
        }
        return;
      }
      apply(event);
    }
    status("live · revision " + page.rev);
  }
}

function apply(event) {
  // Resumed after the revision before this one: a revision's lines come together, but a stream
  // may break between two of them, and drawing one again does no harm.
  page.rev = Math.max(page.rev, event.rev - 1);
  if (event.kind === "task") {
    if (event.type === "deleted") page.tasks.delete(event.id);
    else page.tasks.set(event.id, event.object);
    if (page.open && page.open.id === event.id && event.type !== "deleted") {
      taskChanged(event.object);
    }
  }
  refreshDrones();
  later();
}

function refreshDrones() {
  if (page.dronesDue) return;
  page.dronesDue = setTimeout(async () => {
    try {
      page.drones = (await json("GET", "/drones")).body;
      drawDrones();
    } catch (e) {
      // The stream says when the queen is back; the next change reads them again.
    }
    page.dronesDue = null;
  }, DRONES_REFRESH_MS);
}

function later() {
  if (page.drawDue) return;
  page.drawDue = setTimeout(() => {
    page.drawDue = null;
    draw();
  }, 50);
}

const pause = (ms) => new Promise((done) => setTimeout(done, ms));

// --- drawing ---------------------------------------------------------------------------------

function draw() {
  drawDrones();
  drawTasks();
}

function labels(map) {
  return Object.entries(map || {})
    .filter(([key]) => key !== "hive.name")
    .sort(([a], [b]) => (a.startsWith("hive.") - b.startsWith("hive.")) || a.localeCompare(b))
    .map(([key, value]) => el("span", { class: "label" }, key + "=" + value));
}

function drawDrones() {
  const rows = page.drones.map((drone) => {
    const state = drone.draining ? "draining" : drone.available ? "ready" : "unavailable";
    const button = el("button", {
      type: "button",
      class: "drain",
      onclick: () => drain(drone),
    }, drone.draining ? "Undrain" : "Drain");
    return el("tr", { "data-name": drone.name },
      el("td", { class: "name" }, drone.name),
      el("td", { class: "id" }, drone.address),
      el("td", { class: "labels" }, ...labels(drone.labels)),
      el("td", { class: "slots" }, drone.used + "/" + drone.slots),
      el("td", { class: "state " + state }, state),
      el("td", null, drone.containment || "none"),
      el("td", null, button));
  });
  $("#drones tbody").replaceChildren(...rows);
  $("#drone-count").textContent = "(" + page.drones.length + ")";
}

async function drain(drone) {
  try {
    await json(drone.draining ? "DELETE" : "POST", "/drones/" + encodeURIComponent(drone.name) + "/drain");
    refreshDrones();
  } catch (e) {
    if (!(e instanceof Unauthorized)) alert(e.message);
  }
}

function lastAttempt(task) {
  return task.attempts && task.attempts.length ? task.attempts[task.attempts.length - 1] : null;
}

// Whether `task` passes the label filter: one of its constraints is the text, or it ran on a
// drone with that label (KEY=VALUE, or KEY alone).
function hasLabel(task, wanted) {
  if (!wanted) return true;
  if ((task.constraints || []).includes(wanted)) return true;
  const attempt = lastAttempt(task);
  const drone = attempt && page.drones.find((d) => d.name === attempt.drone);
  if (!drone) return false;
  const [key, value] = wanted.split("=", 2);
  return key in drone.labels && (value === undefined || drone.labels[key] === value);
}

function drawTasks() {
  const state = $("#filter-state").value;
  const label = $("#filter-label").value.trim();
  const group = $("#filter-group").value.trim();
  const all = [...page.tasks.values()].sort(
    (a, b) => b.created_at - a.created_at || (a.id < b.id ? 1 : -1));
  if (all.length > TASKS_KEPT) {
    for (const task of all.slice(TASKS_KEPT)) page.tasks.delete(task.id);
  }
  const shown = all
    .filter((t) => (!state || t.state === state) && (!group || t.group === group) && hasLabel(t, label))
    .slice(0, TASKS_SHOWN);
  const rows = shown.map((task) => {
    const attempt = lastAttempt(task);
    return el("tr", { "data-id": task.id },
      el("td", { class: "id" }, el("a", { href: "#/task/" + encodeURIComponent(task.id) }, task.id)),
      el("td", { class: "state " + task.state },
        task.state, task.reason ? el("div", { class: "reason" }, task.reason) : null),
      el("td", { class: "command", title: task.command.join(" ") }, task.command.join(" ")),
      el("td", null, attempt ? attempt.drone : ""),
      el("td", null, when(task.created_at)),
      el("td", null, task.exit_code === null ? "" : task.exit_code));
  });
  $("#tasks tbody").replaceChildren(...rows);
  $("#task-count").textContent = "(" + shown.length + " of " + page.tasks.size + ")";
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

for (const id of ["#filter-state", "#filter-label", "#filter-group"]) {
  $(id).addEventListener("input", drawTasks);
}

// --- one task's page -------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/task\/(.+)$/);
  $("#fleet").hidden = Boolean(match);
  $("#task").hidden = !match;
  if (page.open && page.open.output) page.open.output.abort();
  page.open = null;
  if (match) openTask(decodeURIComponent(match[1]));
}

window.addEventListener("hashchange", route);

async function openTask(id) {
  const open = { id, task: null, output: new AbortController(), live: false };
  page.open = open;
  $("#task-id").textContent = id;
  $("#output").textContent = "";
  let task;
  try {
    task = (await json("GET", "/tasks/" + encodeURIComponent(id))).body;
  } catch (e) {
    $("#task-state").textContent = e instanceof Unauthorized ? "" : e.message;
    return;
  }
  if (page.open !== open) return;
  drawTask(task);
  followOutput(open, task);
}

// Follows the task's output as it is written (GET /tasks/ID/logs?follow=1, plain text); a queen
// without it shows what the task captured (its stdout), read again as the task changes.
async function followOutput(open, task) {
  const output = $("#output");
  let answer;
  try {
    answer = await call("GET", "/tasks/" + encodeURIComponent(open.id) + "/logs?follow=1", open.output.signal);
  } catch (e) {
    return;
  }
  if (!answer.ok) {
    $("#output-mode").textContent = "(as captured)";
    output.textContent = task.stdout || "";
    return;
  }
  open.live = true;
  $("#output-mode").textContent = "(followed live)";
  const reader = answer.body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      output.append(decoder.decode(value, { stream: true }));
      output.scrollTop = output.scrollHeight;
    }
  } catch (e) {
    // Navigated away (aborted), or the queen went: what was read stays.
  }
}

// The open task changed (an event): draw it; without a live output, read what it captured.
async function taskChanged(summary) {
  const open = page.open;
  drawTask(summary);
  if (open.live) return;
  try {
    const task = (await json("GET", "/tasks/" + encodeURIComponent(open.id))).body;
    if (page.open === open && !open.live) $("#output").textContent = task.stdout || "";
  } catch (e) {
    // Read again at the next change.
  }
}

function drawTask(task) {
  page.open.task = task;
  const ended = ["succeeded", "failed", "cancelled"].includes(task.state);
  const state = $("#task-state");
  state.textContent = task.state;
  state.className = "state " + task.state;
  $("#cancel").disabled = ended || task.cancel_requested;
  const facts = [
    ["command", task.command.join(" ")],
    ["reason", task.reason],
    ["group", task.group],
    ["constraints", (task.constraints || []).join(", ")],
    ["slots", task.slots],
    ["created", when(task.created_at)],
    ["exit code", task.exit_code],
  ].filter(([, value]) => value !== null && value !== undefined && value !== "");
  $("#task-facts").replaceChildren(
    ...facts.flatMap(([name, value]) => [el("dt", null, name), el("dd", null, value)]));
  $("#attempts tbody").replaceChildren(...task.attempts.map((a) => el("tr", null,
    el("td", null, a.n),
    el("td", null, a.drone),
    el("td", { class: "state " + a.state }, a.state),
    el("td", null, when(a.started_at)),
    el("td", null, when(a.ended_at)),
    el("td", null, a.exit_code === null || a.exit_code === undefined ? "" : a.exit_code),
    el("td", null, a.reason || ""))));
}

$("#cancel").addEventListener("click", async () => {
  const open = page.open;
  if (!open) return;
  $("#cancel").disabled = true;
  try {
    const task = (await json("DELETE", "/tasks/" + encodeURIComponent(open.id))).body;
    if (page.open === open) drawTask(task);
  } catch (e) {
    if (!(e instanceof Unauthorized)) alert(e.message);
    $("#cancel").disabled = false;
  }
});

start();
