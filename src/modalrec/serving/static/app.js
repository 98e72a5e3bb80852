// modalrec demo page: plain JS, no external scripts. Talks to the same server's JSON API.
"use strict";
const $ = (id) => document.getElementById(id);

function headers() {
  const key = $("apikey").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

async function api(path) {
  const r = await fetch(path, { headers: headers() });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
  return body;
}

function card(item, onClick) {
  const div = document.createElement("div");
  div.className = "card";
  div.dataset.itemId = item.item_id;
  if (item.image_url) {
    const img = document.createElement("img");
    img.src = item.image_url;
    img.alt = item.title || item.item_id;
    img.loading = "lazy";
    div.appendChild(img);
  } else {
    const ph = document.createElement("div");
    ph.className = "noimg";
    ph.textContent = "no image";
    div.appendChild(ph);
  }
  const t = document.createElement("div");
  t.className = "t";
  t.textContent = item.title || item.item_id;
  div.appendChild(t);
  if (item.score !== undefined && item.score !== null) {
    const s = document.createElement("div");
    s.className = "s";
    s.textContent = "score " + item.score.toFixed(3);
    div.appendChild(s);
  }
  div.addEventListener("click", () => onClick(item));
  return div;
}

function fill(el, items) {
  el.replaceChildren(...items.map((it) => card(it, showSimilar)));
}

function showError(el, e) {
  const p = document.createElement("p");
  p.className = "error";
  p.textContent = e.message;
  el.replaceChildren(p);
}

async function showSimilar(item) {
  $("panel-similar").hidden = false;
  $("similar-title").textContent = "Similar to: " + (item.title || item.item_id);
  try {
    const r = await api("/similar/" + encodeURIComponent(item.item_id) + "?k=12");
    fill($("similar"), r.items);
  } catch (e) { showError($("similar"), e); }
  $("panel-similar").scrollIntoView({ behavior: "smooth" });
}

// Shows one user's recommendations and history; returns the recommendation error, if any.
async function recommend() {
  const user = $("user-free").value.trim() || $("user").value;
  if (!user) return null;
  $("recs-title").textContent = "Recommendations for " + user;
  // the history is user data (a read key unless the server opens it): its error stays in its panel
  const [r, h] = await Promise.allSettled([
    api("/recommend/" + encodeURIComponent(user) + "?k=12"),
    api("/users/" + encodeURIComponent(user) + "/history?limit=24"),
  ]);
  if (r.status === "fulfilled") {
    const v = r.value;
    const why = v.fallback ? "unknown user: most popular items (fallback)" : "source: " + v.source;
    $("recs-note").textContent = why + " · model " + v.model + " · arm " + v.arm;
    fill($("recs"), v.items);
  } else showError($("recs"), r.reason);
  if (h.status === "fulfilled") fill($("history"), h.value.items);
  else showError($("history"), h.reason);
  return r.status === "rejected" ? r.reason : null;
}

async function loadUsers() {
  try {
    const u = await api("/users?limit=100");
    $("user").replaceChildren(...u.users.map((id) => new Option(id, id)));
    $("user").disabled = false;
  } catch (e) {  // user ids are private by default: say why the list is empty, typed ids still work
    $("user").replaceChildren(new Option("(list needs a read key)", ""));
    $("user").disabled = true;
    $("user-note").textContent = e.message;
  }
}

async function search(ev) {
  ev.preventDefault();
  const q = $("q").value.trim();
  if (!q) return;
  $("panel-search").hidden = false;
  $("search-title").textContent = "Search: " + q;
  try {
    const r = await api("/search?k=12&q=" + encodeURIComponent(q));
    fill($("results"), r.items);
  } catch (e) { showError($("results"), e); }
}

// ---- live items (POST /items, DELETE /items/{id}, write key) ----
async function send(method, path, body) {
  const r = await fetch(path, { method, headers: headers(), body });
  const answer = await r.json();
  if (!r.ok) {
    const e = answer.error || {};
    throw new Error((e.code ? e.code + ": " : "") + (e.message || r.statusText));
  }
  return answer;
}

function itemResult(text, ok) {
  $("item-result").textContent = text;
  $("item-result").className = ok ? "ok" : "error";
}

// One text input per text column of the catalogue, learned from one of its items (title if none;
// numbers and flags are left out of the form, the API takes them too).
async function itemFields(exampleId) {
  let names = ["title"];
  if (exampleId) {
    try {
      const d = await api("/items/" + encodeURIComponent(exampleId));
      const text = Object.keys(d.fields).filter((k) => typeof d.fields[k] === "string");
      if (text.length) names = text;
    } catch (e) { /* keep the default */ }
  }
  $("item-fields").replaceChildren(...names.map((n) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.name = n;
    input.dataset.field = n;
    input.size = n === "title" ? 24 : 16;
    label.append(n + " ", input);
    return label;
  }));
}

async function addItem(ev) {
  ev.preventDefault();
  const form = new FormData();
  const id = $("item-id").value.trim();
  form.append("item_id", id);
  document.querySelectorAll("#item-fields input").forEach((i) => {
    if (i.value.trim()) form.append(i.dataset.field, i.value.trim());
  });
  const file = $("item-image").files[0];
  if (file) form.append("image", file, file.name);
  itemResult("adding " + id + "…", true);
  try {
    const r = await send("POST", "/items", form);
    const missing = Object.entries(r.missing).map(([m, why]) => m + " (" + why + ")").join(", ");
    itemResult((r.created ? "added " : "already there: ") + r.item_id + " · vectors: " +
      (r.modalities.join(", ") || "none") + (missing ? " · missing: " + missing : ""), true);
    $("hide-id").value = r.item_id;
    const title = form.get("title");
    await showSimilar({ item_id: r.item_id, title: title ? String(title) : r.item_id });
  } catch (e) { itemResult("not added: " + e.message, false); }
}

async function hideItem(ev) {
  ev.preventDefault();
  const id = $("hide-id").value.trim();
  try {
    await send("DELETE", "/items/" + encodeURIComponent(id));
    itemResult("hidden everywhere: " + id, true);
  } catch (e) { itemResult("not hidden: " + e.message, false); }
}

// ---- experiment report (GET /admin/ab, admin key) ----
function fmt(x, digits = 4) {
  if (x === null || x === undefined) return "–";
  if (typeof x === "number") return Number.isInteger(x) ? String(x) : x.toPrecision(digits);
  return String(x);
}

function est(m) {
  return m && m.mean !== null ? fmt(m.mean) + " ± " + fmt(m.se, 2) : "–";
}

function table(head, rows) {
  const t = document.createElement("table");
  const tr = t.createTHead().insertRow();
  head.forEach((h) => { const th = document.createElement("th"); th.textContent = h; tr.appendChild(th); });
  const body = t.createTBody();
  rows.forEach((r) => {
    const row = body.insertRow();
    row.dataset.key = r[0];
    r.forEach((c) => { row.insertCell().textContent = c; });
  });
  return t;
}

function answerBox(ans) {
  const div = document.createElement("div");
  div.id = "ab-answer";
  div.className = "answer" + (ans && ans.significant ? " sig" : "") + (ans && ans.test === "sample-ratio mismatch" ? " warn" : "");
  if (!ans) { div.textContent = "No experiment: one arm is served."; return div; }
  const verdict = ans.significant ? "significant, winner: arm " + ans.winner : "no significant difference";
  div.textContent = "Answered by: " + ans.test + " · " + verdict +
    (ans.p_value !== undefined ? " · always-valid p = " + fmt(ans.p_value, 3) : "") + ". Why: " + ans.why;
  return div;
}

function abArms(r) {
  const rows = Object.entries(r.arms).map(([arm, a]) => [
    arm, r.runs[arm] ? r.runs[arm].model : "–", a.users, a.impressions, est(a.ctr),
    est(a.positive_per_impression), est(a.positive_per_user), est(a.mrr_of_clicks),
  ]);
  return table(["arm", "model", "users", "lists", "CTR", "positives / list", "positives / user", "MRR of clicks"], rows);
}

function abTests(t) {
  const s = t.srm, f = t.fixed_horizon, q = t.sequential;
  return table(["check", "value"], [
    ["sequential (" + q.method + ")", "Λ = " + fmt(q.lambda, 3) + " · p = " + fmt(q.p_value, 3)],
    ["fixed-horizon z (valid at a planned n only)", "Δ = " + fmt(f.difference) + " · p = " + fmt(f.p_value, 3)],
    ["sample-ratio mismatch", "share b " + fmt(s.observed_share_b, 3) + " vs " + fmt(s.expected_share_b, 3) + (s.flagged ? " · FLAGGED" : " · ok")],
    ["minimum detectable effect (" + t.metric + ")", fmt(t.mde.absolute, 3) + " (" + fmt(t.mde.relative_to_a === null ? null : 100 * t.mde.relative_to_a, 3) + "% of arm a)"],
  ]);
}

function ilTests(t) {
  return table(["interleaving", "value"], [
    ["users · lists", t.users + " · " + t.impressions],
    ["clicks credited a · b", t.credit_a + " · " + t.credit_b],
    ["user wins a · b · ties", t.wins_a + " · " + t.wins_b + " · " + t.ties],
    ["binomial test (valid at a planned n only)", "p = " + fmt(t.binomial_p_value, 3)],
    ["sequential (" + t.sequential.method + ")", "p = " + fmt(t.sequential.p_value, 3)],
  ]);
}

function guardrailTable(g) {
  const rows = Object.entries(g).map(([arm, x]) => [
    arm, x.requests, fmt(x.latency_p99_ms, 3), fmt(100 * x.fallback_share, 3) + "%", fmt(100 * x.error_share, 3) + "%",
  ]);
  return table(["arm", "lists", "latency p99 (ms)", "fallback", "errors"], rows);
}

async function showAb() {
  const el = $("ab");
  try {
    const r = await api("/admin/ab");
    const head = document.createElement("p");
    head.className = "muted";
    const unatt = Object.values(r.unattributed_events).reduce((a, b) => a + b, 0);
    head.textContent = "experiment " + r.experiment + " · mode " + r.mode + " · metric " + r.metric +
      " · alpha " + r.alpha + " · unattributed events " + unatt;
    const parts = [head, answerBox(r.answer)];
    if (r.mode === "interleave" && r.test) parts.push(ilTests(r.test));
    else {
      parts.push(abArms(r));
      if (r.test) parts.push(abTests(r.test));
    }
    parts.push(guardrailTable(r.guardrails));
    el.replaceChildren(...parts);
    el.dataset.loaded = "1";
  } catch (e) { showError(el, e); el.dataset.loaded = "error"; }
}

async function init() {
  $("apikey").value = localStorage.getItem("modalrec-key") || "";
  $("apikey").addEventListener("change", () => localStorage.setItem("modalrec-key", $("apikey").value));
  $("go").addEventListener("click", recommend);
  $("user").addEventListener("change", () => { $("user-free").value = ""; recommend(); });
  $("search-form").addEventListener("submit", search);
  $("ab-load").addEventListener("click", showAb);
  $("item-form").addEventListener("submit", addItem);
  $("hide-form").addEventListener("submit", hideItem);
  try {
    const h = await api("/health");
    const a = h.arms.a;
    $("status").textContent = a.model + " · " + a.users + " users · " + a.items + " items";
    await loadUsers();
    const err = await recommend();
    const first = document.querySelector("#recs .card");
    await itemFields(first ? first.dataset.itemId : null);
    if (err) throw err;
    document.body.dataset.ready = "1";
  } catch (e) {
    $("status").textContent = "error: " + e.message;
    document.body.dataset.ready = "error";
  }
}

init();
