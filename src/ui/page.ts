/** The operator's page: static HTML and a little script that loads /api/state and follows /events. */
export const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>clawmesh</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 16px; color: #1b1f24; background: #f6f8fa; }
  h1 { font-size: 20px; margin: 0 0 8px; }
  h2 { font-size: 16px; margin: 20px 0 6px; }
  table { border-collapse: collapse; background: #fff; min-width: 40%; }
  th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; }
  th { background: #eaeef2; }
  #access { padding: 6px 10px; border-radius: 4px; display: inline-block; }
  #access.operator { background: #dafbe1; }
  #access.read-only { background: #fff8c5; }
  .online { color: #1a7f37; font-weight: 600; }
  .offline { color: #6e7781; }
  .empty { color: #6e7781; font-style: italic; }
  #feed { font: 12px ui-monospace, monospace; background: #fff; border: 1px solid #d0d7de; height: 200px; overflow: auto; padding: 4px; margin: 0; }
  #errors { color: #cf222e; }
  progress { width: 120px; }
</style>
</head>
<body>
<h1>clawmesh</h1>
<div id="access">loading…</div>
<div id="errors"></div>
<h2>Gateways</h2>
<p class="empty" id="online-means"></p>
<table id="instances"><thead><tr><th>Instance</th><th>Status</th><th>Sessions</th><th>Pending</th><th>Oldest pending</th><th>Parked</th></tr></thead><tbody></tbody></table>
<h2>Sessions</h2>
<table id="sessions"><thead><tr><th>Session</th><th>Lifecycle</th><th>Pending</th><th>Oldest pending</th><th>Last activity</th></tr></thead><tbody></tbody></table>
<h2>Tasks in flight</h2>
<table id="fanin"><thead><tr><th>Requester</th><th>Finished / total</th><th></th></tr></thead><tbody></tbody></table>
<table id="tasks" style="margin-top:8px"><thead><tr><th>Task</th><th>State</th><th>Requester</th><th>Assignee</th><th>Age</th><th>Title</th></tr></thead><tbody></tbody></table>
<h2>Parked messages</h2>
<table id="parked"><thead><tr><th>Instance</th><th>Seq</th><th>Session</th><th>Reason</th><th>Deliveries</th><th>Parked</th><th>Bytes</th><th></th></tr></thead><tbody></tbody></table>
<h2>Live envelopes</h2>
<pre id="feed"></pre>
<script>
"use strict";
let access = "read-only";
function age(iso) {
  if (!iso) return "-";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 120) return s + "s";
  if (s < 7200) return Math.round(s / 60) + "m";
  if (s < 172800) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
function fill(id, rows, columns, empty) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = cell(tr, empty, "empty");
    td.colSpan = document.querySelectorAll("#" + id + " th").length;
    body.appendChild(tr);
    return;
  }
  for (const r of rows) {
    const tr = document.createElement("tr");
    columns(tr, r);
    body.appendChild(tr);
  }
}
async function redrive(button, p) {
  button.disabled = true;
  button.textContent = "redriving…";
  const res = await fetch("/api/parked/" + encodeURIComponent(p.instance) + "/" + p.parkedSeq + "/redrive", { method: "POST", headers: { "X-Clawmesh-Action": "1" } });
  const body = await res.json();
  if (!res.ok) {
    button.textContent = "refused";
    document.getElementById("errors").textContent = body.message;
  } else {
    button.textContent = "redriven";
  }
  await load();
}
async function load() {
  const res = await fetch("/api/state");
  const s = await res.json();
  access = s.access;
  const a = document.getElementById("access");
  a.className = s.access;
  a.textContent = (s.access === "operator" ? "Operator view: " : "Read-only view: ") + s.accessReason + " (instance " + s.self + ")";
  document.getElementById("errors").textContent = s.errors.join("; ");
  document.getElementById("online-means").textContent = "online: " + s.onlineMeans;
  fill("instances", s.instances, (tr, i) => {
    cell(tr, i.instance);
    cell(tr, i.error ? "error: " + i.error : i.online ? "online" : "no recent activity", i.online ? "online" : "offline");
    cell(tr, i.sessions); cell(tr, i.pending); cell(tr, age(i.oldestPending)); cell(tr, i.parked);
  }, "no gateways");
  fill("sessions", s.sessions, (tr, x) => {
    tr.dataset.session = x.session;
    cell(tr, x.session); cell(tr, x.lifecycle); cell(tr, x.pending); cell(tr, age(x.oldestPending)); cell(tr, age(x.lastActivity));
  }, "no sessions");
  fill("fanin", s.fanIn, (tr, f) => {
    cell(tr, f.requester); cell(tr, f.finished + " / " + f.total);
    const td = document.createElement("td");
    const bar = document.createElement("progress");
    bar.max = f.total; bar.value = f.finished;
    td.appendChild(bar); tr.appendChild(td);
  }, "no open tasks");
  fill("tasks", s.tasks, (tr, t) => {
    tr.dataset.task = t.taskId;
    cell(tr, t.taskId); cell(tr, t.state); cell(tr, t.requester); cell(tr, t.assignee); cell(tr, age(t.createdAt)); cell(tr, t.title || "");
  }, "no tasks in flight");
  fill("parked", s.parked, (tr, p) => {
    tr.dataset.parked = p.instance + "/" + p.parkedSeq;
    cell(tr, p.instance); cell(tr, p.parkedSeq); cell(tr, p.sessionKey); cell(tr, p.reason); cell(tr, p.deliveries); cell(tr, age(p.parkedAt)); cell(tr, p.size);
    const td = document.createElement("td");
    const b = document.createElement("button");
    b.textContent = "redrive";
    b.className = "redrive";
    if (s.access !== "operator") { b.disabled = true; b.title = "read-only view: redrive needs the operator's credentials"; }
    b.addEventListener("click", () => redrive(b, p));
    td.appendChild(b); tr.appendChild(td);
  }, "no parked messages");
  document.body.dataset.loaded = s.generatedAt;
}
const feed = document.getElementById("feed");
const events = new EventSource("/events");
events.addEventListener("hello", (e) => {
  const h = JSON.parse(e.data);
  if (h.tailing.length === 0) feed.textContent = "(no live feed: these credentials may not watch inboxes)\\n";
});
events.addEventListener("envelope", (e) => {
  const x = JSON.parse(e.data);
  feed.textContent = x.at + " " + x.kind + " " + x.from + " -> " + x.to + " " + x.id + "\\n" + feed.textContent.slice(0, 20000);
});
load();
setInterval(load, 3000);
</script>
</body>
</html>
`;
