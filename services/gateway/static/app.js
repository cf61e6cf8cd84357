// StyleLoop's web page: every call goes to the gateway's public /v1 API, as a mobile app's
// would (with the API key from Settings when the gateway needs one). No framework, no build.
"use strict";

const $ = (id) => document.getElementById(id);
const FACETS = ["gender", "article_type", "colour", "brand", "season", "year", "usage"];
const FILTER_KEY = {
  gender: "genders", article_type: "article_types", colour: "colours", brand: "brands",
  season: "seasons", year: "years", usage: "usages",
};
const state = {
  chosen: {},          // facet -> Set of chosen values
  query: "", token: "", // text search paging
  marked: {},          // item id -> "like" | "reject"
  conversation: [],    // chat messages so far
  images: new Map(),   // item id -> object URL
};

// ------------------------------------------------------------------ settings

function apiKey() { return localStorage.getItem("styleloop.apiKey") || ""; }
function userId() {
  let id = localStorage.getItem("styleloop.userId");
  if (!id) {
    id = "web-" + Math.random().toString(36).slice(2, 10);
    localStorage.setItem("styleloop.userId", id);
  }
  return id;
}

// ------------------------------------------------------------------ calls

class ApiError extends Error {
  constructor(status, reason, message) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (apiKey()) headers["X-API-Key"] = apiKey();
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (error) {
    throw new ApiError(0, "NETWORK", "the gateway cannot be reached (" + error.message + ")");
  }
  if (!response.ok) {
    let body = {};
    try { body = await response.json(); } catch (ignored) { /* not JSON */ }
    throw new ApiError(response.status, body.reason || "HTTP_" + response.status,
      body.message || response.statusText);
  }
  return response;
}

function showError(error) {
  const box = $("error");
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = (error.reason ? error.reason + ": " : "") + error.message;
}

async function guarded(status, work) {
  showError(null);
  if (status) status.textContent = "Loading…";
  try {
    await work();
    if (status && status.textContent === "Loading…") status.textContent = "";
  } catch (error) {
    if (status) status.textContent = "";
    showError(error);
  }
}

// ------------------------------------------------------------------ cards

async function photo(img, itemId) {
  if (state.images.has(itemId)) { img.src = state.images.get(itemId); return; }
  try {
    const blob = await (await api("/v1/items/" + encodeURIComponent(itemId) + "/image")).blob();
    const url = URL.createObjectURL(blob);
    state.images.set(itemId, url);
    img.src = url;
  } catch (ignored) {
    img.alt = "no photo";
  }
}

function card(item, context, why) {
  const node = $("card").content.firstElementChild.cloneNode(true);
  node.dataset.itemId = item.item_id;
  node.querySelector(".title").textContent = item.title;
  const facts = [item.brand, item.colour, item.gender, [item.season, item.year].join(" ").trim()];
  node.querySelector(".facts").textContent = facts.filter(Boolean).join(" · ");
  node.querySelector(".why").textContent = why || "";
  const img = node.querySelector("img");
  img.alt = item.title;
  photo(img, item.item_id);
  node.querySelector(".open").addEventListener("click", () => openItem(item.item_id));
  node.querySelector(".like").addEventListener("click", () => feedback(node, item, "like", context));
  node.querySelector(".reject").addEventListener("click", () => feedback(node, item, "reject", context));
  mark(node, state.marked[item.item_id]);
  return node;
}

function mark(node, kind) {
  node.classList.toggle("liked", kind === "like");
  node.classList.toggle("rejected", kind === "reject");
  node.querySelector(".like").setAttribute("aria-pressed", String(kind === "like"));
  node.querySelector(".reject").setAttribute("aria-pressed", String(kind === "reject"));
}

async function feedback(node, item, kind, context) {
  let reason = "";
  if (kind === "reject") {
    reason = window.prompt("Why not? (optional)", "") || "";
  }
  await guarded(null, async () => {
    await api("/v1/feedback", {
      method: "POST",
      json: { events: [{ user_id: userId(), item_id: item.item_id, kind,
        context: Object.assign({ reason }, context) }] },
    });
    state.marked[item.item_id] = kind;
    for (const other of document.querySelectorAll('.card[data-item-id="' + CSS.escape(item.item_id) + '"]')) {
      mark(other, kind);
    }
  });
}

function fill(list, results, context, whys = {}) {
  list.replaceChildren(...results.map((r, n) =>
    card(r.item, Object.assign({ position: n }, context), whys[r.item.item_id])));
}

// ------------------------------------------------------------------ search

function filter() {
  const out = {};
  for (const [facet, values] of Object.entries(state.chosen)) {
    if (values.size) out[FILTER_KEY[facet]] = [...values];
  }
  return out;
}

async function loadChips() {
  await guarded(null, async () => {
    const params = new URLSearchParams();
    FACETS.forEach((f) => params.append("fields", f));
    params.set("max_values", "8");
    const body = await (await api("/v1/facets?" + params)).json();
    const chips = $("chips");
    chips.replaceChildren();
    for (const facet of body.facets) {
      const group = document.createElement("fieldset");
      const legend = document.createElement("legend");
      legend.className = "visually-hidden";
      legend.textContent = facet.field;
      group.append(legend);
      for (const value of facet.values) {
        const chip = document.createElement("button");
        chip.type = "button";
        chip.className = "chip";
        chip.dataset.facet = facet.field;
        chip.dataset.value = value.value;
        chip.textContent = value.value;
        chip.title = facet.field + ": " + value.count + " items";
        chip.setAttribute("aria-pressed", "false");
        chip.addEventListener("click", () => toggleChip(chip));
        group.append(chip);
      }
      chips.append(group);
    }
  });
}

function toggleChip(chip) {
  const values = state.chosen[chip.dataset.facet] || (state.chosen[chip.dataset.facet] = new Set());
  if (values.has(chip.dataset.value)) values.delete(chip.dataset.value);
  else values.add(chip.dataset.value);
  chip.setAttribute("aria-pressed", String(values.has(chip.dataset.value)));
  if (state.query) textSearch(false);
}

async function textSearch(more) {
  const status = $("results-status");
  if (!more) { $("results").replaceChildren(); $("more").hidden = true; }
  await guarded(status, async () => {
    const body = { query: state.query, user_id: userId(), filter: filter(), page_size: 12 };
    if (more) body.page_token = state.token;
    const page = await (await api("/v1/search/text", { method: "POST", json: body })).json();
    const context = { source: "search_by_text", query: state.query };
    if (more) {
      const list = $("results");
      page.results.forEach((r, n) => list.append(card(r.item, Object.assign({ position: list.children.length + n }, context))));
    } else {
      fill($("results"), page.results, context);
    }
    state.token = page.next_page_token;
    $("more").hidden = !state.token;
    status.textContent = page.results.length || more ? "" : "Nothing matches.";
  });
}

async function photoSearch(file) {
  if (!file) return;
  const status = $("results-status");
  $("results").replaceChildren();
  await guarded(status, async () => {
    const form = new FormData();
    form.append("image", file, file.name || "photo");
    const params = new URLSearchParams({ page_size: "12", user_id: userId() });
    const page = await (await api("/v1/search/image?" + params, { method: "POST", body: form })).json();
    fill($("results"), page.results, { source: "search_by_image" });
    state.token = "";
    $("more").hidden = true;
    status.textContent = page.results.length ? "Items that look like your photo" : "Nothing looks like it.";
  });
}

// ------------------------------------------------------------------ an item

const OUTFIT_CATEGORIES = ["Topwear", "Bottomwear", "Shoes", "Watches", "Bags"];

async function openItem(itemId) {
  await guarded(null, async () => {
    const item = await (await api("/v1/items/" + encodeURIComponent(itemId))).json();
    const section = $("item");
    section.hidden = false;
    $("item-title").textContent = item.title;
    const detail = $("item-detail");
    detail.replaceChildren();
    const img = document.createElement("img");
    img.alt = item.title;
    img.className = "detail-photo";
    img.width = 240;
    photo(img, item.item_id);
    const facts = document.createElement("p");
    facts.textContent = [item.brand, item.article_type, item.colour, item.gender, item.usage,
      [item.season, item.year].join(" ").trim(),
      item.price ? item.price.toFixed(2) + " " + item.currency_code : ""].filter(Boolean).join(" · ");
    detail.append(img, facts);
    const params = new URLSearchParams({ page_size: "8" });
    const similar = await (await api("/v1/items/" + encodeURIComponent(itemId) + "/similar?" + params)).json();
    fill($("similar"), similar.results, { source: "similar_items" });
    const buttons = $("outfit-categories");
    buttons.replaceChildren(...OUTFIT_CATEGORIES.filter((c) => c !== item.category).map((category) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = category;
      button.addEventListener("click", () => completeOutfit(item, category));
      return button;
    }));
    $("outfit").replaceChildren();
    section.scrollIntoView({ behavior: "smooth" });
  });
}

async function completeOutfit(item, category) {
  await guarded(null, async () => {
    const page = await (await api("/v1/outfits/complete", {
      method: "POST", json: { item_ids: [item.item_id], category, page_size: 8 },
    })).json();
    fill($("outfit"), page.results, { source: "complete_outfit" });
  });
}

// ------------------------------------------------------------------ chat

function parseEvents(buffer, onEvent) {
  // Server-sent events: blocks separated by a blank line, "event:" and "data:" lines.
  let end;
  while ((end = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
    }
    if (data.length) onEvent(name, JSON.parse(data.join("\n")));
  }
  return buffer;
}

async function ask(question) {
  const conversation = $("conversation");
  const mine = document.createElement("div");
  mine.className = "turn user";
  mine.textContent = question;
  const answer = document.createElement("div");
  answer.className = "turn assistant";
  answer.setAttribute("aria-busy", "true");
  const text = document.createElement("p");
  text.className = "answer-text";
  const cited = document.createElement("ul");
  cited.className = "cards cited";
  const more = document.createElement("details");
  more.innerHTML = "<summary>Also found</summary>";
  const others = document.createElement("ul");
  others.className = "cards retrieved";
  more.append(others);
  answer.append(text, cited, more);
  conversation.append(mine, answer);
  state.conversation.push({ role: "user", content: question });
  let retrieved = [];
  const reasons = {};
  let reply = "";
  let finish = null;
  await guarded(null, async () => {
    const response = await api("/v1/chat", {
      method: "POST",
      json: { user_id: userId(), messages: state.conversation.slice(-20) },
      headers: { Accept: "text/event-stream" },
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const context = () => ({ source: "chat", query: question,
      recommended_item_ids: retrieved.map((r) => r.item.item_id),
      answer_id: finish ? finish.answer_id : "", adapter_id: finish ? finish.adapter_id : "" });
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = parseEvents(buffer + decoder.decode(value, { stream: true }).replace(/\r/g, ""), (name, data) => {
        if (name === "retrieved") retrieved = data.items;
        else if (name === "text") { reply += data.text; text.textContent = reply; }
        else if (name === "reference") {
          reasons[data.item_id] = data.reason;
          const hit = retrieved.find((r) => r.item.item_id === data.item_id);
          if (hit) cited.append(card(hit.item, context(), data.reason));
        } else if (name === "finish") finish = data;
        else if (name === "error") throw new ApiError(0, data.reason, data.message);
      });
    }
    const rest = retrieved.filter((r) => !(r.item.item_id in reasons));
    fill(others, rest, context());
    more.hidden = !rest.length;
    if (finish && finish.finish_reason === "no_items") answer.classList.add("idk");
    // Feedback on cited cards names the answer they came from.
    for (const node of cited.children) {
      const hit = retrieved.find((r) => r.item.item_id === node.dataset.itemId);
      if (hit) node.replaceWith(card(hit.item, context(), reasons[hit.item.item_id]));
    }
    state.conversation.push({ role: "assistant", content: reply });
  });
  answer.removeAttribute("aria-busy");
  answer.dataset.finish = finish ? finish.finish_reason : "error";
}

// ------------------------------------------------------------------ wiring

function start() {
  $("api-key").value = apiKey();
  $("api-key").addEventListener("change", (e) => { localStorage.setItem("styleloop.apiKey", e.target.value.trim()); loadChips(); });
  $("user-id").value = userId();
  $("user-id").addEventListener("change", (e) => {
    if (e.target.checkValidity() && e.target.value) localStorage.setItem("styleloop.userId", e.target.value);
  });
  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.query = $("query").value.trim();
    if (state.query) textSearch(false);
  });
  $("more").addEventListener("click", () => textSearch(true));
  $("photo").addEventListener("change", (e) => photoSearch(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    photoSearch(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("photo").click(); } });
  $("close-item").addEventListener("click", () => { $("item").hidden = true; });
  $("chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const question = $("question").value.trim();
    if (!question) return;
    $("question").value = "";
    ask(question);
  });
  loadChips();
}

document.addEventListener("DOMContentLoaded", start);
