// The page of `lookalike serve`: plain JavaScript, no build step, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
let maxK = 100;
const KEY = "lookalike-key";  // the API key, if the user gave one: sessionStorage, this tab only
const thumbs = new Map();  // thumbnail URL -> blob URL, fetched with the key when one is set

function key() {
  return sessionStorage.getItem(KEY) || "";
}

function withKey(options) {
  const k = key();
  if (!k) return options || {};
  const headers = new Headers((options && options.headers) || {});
  headers.set("Authorization", "Bearer " + k);
  return Object.assign({}, options || {}, { headers: headers });
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

async function call(url, options) {
  // fetch, then the JSON answer, or an Error carrying the server's message in words
  let response;
  try {
    response = await fetch(url, withKey(options));
  } catch (e) {
    throw new Error("The server cannot be reached (" + e.message + ").");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (response.status === 401) {
    $("keybox").open = true;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.status + " " + response.statusText;
    const wait = response.headers.get("Retry-After");
    throw new Error(message + (wait ? " (try again in " + wait + " s)" : ""));
  }
  return body;
}

function k() {
  const value = parseInt($("k").value, 10);
  if (!(value >= 1 && value <= maxK)) {
    throw new Error("Neighbours must be a whole number from 1 to " + maxK + ".");
  }
  return value;
}

async function loadAbout() {
  try {
    const about = await call("/v1/index");
    maxK = Math.min(about.max_k, Math.max(1, about.count));
    $("k").max = String(maxK);
    if (parseInt($("k").value, 10) > maxK) $("k").value = String(maxK);
    $("about").textContent = "Index " + about.name + " · " + about.count.toLocaleString() + " images · model " +
      about.model + " (" + about.dim + "-d, " + about.metric + ")" + (about.ready ? "" : " · loading…");
    if (!about.ready) setTimeout(loadAbout, 1000);
    else if (about.count === 0) {
      $("status").textContent = "This index holds no images yet: add some (lookalike index add, or POST /v1/images " +
        "with a write key), then search.";
    }
  } catch (e) {
    $("about").textContent = "The index cannot be described: " + e.message;
  }
}

async function setThumbnail(img, url) {
  // with a key, an <img src> cannot send it: fetch the thumbnail and show it from a blob URL
  if (!key()) {
    img.src = url;
    return;
  }
  try {
    if (!thumbs.has(url)) {
      const response = await fetch(url, withKey());
      if (!response.ok) throw new Error(response.status + " " + response.statusText);
      thumbs.set(url, URL.createObjectURL(await response.blob()));
    }
    img.src = thumbs.get(url);
  } catch (e) {
    img.alt += " (thumbnail not loaded: " + e.message + ")";
  }
}

function showQuery(src, caption) {
  $("query").hidden = false;
  if (src.startsWith("/")) setThumbnail($("query-img"), src); else $("query-img").src = src;
  $("query-caption").textContent = caption;
}

// a distance to 3 decimals, never "-0.000" (a near copy's cosine distance can round below zero)
function shownDistance(d) {
  const text = d.toFixed(3);
  return text === "-0.000" ? "0.000" : text;
}

function showResults(result, what) {
  const grid = $("grid");
  grid.replaceChildren();
  for (const n of result.neighbours) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.id = String(n.id);
    button.setAttribute("aria-label", "Rank " + n.rank + ", image " + n.id + (n.label ? ", " + n.label : "") +
      ", distance " + shownDistance(n.distance) + ": show more like this");
    const img = document.createElement("img");
    setThumbnail(img, n.thumbnail);
    img.alt = "image " + n.id + (n.label ? " (" + n.label + ")" : "");
    img.loading = "lazy";
    const meta = document.createElement("span");
    meta.className = "meta";
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = "#" + n.rank + " · id " + n.id;
    const distance = document.createElement("span");
    distance.className = "distance";
    distance.textContent = shownDistance(n.distance);
    meta.append(rank, distance);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = n.label || "no label";
    const key = document.createElement("span");
    key.className = "label";
    key.textContent = n.key;
    key.title = n.key;
    button.append(img, meta, label, key);
    button.addEventListener("click", () => moreLike(n));
    item.append(button);
    grid.append(item);
  }
  $("status").textContent = result.neighbours.length + " nearest images to " + what + " (" +
    Math.round(result.took_ms) + " ms on the server). Click one for more like it.";
}

function busy(text) {
  showError("");
  $("status").textContent = text;
}

async function searchFile(file) {
  if (!file) return;
  try {
    const count = k();
    busy("Searching…");
    showQuery(URL.createObjectURL(file), file.name + " (" + Math.round(file.size / 1024) + " KB)");
    const form = new FormData();
    form.append("image", file, file.name);
    const result = await call("/v1/search?k=" + count, { method: "POST", body: form });
    showResults(result, "your photo");
  } catch (e) {
    $("grid").replaceChildren();
    $("query").hidden = true;
    $("status").textContent = "";
    showError("Search failed: " + e.message);
  }
}

async function moreLike(n) {
  try {
    const count = k();
    busy("Searching for images like " + n.id + "…");
    showQuery(n.thumbnail, "image " + n.id + (n.label ? " · " + n.label : "") + " · " + n.key);
    const result = await call("/v1/images/" + n.id + "/similar?k=" + count);
    showResults(result, "image " + n.id);
    const first = $("grid").querySelector("button");
    if (first) first.focus();
  } catch (e) {
    showError("Search failed: " + e.message);
  }
}

function setUpKey() {
  $("keystate").textContent = key() ? "a key is set" : "no key set";
  $("keyform").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("key").value.trim();
    if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
    $("key").value = "";
    thumbs.clear();
    $("keystate").textContent = value ? "a key is set" : "no key set";
    if (value) $("keybox").open = false;
    showError("");
    loadAbout();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    thumbs.clear();
    $("keystate").textContent = "no key set";
    loadAbout();
  });
}

function setUp() {
  setUpKey();
  const drop = $("drop");
  $("file").addEventListener("change", (event) => searchFile(event.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = event.dataTransfer.files;
    if (files.length !== 1) {
      showError("Drop one photo at a time (got " + files.length + ").");
      return;
    }
    searchFile(files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...event.clipboardData.files][0];
    if (file) searchFile(file);
  });
  loadAbout();
}

setUp();
