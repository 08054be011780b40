// The box's dashboard: plain DOM, no framework, no build. Every text from the box (names, tasks, cards,
// errors) goes in through textContent, never as HTML.

const LABELS = {
  online: "Online", provisioning: "Starting", degraded: "Degraded", failed: "Failed", paused: "Paused",
  offline: "Offline", hibernating: "Hibernating", hibernated: "Hibernated", awaiting_agent: "Awaiting agent",
  removed: "Removed",
};
// Lifecycle events and the status each one means.
const STATUS_OF = {
  WORKSPACE_PROVISIONING: "provisioning", WORKSPACE_ONLINE: "online", WORKSPACE_OFFLINE: "offline",
  WORKSPACE_DEGRADED: "degraded", WORKSPACE_PROVISION_FAILED: "failed", WORKSPACE_PAUSED: "paused",
  WORKSPACE_HIBERNATED: "hibernated", WORKSPACE_AWAITING_AGENT: "awaiting_agent",
};
const FEED_MAX = 300;
// A poll-mode agent's inbox message: what became of it (INBOX_MESSAGE events), and which states are final.
const INBOX_LABELS = { queued: "queued", fetched: "fetched by its agent", replied: "replied", expired: "expired" };
const INBOX_FINAL = new Set(["replied", "expired"]);

const state = {
  csrf: "", workspaces: new Map(), rows: new Map(), remote: new Set(), source: null, feed: [],
  types: new Set(), refetch: new Map(), layoutQueued: false,
  inbox: new Map(), // "<workspace id>:<activity id>" -> its frame: one feed line per inbox message
  options: new Map(), // workspace id -> its <option> in the feed's workspace filter
  ready: Promise.resolve(),
};
const $ = (id) => document.getElementById(id);

// Writes only what changed: an unchanged row costs the browser no style or layout work (1,000 rows, a heartbeat
// every 30 s each, and the ages ticking every second).
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setHidden(node, hidden) {
  if (node.hidden !== hidden) node.hidden = hidden;
}

function setData(node, key, value) {
  if (node.dataset[key] !== value) node.dataset[key] = value;
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401 && path !== "/session") showLogin("Your session ended: log in again.");
  if (!response.ok) throw new HttpError(response.status, (data && data.error) || response.statusText);
  return data;
}

// --- login and logout -------------------------------------------------------------------------------

function showLogin(message = "") {
  stopEvents();
  state.csrf = "";
  $("main-view").hidden = true;
  $("logout").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message;
  $("token").focus();
}

async function showMain(session) {
  state.csrf = session.csrf_token;
  $("login-view").hidden = true;
  $("main-view").hidden = false;
  $("logout").hidden = false;
  // REMOTE is what the backend can do (its capabilities), never its name. Read while the stream opens: the
  // rows are drawn once both are there.
  state.ready = api("GET", "/health").then((health) => {
    state.backends = health.backends || {};
    state.remote = new Set(Object.entries(state.backends).filter(([, c]) => c.remote).map(([n]) => n));
  });
  startEvents();
  await state.ready;
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("token");
  const token = input.value;
  input.value = "";
  try {
    await showMain(await api("POST", "/session", { admin_token: token }));
  } catch (err) {
    showLogin(err.status === 401 ? "Wrong admin token." : `Login failed: ${err.message}`);
  }
});

$("logout").addEventListener("click", async () => {
  try { await api("DELETE", "/session"); } finally { showLogin("Logged out."); }
});

// --- live events --------------------------------------------------------------------------------------

function setConn(value) {
  const pill = $("conn");
  pill.dataset.state = value;
  pill.textContent = value;
}

function stopEvents() {
  if (state.source) state.source.close();
  state.source = null;
  setConn("offline");
}

function startEvents() {
  stopEvents();
  setConn("reconnecting");
  const source = new EventSource("/events/stream");
  state.source = source;
  source.onopen = async () => {
    // Everything missed while away: the list again, then events on top of it.
    try { await hydrate(); setConn("live"); } catch { setConn("reconnecting"); }
  };
  source.onerror = () => {
    if (state.source !== source) return;
    if (source.readyState === EventSource.CLOSED) {
      setConn("offline");
      // Closed for good (refused): ask why, then come back later unless the session is gone.
      api("GET", "/session").then((s) => {
        if (!s.logged_in) showLogin("Your session ended: log in again.");
        else setTimeout(() => state.source === source && startEvents(), 3000);
      }, () => {});
    } else {
      setConn("reconnecting");
    }
  };
  source.onmessage = (message) => {
    let frame;
    try { frame = JSON.parse(message.data); } catch { return; }
    apply(frame);
  };
}

async function hydrate() {
  const [rows] = await Promise.all([api("GET", "/workspaces"), state.ready]);
  const seen = new Set();
  for (const ws of rows) { seen.add(ws.id); state.workspaces.set(ws.id, ws); renderRow(ws); }
  for (const id of [...state.workspaces.keys()]) if (!seen.has(id)) dropWorkspace(id);
  queueLayout();
  await rehydrateInbox();
  // How many times the list was read whole (once per stream opened): what the browser tests watch.
  document.body.dataset.hydrations = String(Number(document.body.dataset.hydrations || 0) + 1);
}

function apply(frame) {
  const { event: type, workspace_id: id, payload = {}, timestamp } = frame;
  addFeed(frame);
  if (!id) return;
  const ws = state.workspaces.get(id);
  if (type === "WORKSPACE_REMOVED") { dropWorkspace(id); queueLayout(); return; }
  if (type === "WORKSPACE_HEARTBEAT") {
    if (!ws) return;
    ws.last_heartbeat_at = timestamp;
    if (payload.active_tasks !== undefined) ws.active_tasks = payload.active_tasks;
    renderRow(ws);
    return;
  }
  if (type === "TASK_UPDATED") {
    if (!ws) return;
    ws.current_task = payload.current_task || "";
    if (payload.active_tasks !== undefined) ws.active_tasks = payload.active_tasks;
    renderRow(ws);
    return;
  }
  if (ws && STATUS_OF[type]) {
    ws.status = STATUS_OF[type];
    if (payload.sample_error !== undefined || payload.error !== undefined) {
      ws.last_sample_error = payload.sample_error || payload.error || "";
    }
    renderRow(ws);
  }
  if (type.startsWith("WORKSPACE_") || type === "AGENT_CARD_UPDATED") refetch(id);
}

// The event says what changed; the record says everything else (failure reason, URL, card): fetched once
// per burst of events of one workspace.
function refetch(id) {
  if (state.refetch.has(id)) return;
  state.refetch.set(id, setTimeout(async () => {
    state.refetch.delete(id);
    try {
      const ws = await api("GET", `/workspaces/${id}`);
      if (ws.status === "removed") { dropWorkspace(id); queueLayout(); }
      else { state.workspaces.set(id, { ...state.workspaces.get(id), ...ws }); renderRow(state.workspaces.get(id)); }
    } catch (err) {
      if (err.status === 404) { dropWorkspace(id); queueLayout(); }
    }
  }, 150));
}

// --- the workspace list ---------------------------------------------------------------------------------

function dropWorkspace(id) {
  if (state.open === id) closeDetails();
  state.workspaces.delete(id);
  const row = state.rows.get(id);
  if (row) row.li.remove();
  state.rows.delete(id);
}

function ageText(iso) {
  if (!iso) return "no heartbeat yet";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `heartbeat ${seconds}s ago`;
  if (seconds < 3600) return `heartbeat ${Math.floor(seconds / 60)}m ago`;
  return `heartbeat ${Math.floor(seconds / 3600)}h ago`;
}

// One listener for every row (rows are many and come and go).
function rowOf(event) {
  const row = event.target.closest(".row");
  return row && row.dataset.id;
}
$("workspaces").addEventListener("click", (event) => { const id = rowOf(event); if (id) openDetails(id); });
$("workspaces").addEventListener("keydown", (event) => {
  const id = rowOf(event);
  if (id && (event.key === "Enter" || event.key === " ")) { event.preventDefault(); openDetails(id); }
});

// One row's elements, built once and cloned for each workspace (a clone is cheaper than a dozen elements made
// one by one, 1,000 times on the first render).
const ROW_PARTS = {
  dot: ["dot", { "aria-hidden": "true" }], name: ["name", { "data-testid": "name" }],
  status: ["status", { "data-testid": "status" }], remote: ["tag remote", { "data-testid": "remote" }, "★ REMOTE"],
  backend: ["tag", { title: "backend" }], runtime: ["tag", { title: "runtime" }], tier: ["tag", { title: "tier" }],
  active: ["tag", { title: "active tasks" }], age: ["muted age", { "data-testid": "age" }],
  task: ["task", { "data-testid": "task" }], reason: ["reason", { "data-testid": "reason" }],
};
const ROW_TEMPLATE = (() => {
  const li = el("li");
  const row = el("div", { class: "row", tabindex: "0", role: "button" });
  for (const [cls, attrs, text] of Object.values(ROW_PARTS)) row.append(el("span", { class: cls, ...attrs }, text));
  li.append(row, el("ul"));
  return li;
})();

function makeRow(id) {
  const li = ROW_TEMPLATE.cloneNode(true);
  li.dataset.testid = `ws-${id}`;
  const [row, children] = li.children;
  row.dataset.id = id;
  const names = Object.keys(ROW_PARTS);
  const parts = Object.fromEntries([...row.children].map((node, i) => [names[i], node]));
  const entry = { li, row, children, parts };
  state.rows.set(id, entry);
  return entry;
}

function renderRow(ws) {
  const entry = state.rows.get(ws.id) || makeRow(ws.id);
  const p = entry.parts;
  const label = LABELS[ws.status] || ws.status;
  setData(entry.li, "status", ws.status);
  setData(entry.li, "parent", ws.parent_id || "");
  const aria = `${ws.name}: ${label}`;
  if (entry.row.getAttribute("aria-label") !== aria) entry.row.setAttribute("aria-label", aria);
  if (p.name.textContent !== ws.name) {
    p.name.textContent = ws.name;
    const option = state.options.get(ws.id);
    if (option) option.textContent = ws.name;
  }
  setText(p.status, label);
  setHidden(p.remote, !state.remote.has(ws.backend));
  setText(p.backend, ws.backend);
  setText(p.runtime, ws.runtime || "");
  setHidden(p.runtime, !ws.runtime);
  setText(p.tier, `T${ws.tier}`);
  setText(p.active, `${ws.active_tasks || 0} active`);
  setData(p.age, "at", ws.last_heartbeat_at || "");
  setText(p.age, ageText(ws.last_heartbeat_at));
  setText(p.task, ws.current_task ? `Task: ${ws.current_task}` : "");
  setHidden(p.task, !ws.current_task);
  const failing = ws.status === "degraded" || ws.status === "failed";
  setText(p.reason, failing ? ws.failure_reason || ws.last_sample_error || "" : "");
  setHidden(p.reason, !p.reason.textContent);
  // Only a new row or a new parent moves anything in the list (a whole-list layout per event made every
  // change wait behind 1,000 rows' style and layout).
  if (entry.parent !== (ws.parent_id || "")) { entry.parent = ws.parent_id || ""; queueLayout(); }
  if (!entry.li.isConnected) queueLayout();
  if (state.open === ws.id) renderDetails(ws);
}

function queueLayout() {
  if (state.layoutQueued) return;
  state.layoutQueued = true;
  requestAnimationFrame(layout);
}

// Parents contain their children; a child whose parent is not listed is shown at the top level.
function layout() {
  state.layoutQueued = false;
  const kids = new Map();
  const roots = [];
  for (const ws of state.workspaces.values()) {
    const parent = ws.parent_id && state.workspaces.has(ws.parent_id) ? ws.parent_id : null;
    if (parent) { if (!kids.has(parent)) kids.set(parent, []); kids.get(parent).push(ws.id); } else roots.push(ws.id);
  }
  for (const [id, entry] of state.rows) entry.children.replaceChildren(...(kids.get(id) || []).map((k) => state.rows.get(k).li));
  $("workspaces").replaceChildren(...roots.map((id) => state.rows.get(id).li));
  $("ws-count").textContent = `(${state.workspaces.size})`;
  $("ws-empty").hidden = state.workspaces.size > 0;
  const select = $("feed-ws");
  const chosen = select.value;
  state.options = new Map([...state.workspaces.values()].map((ws) => [ws.id, el("option", { value: ws.id }, ws.name)]));
  select.replaceChildren(el("option", { value: "" }, "all"), ...state.options.values());
  select.value = chosen;
}

setInterval(() => {
  for (const entry of state.rows.values()) setText(entry.parts.age, ageText(entry.parts.age.dataset.at));
  tickInbox();
}, 1000);

// --- the live feed ----------------------------------------------------------------------------------

function feedLine(frame) {
  if (frame.event === "INBOX_MESSAGE") return inboxLine(frame);
  const { event: type, workspace_id: id, payload = {}, timestamp } = frame;
  const li = el("li", { "data-type": type, "data-ws": id || "" });
  const ws = id && state.workspaces.get(id);
  li.append(el("span", { class: "muted" }, `${(timestamp || "").slice(11, 19)} `),
    el("span", { class: "kind" }, type), document.createTextNode(ws ? ` ${ws.name}` : ""));
  if (type === "ACTIVITY_LOGGED") {
    const name = (wid) => (wid ? state.workspaces.get(wid)?.name || wid : "operator");
    li.dataset.ws = payload.target_id || id || "";
    li.replaceChildren(el("span", { class: "muted" }, `${(timestamp || "").slice(11, 19)} `),
      el("span", { class: "kind" }, type));
    const bits = [payload.method, payload.duration_ms != null ? `${payload.duration_ms} ms` : "", payload.status,
      payload.error || payload.summary].filter(Boolean).join(" · ");
    li.append(el("span", { "data-testid": "a2a" }, ` ${name(payload.source_id)} → ${name(payload.target_id)} ${bits}`));
  } else if (payload.error || payload.reason) {
    li.append(document.createTextNode(` ${payload.error || payload.reason}`));
  }
  return li;
}

// --- the poll inbox's messages in the feed: one line each, its state updated in place -------------------

function inboxKey(frame) { return `${frame.workspace_id}:${frame.payload.activity_id}`; }

function inboxState(frame) {
  const p = frame.payload;
  // Expiry is no act of the box: a message still queued at its expires_at is expired from then on.
  if (p.state === "queued" && p.expires_at && Date.parse(p.expires_at) <= Date.now()) return "expired";
  return p.state;
}

function inboxLine(frame) {
  const { workspace_id: id, payload: p, timestamp } = frame;
  const now = inboxState(frame);
  const li = el("li", { "data-type": frame.event, "data-ws": id || "", "data-testid": `inbox-${p.activity_id}`,
    "data-inbox-state": now });
  const name = (wid) => (wid ? state.workspaces.get(wid)?.name || wid : "operator");
  li.append(el("span", { class: "muted" }, `${(timestamp || "").slice(11, 19)} `), el("span", { class: "kind" }, "inbox"),
    document.createTextNode(` #${p.activity_id} ${name(p.source_id)} → ${name(id)} `),
    el("span", { class: `inbox-state inbox-${now}`, "data-testid": "inbox-state" }, INBOX_LABELS[now] || now));
  return li;
}

// A state already final stays (a late or repeated event never takes a message back to an earlier state).
function applyInbox(frame) {
  const key = inboxKey(frame);
  const known = state.inbox.get(key);
  if (!known) {
    state.inbox.set(key, frame);
    return true; // a new line, added like any other feed entry
  }
  if (INBOX_FINAL.has(inboxState(known))) return false;
  known.payload = { ...known.payload, ...frame.payload };
  redrawInbox(known);
  return false;
}

function redrawInbox(frame) {
  const old = $("feed").querySelector(`[data-testid="inbox-${frame.payload.activity_id}"][data-ws="${frame.workspace_id}"]`);
  if (old) old.replaceWith(inboxLine(frame));
}

// Messages shown as queued whose expiry came, and (after a reconnect) whatever changed while away.
function tickInbox() {
  for (const frame of state.inbox.values()) {
    if (frame.payload.state === "queued" && inboxState(frame) === "expired") {
      frame.payload = { ...frame.payload, state: "expired" };
      redrawInbox(frame);
    }
  }
}

async function rehydrateInbox() {
  const open = new Set([...state.inbox.values()].filter((f) => !INBOX_FINAL.has(inboxState(f))).map((f) => f.workspace_id));
  await Promise.all([...open].map(async (id) => {
    const answer = await api("GET", `/workspaces/${id}/inbox?limit=500`).catch(() => null);
    for (const m of answer?.messages || []) {
      const frame = state.inbox.get(`${id}:${m.id}`);
      if (frame && frame.payload.state !== m.state) applyInbox({ ...frame, payload: { ...frame.payload, state: m.state } });
    }
  }));
}

function feedShown(frame) {
  const ws = $("feed-ws").value, type = $("feed-type").value;
  return (!ws || frame.workspace_id === ws || frame.payload?.target_id === ws) && (!type || frame.event === type);
}

function addFeed(frame) {
  if (frame.event === "WORKSPACE_HEARTBEAT") return; // every few seconds per workspace: the age shows it
  if (frame.event === "INBOX_MESSAGE" && !applyInbox(frame)) return; // an update of a line already shown
  state.feed.push(frame);
  if (state.feed.length > FEED_MAX) {
    const gone = state.feed.shift();
    if (gone.event === "INBOX_MESSAGE") state.inbox.delete(inboxKey(gone));
  }
  if (!state.types.has(frame.event)) {
    state.types.add(frame.event);
    $("feed-type").append(el("option", { value: frame.event }, frame.event));
  }
  if (!feedShown(frame)) return;
  const list = $("feed");
  list.prepend(feedLine(frame));
  while (list.childElementCount > FEED_MAX) list.lastElementChild.remove();
}

function refilter() {
  $("feed").replaceChildren(...state.feed.filter(feedShown).reverse().map(feedLine));
}
$("feed-ws").addEventListener("change", refilter);
$("feed-type").addEventListener("change", refilter);

// --- one workspace: details, lifecycle, tokens, secrets, logs ------------------------------------------

const ACTIONS = {
  restart: { verb: "Restart", call: (id) => api("POST", `/workspaces/${id}/restart`, {}) },
  pause: { verb: "Pause", call: (id) => api("POST", `/workspaces/${id}/pause`, {}) },
  resume: { verb: "Resume", call: (id) => api("POST", `/workspaces/${id}/resume`, {}) },
  hibernate: { verb: "Hibernate", call: (id) => api("POST", `/workspaces/${id}/hibernate`, {}) },
  wake: { verb: "Wake", call: (id) => api("POST", `/workspaces/${id}/wake`, {}) },
  delete: { verb: "Delete", call: (id) => api("DELETE", `/workspaces/${id}?confirm=true`) },
};

function confirmAction(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (answer) => { dialog.close(); resolve(answer); };
    $("confirm-yes").onclick = () => done(true);
    $("confirm-no").onclick = () => done(false);
    dialog.oncancel = () => resolve(false);
    dialog.showModal();
    $("confirm-no").focus();
  });
}

function fact(name, value) {
  return [el("dt", {}, name), el("dd", {}, value === null || value === undefined || value === "" ? "—" : String(value))];
}

function renderDetails(ws) {
  const dialog = $("details");
  dialog.dataset.status = ws.status;
  $("d-name").textContent = ws.name;
  $("d-status").textContent = LABELS[ws.status] || ws.status;
  const parent = ws.parent_id && state.workspaces.get(ws.parent_id);
  $("d-facts").replaceChildren(
    ...fact("ID", ws.id), ...fact("URL", ws.url), ...fact("Backend", ws.backend),
    ...(ws.location ? fact("Runs on", ws.location) : []),
    ...fact("Runtime", ws.runtime), ...fact("Tier", `T${ws.tier}`),
    ...fact("Parent", parent ? parent.name : ws.parent_id),
    ...fact("Active tasks", ws.active_tasks), ...fact("Uptime", ws.uptime_seconds ? `${ws.uptime_seconds} s` : ""),
    ...fact("Error rate", ws.last_error_rate), ...fact("Last heartbeat", ws.last_heartbeat_at),
    ...fact("Failure", ws.failure_reason || ws.last_sample_error));
  $("d-card").textContent = ws.agent_card ? JSON.stringify(ws.agent_card, null, 2) : "none yet";
  const caps = state.backends[ws.backend] || {};
  $("d-logs-box").hidden = !caps.logs;
  // A remote agent's workload is not the box's to restart.
  const restart = document.querySelector("#details [data-action=restart]");
  restart.disabled = !caps.lifecycle;
  restart.title = caps.lifecycle ? "" : "This backend's agents run outside the box: restart them there.";
}

async function loadLists(id) {
  const [tokens, secrets, peers] = await Promise.all([
    api("GET", `/workspaces/${id}/tokens`), api("GET", `/workspaces/${id}/secrets`),
    api("GET", `/registry/${id}/peers`).catch(() => []),
  ]);
  if (state.open !== id) return;
  $("d-tokens").replaceChildren(...tokens.tokens.map((t) => {
    const revoke = el("button", { type: "button" }, "Revoke");
    revoke.addEventListener("click", () => act(`Revoke token ${t.prefix}…?`, async () => {
      await api("DELETE", `/workspaces/${id}/tokens/${encodeURIComponent(t.id)}`);
      return `Token ${t.prefix}… revoked.`;
    }));
    const li = el("li", { "data-prefix": t.prefix });
    li.append(el("span", {}, `${t.prefix}… created ${t.created_at}, last used ${t.last_used_at || "never"}`), revoke);
    return li;
  }));
  $("d-secrets").replaceChildren(...secrets.map((sec) => {
    const li = el("li", { "data-key": sec.key });
    li.append(el("span", {}, `${sec.key} (${sec.scope})`));
    if (sec.scope === "workspace") {
      const remove = el("button", { type: "button" }, "Delete");
      remove.addEventListener("click", () => act(`Delete secret ${sec.key}?`, async () => {
        await api("DELETE", `/workspaces/${id}/secrets/${encodeURIComponent(sec.key)}`);
        return `Secret ${sec.key} deleted.`;
      }));
      li.append(remove);
    }
    return li;
  }));
  const list = Array.isArray(peers) ? peers : peers.peers || [];
  $("d-peers").replaceChildren(...(list.length ? list.map((p) => el("li", {}, `${p.name} (${LABELS[p.status] || p.status})`))
    : [el("li", { class: "muted" }, "none")]));
}

// Run a confirmed change and say what came of it; the lists are read again after it.
async function act(question, change) {
  const id = state.open;
  if (!(await confirmAction(question))) return;
  try {
    $("d-msg").textContent = await change();
  } catch (err) {
    $("d-msg").textContent = `Refused: ${err.message}`;
  }
  if (state.open === id) loadLists(id).catch(() => {});
}

function openDetails(id) {
  const ws = state.workspaces.get(id);
  if (!ws) return;
  state.open = id;
  $("d-msg").textContent = "";
  $("d-logs").textContent = "";
  if (state.chatWith !== id) $("d-chat").replaceChildren();
  state.chatWith = id;
  hideMinted();
  renderDetails(ws);
  const dialog = $("details");
  if (!dialog.open) dialog.showModal();
  loadLists(id).catch((err) => { $("d-msg").textContent = `Could not load: ${err.message}`; });
}

function hideMinted() {
  $("d-token").textContent = "";
  $("d-minted").hidden = true;
}

function closeDetails() {
  state.open = null;
  hideMinted();
  if ($("details").open) $("details").close();
}

$("d-close").addEventListener("click", closeDetails);
$("details").addEventListener("close", () => { state.open = null; hideMinted(); });

for (const button of document.querySelectorAll("#details [data-action]")) {
  button.addEventListener("click", () => {
    const { verb, call } = ACTIONS[button.dataset.action];
    const ws = state.workspaces.get(state.open);
    if (!ws) return;
    const id = ws.id;
    act(`${verb} ${ws.name}?`, async () => {
      const answer = await call(id);
      if (button.dataset.action === "delete") closeDetails();
      return `${verb}: ${(answer && answer.status) || "done"}.`;
    });
  });
}

$("d-mint").addEventListener("click", async () => {
  const id = state.open;
  try {
    const minted = await api("POST", `/workspaces/${id}/tokens`, {});
    if (state.open !== id) return;
    $("d-token").textContent = minted.auth_token; // shown once: never kept, gone when the panel closes
    $("d-minted").hidden = false;
    loadLists(id).catch(() => {});
  } catch (err) {
    $("d-msg").textContent = `Refused: ${err.message}`;
  }
});

// The clipboard needs a secure context (https, or the box on 127.0.0.1); elsewhere the text is copied by hand.
function copyText(text, message) {
  const done = (said) => { message.textContent = said; };
  if (!navigator.clipboard) { done("Copy it by hand."); return; }
  navigator.clipboard.writeText(text).then(() => done("Copied."), () => done("Copy it by hand."));
}

$("d-copy").addEventListener("click", () => copyText($("d-token").textContent, $("d-msg")));

$("d-secret-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = state.open;
  const key = $("d-secret-key").value;
  const value = $("d-secret-value").value;
  $("d-secret-value").value = ""; // the value is never shown back
  try {
    await api("PUT", `/workspaces/${id}/secrets`, { key, value });
    $("d-secret-key").value = "";
    $("d-msg").textContent = `Secret ${key} set.`;
  } catch (err) {
    $("d-msg").textContent = `Refused: ${err.message}`;
  }
  loadLists(id).catch(() => {});
});

$("d-logs-load").addEventListener("click", async () => {
  const id = state.open;
  try {
    const answer = await api("GET", `/workspaces/${id}/logs?tail=200`);
    $("d-logs").textContent = answer.logs || "(empty)";
  } catch (err) {
    $("d-logs").textContent = `Refused: ${err.message}`;
  }
});

// --- chat: A2A message/stream through the box's proxy, the reply shown as it streams in ---------------

const CHAT_TIMEOUT_MS = 120000;

function newId() {
  return globalThis.crypto?.randomUUID?.() || `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

// The text of one JSON-RPC result of the A2A 0.3 shapes (a message, a task, a status or artifact update).
function resultText(result) {
  if (!result || typeof result !== "object") return "";
  const parts = result.parts || result.status?.message?.parts || result.artifact?.parts || [];
  return parts.filter((p) => typeof p.text === "string").map((p) => p.text).join("");
}

async function readStream(response, onResult) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    // Server-sent events may end their lines with CRLF (sse-starlette does) or LF.
    buffer = (buffer + decoder.decode(value || new Uint8Array(), { stream: !done }))
      .replace(/\r\n/g, "\n").replace(/\r(?!$)/g, "\n"); // a CR at the end may be half of a CRLF
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const chunk = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) { try { onResult(JSON.parse(data)); } catch { /* not JSON: skipped */ } }
    }
    if (done) return;
  }
}

$("d-chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = state.open;
  const text = $("d-chat-text").value;
  if (!id || !text.trim()) return;
  $("d-chat-text").value = "";
  const log = $("d-chat");
  log.append(el("li", { class: "you" }, text));
  const reply = el("li", { class: "agent", "data-testid": "chat-reply", "data-state": "waiting" }, "…");
  log.append(reply);
  const lines = [];
  const show = (line) => {
    if (!line) return;
    lines.push(line);
    reply.textContent = lines.join("\n");
    reply.dataset.state = "streaming";
    log.scrollTop = log.scrollHeight;
  };
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), CHAT_TIMEOUT_MS);
  try {
    const body = { jsonrpc: "2.0", id: newId(), method: "message/stream",
      params: { message: { role: "user", messageId: newId(), parts: [{ kind: "text", text }] } } };
    const response = await fetch(`/workspaces/${id}/a2a`, {
      method: "POST", credentials: "same-origin", signal: abort.signal, body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", "X-CSRF-Token": state.csrf },
    });
    const type = response.headers.get("content-type") || "";
    let failed = !response.ok;
    if (type.startsWith("text/event-stream")) {
      await readStream(response, (frame) => {
        if (frame.error) { failed = true; show(`error: ${frame.error.message || JSON.stringify(frame.error)}`); }
        else show(resultText(frame.result));
      });
    } else {
      const answer = await response.json().catch(() => null);
      if (answer?.error) { failed = true; show(`error: ${answer.error.message || answer.error}`); }
      else show(resultText(answer?.result) || (response.ok ? "(accepted: the agent will reply later)" : ""));
    }
    if (!lines.length) show(failed ? `error: HTTP ${response.status}` : "(no text in the reply)");
    reply.dataset.state = failed ? "failed" : "done";
  } catch (err) {
    reply.textContent = `error: ${err.name === "AbortError" ? "no reply in 120 s" : err.message}`;
    reply.dataset.state = "failed";
  } finally {
    clearTimeout(timer);
  }
});

// --- connect an agent: create a remote workspace, show its one-time token and the API's snippets --------

function copyButton(text, message) {
  const button = el("button", { type: "button" }, "Copy");
  button.addEventListener("click", () => copyText(text, message));
  return button;
}

function snippet(title, text, testid) {
  const box = el("section", { class: "snippet", "data-testid": testid });
  const bar = el("div", { class: "bar" });
  bar.append(el("h3", {}, title), copyButton(text, $("connect-msg")));
  box.append(bar, el("pre", {}, text));
  return box;
}

function closeConnect() {
  $("connect-snippets").replaceChildren(); // the token leaves the page with the dialog
  $("connect-out").hidden = true;
  $("connect-msg").textContent = "";
  if ($("connect").open) $("connect").close();
}

$("connect-open").addEventListener("click", () => {
  closeConnect();
  $("connect").showModal();
  $("connect-name").focus();
});
$("connect-close").addEventListener("click", closeConnect);
$("connect").addEventListener("close", closeConnect);

$("connect-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("connect-name").value;
  try {
    const created = await api("POST", "/workspaces", { name, external: true });
    const c = created.connection || {};
    $("connect-name").value = "";
    const blocks = [];
    if (c.auth_token) {
      blocks.push(snippet("Token", c.auth_token, "connect-token"),
        snippet("Shell", `export MOLECULE_TOKEN=${c.auth_token}`, "connect-export"));
    }
    blocks.push(snippet("Register (curl)", c.curl_register_template || "", "connect-curl"));
    if (c.curl_heartbeat_template) {
      blocks.push(snippet("Heartbeat every 30 s (curl)", c.curl_heartbeat_template, "connect-heartbeat"));
    }
    blocks.push(snippet("Python (the platform SDK)", c.python_snippet || "", "connect-python"));
    $("connect-snippets").replaceChildren(...blocks);
    $("connect-out").hidden = false;
    $("connect-msg").textContent = `Created ${name}: waiting for its agent.`;
  } catch (err) {
    $("connect-msg").textContent = `Refused: ${err.message}`;
  }
});

// --- start --------------------------------------------------------------------------------------------

api("GET", "/session").then((s) => (s.logged_in ? showMain(s) : showLogin()), () => showLogin());
