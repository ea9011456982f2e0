// The page of `clipmodule serve`: search (text or dropped image -> hits; a hit -> its neighbours), browse (a
// curation work folder's samples by decision) and the list of data cards. Routes live in the location hash:
//   #search?q=TEXT&index=NAME&page=N   #neighbours/INDEX/ID   #browse/DATASET?decision=D&q=TEXT&offset=N   #cards
"use strict";

const PER_PAGE = 24;
const state = { config: null, hits: [], page: 0, title: "" };
const $ = (id) => document.getElementById(id);

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

async function getJSON(url, options) {
  const reply = await fetch(url, options);
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error || reply.statusText);
  return body;
}

function route() {
  const [path, query] = (location.hash.slice(1) || "search").split("?");
  return { parts: path.split("/").map(decodeURIComponent), params: new URLSearchParams(query || "") };
}

function show(view) {
  for (const name of ["search", "browse", "cards"]) $(`${name}-view`).hidden = name !== view;
}

// ---- search ------------------------------------------------------------------------------------------
async function knn(body) {
  const page = state.page;
  const wanted = PER_PAGE * (page + 1);
  $("status").textContent = "searching…";
  const started = performance.now();
  try {
    state.hits = await getJSON("/knn-service", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...body, indice_name: $("index").value, num_images: wanted }),
    });
  } catch (error) {
    state.hits = [];
    $("status").textContent = `refused: ${error.message}`;
    renderHits();
    return;
  }
  $("status").textContent = `${state.title}: ${state.hits.length} hits in ${Math.round(performance.now() - started)} ms`;
  renderHits();
}

function renderHits() {
  const grid = $("results");
  grid.replaceChildren();
  const filter = $("caption-filter").value.toLowerCase();
  const shown = state.hits.slice(PER_PAGE * state.page, PER_PAGE * (state.page + 1))
    .filter((hit) => !filter || (hit.caption || "").toLowerCase().includes(filter));
  for (const hit of shown) {
    const tile = element("div", { class: "hit", "data-id": hit.id, "data-shard": hit.shard, "data-key": hit.key });
    tile.append(element("img", { src: hit.url, alt: hit.caption || hit.key, loading: "lazy" }),
      element("div", { class: "score" }, `#${hit.rank}  ${hit.similarity.toFixed(3)}`),
      element("div", { class: "caption" }, hit.caption || ""),
      element("div", { class: "where" }, `${hit.shard} / ${hit.key}`));
    tile.title = "its neighbours (image → image)";
    tile.addEventListener("click", () => { location.hash = `neighbours/${encodeURIComponent($("index").value)}/${hit.id}`; });
    grid.append(tile);
  }
  $("page-label").textContent = `page ${state.page + 1}`;
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.hits.length < PER_PAGE * (state.page + 1);
}

function searchRoute(parts, params) {
  show("search");
  if (params.get("index")) $("index").value = params.get("index");
  state.page = Number(params.get("page") || 0);
  if (parts[0] === "neighbours") {
    $("index").value = parts[1];
    state.title = `neighbours of #${parts[2]}`;
    return loadNeighbours(parts[1], parts[2]);
  }
  const text = params.get("q");
  if (!text) return;
  $("query").value = text;
  state.title = `“${text}”`;
  return knn({ text });
}

async function loadNeighbours(index, id) {
  $("status").textContent = "searching…";
  try {
    state.hits = await getJSON(`/api/neighbours/${encodeURIComponent(index)}/${id}?k=${PER_PAGE * (state.page + 1)}`);
    $("status").textContent = `${state.title}: ${state.hits.length} hits`;
  } catch (error) {
    state.hits = [];
    $("status").textContent = `refused: ${error.message}`;
  }
  renderHits();
}

function searchImage(file) {
  const reader = new FileReader();
  reader.onload = () => {
    state.page = 0;
    state.title = `image ${file.name}`;
    knn({ image: reader.result.split(",", 2)[1] });
  };
  reader.readAsDataURL(file);  // read in the page; the service keeps it in memory only
}

function setPage(page) {
  const { parts, params } = route();
  params.set("page", page);
  if (parts[0] === "search" || parts[0] === "neighbours") location.hash = `${parts.map(encodeURIComponent).join("/")}?${params}`;
  else { state.page = page; renderHits(); }
}

// ---- browse ------------------------------------------------------------------------------------------
function decisionsText(sample) {
  const facts = [];
  if (sample.queries && sample.queries.length) {
    const chance = (q) => q.coin == null ? ` (p ${q.keep_chance.toFixed(2)})`
      : ` (coin ${q.coin.toFixed(2)} ${q.coin < q.keep_chance ? "<" : "≥"} p ${q.keep_chance.toFixed(2)})`;
    facts.push("queries: " + sample.queries.map((q) => q.keep_chance == null ? q.term : q.term + chance(q)).join(", "));
  }
  if (sample.cap) facts.push(`cap: ${sample.cap}`);
  if (sample.download) facts.push(`download: ${sample.download.status}${sample.download.error ? " — " + sample.download.error : ""}`);
  if (sample.filter) facts.push(`filter: CLIP score ${sample.filter.clip_score == null ? "–" : sample.filter.clip_score.toFixed(3)}, ${sample.filter.kept ? "kept" : "dropped for " + sample.filter.reason}`);
  if (sample.dedup) facts.push(`dedup: duplicate of ${sample.dedup.duplicate_of_shard}:${sample.dedup.duplicate_of_key} (cosine ${sample.dedup.cosine.toFixed(3)})`);
  if (sample.decontamination) {
    const d = sample.decontamination;
    facts.push(`decontamination: matches ${d.eval_image} (${d.pass}${d.distance == null ? "" : ", distance " + d.distance}${d.cosine == null ? "" : ", cosine " + d.cosine.toFixed(3)})`);
  }
  return facts;
}

function sampleRow(dataset, sample) {
  const row = element("tr", { class: "sample", "data-decision": sample.decision });
  const picture = element("td");
  if (sample.shard) picture.append(element("img", { src: `/browse-image/${encodeURIComponent(dataset)}/${encodeURIComponent(sample.shard)}/${encodeURIComponent(sample.key)}`, alt: sample.key, loading: "lazy" }));
  const text = element("td");
  text.append(element("div", { class: "caption" }, sample.caption || ""), element("div", { class: "url" }, sample.url || ""));
  if (sample.shard) text.append(element("div", { class: "url" }, `${sample.shard} / ${sample.key}`));
  const size = element("td", {}, sample.width ? `${sample.width}×${sample.height} (from ${sample.original_width}×${sample.original_height})` : "");
  const decisions = element("td");
  decisions.append(element("div", { class: `decision ${sample.decision === "kept" ? "kept" : "dropped"}` }, sample.decision));
  const list = element("ul", { class: "facts" });
  for (const fact of decisionsText(sample)) list.append(element("li", {}, fact));
  decisions.append(list);
  row.append(picture, text, size, decisions);
  return row;
}

async function browseRoute(parts, params) {
  show("browse");
  const dataset = parts[1];
  const offset = Number(params.get("offset") || 0);
  $("browse-title").textContent = `Browse ${dataset}`;
  $("browse-filter").value = params.get("q") || "";
  let page;
  $("browse-status").textContent = "reading the stage outputs…";
  try {
    page = await getJSON(`/api/browse/${encodeURIComponent(dataset)}?${params}`);
  } catch (error) {
    $("browse-status").textContent = `refused: ${error.message}`;
    return;
  }
  const select = $("decision");
  select.replaceChildren(element("option", { value: "" }, "every sample"));
  for (const [decision, count] of Object.entries(page.decisions)) {
    select.append(element("option", { value: decision }, `${decision} (${count})`));
  }
  select.value = params.get("decision") || "";
  $("browse-status").textContent = `${page.total} samples (stages found: ${page.stages.join(", ") || "none"})`;
  $("browse-page").textContent = `${offset + 1}–${offset + page.rows.length} of ${page.total}`;
  $("browse-prev").disabled = offset === 0;
  $("browse-next").disabled = offset + page.rows.length >= page.total;
  $("samples").tBodies[0].replaceChildren(...page.rows.map((sample) => sampleRow(dataset, sample)));
}

function browseTo(changes) {
  const { parts, params } = route();
  for (const [name, value] of Object.entries(changes)) value === "" ? params.delete(name) : params.set(name, value);
  location.hash = `browse/${encodeURIComponent(parts[1])}?${params}`;
}

// ---- cards and start ---------------------------------------------------------------------------------
function cardsRoute() {
  show("cards");
  const list = $("cards-list");
  list.replaceChildren();
  for (const name of state.config.cards) {
    const item = element("li");
    item.append(element("a", { href: `/cards/${encodeURIComponent(name)}`, class: "card-link" }, name));
    list.append(item);
  }
  if (!state.config.cards.length) list.append(element("li", {}, "no cards folder was given (--cards)"));
}

function render() {
  const { parts, params } = route();
  if (parts[0] === "browse") return browseRoute(parts, params);
  if (parts[0] === "cards") return cardsRoute();
  return searchRoute(parts, params);
}

function wire() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `search?${new URLSearchParams({ q: $("query").value, index: $("index").value })}`;
  });
  $("image-file").addEventListener("change", () => $("image-file").files[0] && searchImage($("image-file").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files[0]) searchImage(event.dataTransfer.files[0]);
  });
  $("caption-filter").addEventListener("input", renderHits);
  $("prev").addEventListener("click", () => setPage(state.page - 1));
  $("next").addEventListener("click", () => setPage(state.page + 1));
  $("decision").addEventListener("change", () => browseTo({ decision: $("decision").value, offset: "" }));
  $("browse-filter").addEventListener("change", () => browseTo({ q: $("browse-filter").value, offset: "" }));
  $("browse-prev").addEventListener("click", () => browseTo({ offset: Math.max(0, Number(route().params.get("offset") || 0) - 50) }));
  $("browse-next").addEventListener("click", () => browseTo({ offset: Number(route().params.get("offset") || 0) + 50 }));
  window.addEventListener("hashchange", render);
}

async function start() {
  state.config = await getJSON("/api/config");
  for (const name of state.config.indices) $("index").append(element("option", { value: name }, name));
  for (const name of state.config.datasets) {
    $("nav-datasets").append(element("a", { href: `#browse/${encodeURIComponent(name)}`, class: "browse-link" }, `browse ${name}`));
  }
  if (state.config.mlflow_ui) $("nav-mlflow").append(element("a", { href: state.config.mlflow_ui, id: "mlflow-link" }, "MLflow runs"));
  if (!state.config.indices.length) $("search-form").hidden = true;
  wire();
  render();
}

start();
