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

async function recommend() {
  const user = $("user-free").value.trim() || $("user").value;
  if (!user) return;
  $("recs-title").textContent = "Recommendations for " + user;
  try {
    const [r, h] = await Promise.all([
      api("/recommend/" + encodeURIComponent(user) + "?k=12"),
      api("/users/" + encodeURIComponent(user) + "/history?limit=24"),
    ]);
    const why = r.fallback ? "unknown user: most popular items (fallback)" : "source: " + r.source;
    $("recs-note").textContent = why + " · model " + r.model + " · arm " + r.arm;
    fill($("recs"), r.items);
    fill($("history"), h.items);
  } catch (e) { showError($("recs"), e); }
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

async function init() {
  $("apikey").value = localStorage.getItem("modalrec-key") || "";
  $("apikey").addEventListener("change", () => localStorage.setItem("modalrec-key", $("apikey").value));
  $("go").addEventListener("click", recommend);
  $("user").addEventListener("change", () => { $("user-free").value = ""; recommend(); });
  $("search-form").addEventListener("submit", search);
  try {
    const h = await api("/health");
    const a = h.arms.a;
    $("status").textContent = a.model + " · " + a.users + " users · " + a.items + " items";
    const u = await api("/users?limit=100");
    $("user").replaceChildren(...u.users.map((id) => new Option(id, id)));
    await recommend();
    document.body.dataset.ready = "1";
  } catch (e) {
    $("status").textContent = "error: " + e.message;
    document.body.dataset.ready = "error";
  }
}

init();
