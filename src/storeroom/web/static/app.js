// Storeroom's dashboard: calls the JSON API with the session cookie (and the session's CSRF
// token on every change), and follows jobs live over Server-Sent Events.
"use strict";

(() => {
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const eventsMeta = document.querySelector('meta[name="events-url"]');
  const PAGE_SIZE = 20;
  const $ = (id) => document.getElementById(id);

  // --- plumbing ------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.detail) || `Request failed (${status})`);
      this.status = status;
      this.body = body || {};
    }
  }

  function signInAgain() {
    window.location.assign("/login?next=" + encodeURIComponent("/app"));
  }

  async function api(method, path, { json, headers = {} } = {}) {
    const sent = { Accept: "application/json", ...headers };
    let body;
    if (method !== "GET") sent["X-CSRF-Token"] = csrfToken;
    if (json !== undefined) {
      sent["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    const response = await fetch(path, {
      method, headers: sent, body, credentials: "same-origin", cache: "no-store",
    });
    let data = null;
    if (response.status !== 204 && response.status !== 304) {
      const text = await response.text();
      try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    }
    if (response.status === 401) {
      signInAgain();
      throw new ApiError(401, data);
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return { data, headers: response.headers };
  }

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function announce(message) {
    $("live-status").textContent = message;
  }

  function localTime(iso) {
    if (!iso) return "";
    return el("time", { datetime: iso, text: new Date(iso).toLocaleString() });
  }

  function fileSize(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  }

  function setError(id, message) {
    const node = $(id);
    if (!node) return false;
    node.textContent = message || "";
    node.hidden = !message;
    return true;
  }

  // Shows an API error next to the field it concerns (the 422 body's `errors[].loc`), or in
  // the form's own error line.
  function showApiError(prefix, error) {
    clearErrors(prefix);
    const errors = (error.body && error.body.errors) || [];
    let placed = false;
    for (const entry of errors) {
      const field = (entry.loc || []).find((part) => !["body", "query", "path"].includes(part));
      if (field === undefined) continue;
      const input = $(`${prefix}-${field}`);
      if (setError(`${prefix}-${field}-error`, entry.msg.replace(/^Value error, /, ""))) {
        if (input) input.setAttribute("aria-invalid", "true");
        placed = true;
      }
    }
    if (!placed) setError(`${prefix}-error`, error.message);
  }

  function clearErrors(prefix) {
    for (const node of document.querySelectorAll(`[id^="${prefix}-"][id$="-error"]`)) {
      node.textContent = "";
      node.hidden = true;
    }
    for (const node of document.querySelectorAll(`[id^="${prefix}-"][aria-invalid]`)) {
      node.removeAttribute("aria-invalid");
    }
  }

  function tagList(text) {
    return text.split(",").map((tag) => tag.trim()).filter(Boolean);
  }

  // --- items ---------------------------------------------------------------------------------

  const items = { offset: 0, total: 0, q: "", tag: "" };
  const editing = { id: null, etag: null };

  async function loadItems() {
    const params = new URLSearchParams({ offset: items.offset, limit: PAGE_SIZE });
    if (items.q) params.set("q", items.q);
    if (items.tag) params.append("tag", items.tag);
    let page;
    try {
      page = (await api("GET", `/api/v1/items?${params}`)).data;
      setError("search-error", "");
    } catch (error) {
      setError("search-error", error.message);
      return;
    }
    items.total = page.total;
    const body = $("items-body");
    body.replaceChildren(...page.items.map(itemRow));
    const filtered = items.q || items.tag;
    $("items-empty").textContent = filtered
      ? "No items match this search."
      : "No items yet. Add one below, or import a CSV file.";
    $("items-empty").hidden = page.items.length > 0;
    $("items-table").hidden = page.items.length === 0;
    const first = page.items.length ? items.offset + 1 : 0;
    $("items-range").textContent = `${first}–${items.offset + page.items.length} of ${page.total}`;
    $("items-prev").disabled = items.offset === 0;
    $("items-next").disabled = items.offset + PAGE_SIZE >= page.total;
  }

  function itemRow(item) {
    return el("tr", { "data-item-id": item.id },
      el("td", { text: item.name }),
      el("td", { class: "num", text: item.price }),
      el("td", { class: "num", text: item.tax }),
      el("td", {}, ...item.tags.map((tag) => el("span", { class: "tag", text: tag }))),
      el("td", {}, localTime(item.updated_at)),
      el("td", {}, el("button", {
        type: "button", class: "secondary", text: "Edit",
        "aria-label": `Edit ${item.name}`, onclick: () => openEditor(item.id),
      })),
    );
  }

  function itemFields(prefix, { partial = false } = {}) {
    const value = (name) => $(`${prefix}-${name}`).value;
    const data = {
      name: value("name"),
      price: value("price").trim(),
      tags: tagList(value("tags")),
      description: value("description") || null,
    };
    const tax = value("tax").trim();
    if (tax || partial) data.tax = tax || "0";
    if (!partial && data.description === null) delete data.description;
    return data;
  }

  async function createItem(event) {
    event.preventDefault();
    clearErrors("create");
    try {
      await api("POST", "/api/v1/items", { json: itemFields("create") });
    } catch (error) {
      showApiError("create", error);
      return;
    }
    $("item-create").reset();
    announce("Item added.");
    items.offset = 0;
    await loadItems();
  }

  async function openEditor(itemId) {
    clearErrors("edit");
    let response;
    try {
      response = await api("GET", `/api/v1/items/${itemId}`);
    } catch (error) {
      announce(error.message);
      await loadItems();
      return;
    }
    const item = response.data;
    editing.id = item.id;
    editing.etag = response.headers.get("ETag");
    $("item-editor-heading").textContent = `Edit “${item.name}”`;
    $("edit-name").value = item.name;
    $("edit-price").value = item.price;
    $("edit-tax").value = item.tax;
    $("edit-tags").value = item.tags.join(", ");
    $("edit-description").value = item.description || "";
    $("item-editor-reload").hidden = true;
    $("item-editor").hidden = false;
    $("edit-name").focus();
  }

  function closeEditor() {
    editing.id = null;
    editing.etag = null;
    $("item-editor").hidden = true;
  }

  function showConflict() {
    setError("edit-error",
      "This item was changed somewhere else (another tab or app) since you opened it. " +
      "Your changes were not saved: load the latest version and make them again.");
    $("item-editor-reload").hidden = false;
    $("item-editor-reload").focus();
  }

  async function saveItem(event) {
    event.preventDefault();
    clearErrors("edit");
    try {
      await api("PATCH", `/api/v1/items/${editing.id}`, {
        json: itemFields("edit", { partial: true }), headers: { "If-Match": editing.etag },
      });
    } catch (error) {
      if (error.status === 412) showConflict();
      else showApiError("edit", error);
      return;
    }
    closeEditor();
    announce("Item saved.");
    await loadItems();
  }

  async function deleteItem() {
    clearErrors("edit");
    try {
      await api("DELETE", `/api/v1/items/${editing.id}`, { headers: { "If-Match": editing.etag } });
    } catch (error) {
      if (error.status === 412) showConflict();
      else showApiError("edit", error);
      return;
    }
    closeEditor();
    announce("Item deleted.");
    await loadItems();
  }

  // --- files ---------------------------------------------------------------------------------

  const IMPORTABLE = /\.(csv|ndjson|jsonl)$/i;

  async function loadFiles() {
    let page;
    try {
      page = (await api("GET", "/api/v1/files?limit=100")).data;
    } catch (error) {
      announce(error.message);
      return;
    }
    $("files-list").replaceChildren(...page.items.map(fileRow));
    $("files-empty").hidden = page.items.length > 0;
  }

  function fileRow(file) {
    const importable = IMPORTABLE.test(file.filename) || /csv|ndjson/.test(file.content_type);
    return el("li", { "data-file-id": file.id },
      el("span", { class: "grow" },
        el("a", { href: `/api/v1/files/${file.id}/content`, download: file.filename, text: file.filename }),
        " ",
        el("span", { class: "meta" }, `${fileSize(file.size)} · `, localTime(file.created_at)),
      ),
      importable ? el("button", {
        type: "button", text: "Import items", "aria-label": `Import items from ${file.filename}`,
        onclick: () => startJob({ type: "import_items", file_id: file.id }),
      }) : null,
      el("button", {
        type: "button", class: "danger", text: "Delete", "aria-label": `Delete ${file.filename}`,
        onclick: () => deleteFile(file),
      }),
    );
  }

  async function deleteFile(file) {
    try {
      await api("DELETE", `/api/v1/files/${file.id}`);
    } catch (error) {
      announce(error.message);
      return;
    }
    announce(`${file.filename} deleted.`);
    await loadFiles();
  }

  function upload(event) {
    event.preventDefault();
    clearErrors("upload");
    const input = $("upload-file");
    if (!input.files.length) {
      setError("upload-error", "Choose a file first.");
      return;
    }
    const form = new FormData();
    form.append("file", input.files[0]);
    const progress = $("upload-progress");
    const percent = $("upload-percent");
    progress.value = 0;
    progress.hidden = false;
    const request = new XMLHttpRequest();
    request.open("POST", "/api/v1/files");
    request.setRequestHeader("X-CSRF-Token", csrfToken);
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", (progressEvent) => {
      if (!progressEvent.lengthComputable) return;
      const done = Math.round((100 * progressEvent.loaded) / progressEvent.total);
      progress.value = done;
      percent.textContent = `${done} %`;
    });
    request.addEventListener("load", async () => {
      if (request.status === 201) {
        progress.value = 100;
        percent.textContent = "Uploaded.";
        $("upload-form").reset();
        announce("File uploaded.");
        await loadFiles();
        return;
      }
      if (request.status === 401) signInAgain();
      let body = null;
      try { body = JSON.parse(request.responseText); } catch (_) { body = null; }
      progress.hidden = true;
      percent.textContent = "";
      showApiError("upload", new ApiError(request.status, body));
      if ($("upload-error").hidden) setError("upload-error", (body && body.detail) || "Upload failed.");
    });
    request.addEventListener("error", () => {
      progress.hidden = true;
      setError("upload-error", "The upload was interrupted; try again.");
    });
    request.send(form);
  }

  // --- jobs ----------------------------------------------------------------------------------

  const jobs = new Map();
  const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

  function jobPercent(job) {
    if (job.status === "succeeded") return 100;
    const { done, total } = job.progress;
    if (!total) return null;
    return Math.min(100, Math.floor((100 * done) / total));
  }

  function jobTitle(job) {
    if (job.type === "import_items") return "Import";
    return `Export (${(job.params.format || "csv").toUpperCase()})`;
  }

  function jobResult(job) {
    if (job.status === "failed") return el("span", { class: "field-error", text: job.error || "Failed." });
    if (job.status !== "succeeded" || !job.result) return null;
    if (job.type === "import_items") {
      const errors = job.result.error_count ? `, ${job.result.error_count} rows skipped` : "";
      return el("span", { text: `${job.result.imported} items imported${errors}.` });
    }
    return el("a", {
      href: `/api/v1/files/${job.result.file_id}/content`, class: "download-export",
      text: `Download (${job.result.rows} items)`,
    });
  }

  function jobRow(job) {
    const percent = jobPercent(job);
    const progress = el("progress", {
      max: 100, "aria-label": `${jobTitle(job)} progress`, class: "job-progress",
      value: percent === null ? null : percent,
    });
    return el("li", { id: `job-${job.id}`, "data-status": job.status },
      el("span", { class: "grow" },
        el("strong", { text: jobTitle(job) }), " ",
        el("span", { class: `status-${job.status}`, text: job.status }), " ",
        el("span", { class: "meta" }, localTime(job.created_at)),
      ),
      progress,
      el("span", { class: "job-percent", text: percent === null ? "" : `${percent} %` }),
      jobResult(job),
    );
  }

  function renderJob(job) {
    const previous = jobs.get(job.id);
    jobs.set(job.id, job);
    const row = jobRow(job);
    const existing = $(`job-${job.id}`);
    if (existing) existing.replaceWith(row);
    else $("jobs-list").prepend(row);
    $("jobs-empty").hidden = true;
    const justFinished = FINISHED.has(job.status) && !(previous && FINISHED.has(previous.status));
    if (justFinished) {
      announce(`${jobTitle(job)} ${job.status}.`);
      if (job.type === "import_items") loadItems();
      else loadFiles();
    }
    watchJobs();
  }

  async function loadJobs() {
    let page;
    try {
      page = (await api("GET", "/api/v1/jobs?limit=10")).data;
    } catch (error) {
      announce(error.message);
      return;
    }
    jobs.clear();
    $("jobs-list").replaceChildren(...page.items.map((job) => {
      jobs.set(job.id, job);
      return jobRow(job);
    }));
    $("jobs-empty").hidden = page.items.length > 0;
    watchJobs();
  }

  async function startJob(body) {
    setError("jobs-error", "");
    let job;
    try {
      job = (await api("POST", "/api/v1/jobs", { json: body })).data;
    } catch (error) {
      setError("jobs-error", error.message);
      return;
    }
    // Its events may have overtaken this response: never show an older state over them.
    if (!jobs.has(job.id)) renderJob(job);
    announce(`${jobTitle(job)} started.`);
    $("jobs").scrollIntoView({ block: "nearest" });
  }

  // Jobs move live over the events stream; where there is none (or it has closed), the
  // unfinished ones are polled until they end.
  let pollTimer = null;

  function liveEventsOpen() {
    return events !== null && events.readyState !== EventSource.CLOSED;
  }

  function watchJobs() {
    const active = [...jobs.values()].some((job) => !FINISHED.has(job.status));
    if (!active || liveEventsOpen() || pollTimer !== null) return;
    pollTimer = window.setTimeout(pollJobs, 300);
  }

  async function pollJobs() {
    pollTimer = null;
    for (const job of [...jobs.values()]) {
      if (FINISHED.has(job.status)) continue;
      try {
        renderJob((await api("GET", `/api/v1/jobs/${job.id}`)).data);
      } catch (_) {
        jobs.delete(job.id);
      }
    }
    watchJobs();
  }

  // --- live events ---------------------------------------------------------------------------

  let events = null;
  let itemsReload = null;
  let filesReload = null;

  function later(timer, load) {
    if (timer !== null) window.clearTimeout(timer);
    return window.setTimeout(load, 150);
  }

  function followEvents(url) {
    events = new EventSource(url);
    // Each event's data is an envelope {id, type, created_at, data}: the job is its `data`.
    const payload = (event) => {
      const body = JSON.parse(event.data);
      return body && body.type && body.data ? body.data : body;
    };
    const onJob = (event) => renderJob(payload(event));
    for (const type of ["queued", "progress", "succeeded", "failed", "cancelled"]) {
      events.addEventListener(`job.${type}`, onJob);
    }
    for (const type of ["item.created", "item.updated", "item.deleted"]) {
      events.addEventListener(type, () => { itemsReload = later(itemsReload, loadItems); });
    }
    for (const type of ["file.created", "file.deleted"]) {
      events.addEventListener(type, () => { filesReload = later(filesReload, loadFiles); });
    }
    events.addEventListener("reset", () => loadAll());
    events.addEventListener("error", () => {
      if (events.readyState === EventSource.CLOSED) watchJobs();
    });
  }

  // --- API keys ------------------------------------------------------------------------------

  async function loadKeys() {
    let page;
    try {
      page = (await api("GET", "/api/v1/users/me/api-keys?limit=100")).data;
    } catch (error) {
      announce(error.message);
      return;
    }
    $("keys-list").replaceChildren(...page.items.map(keyRow));
    $("keys-empty").hidden = page.items.length > 0;
  }

  function keyRow(key) {
    const used = key.last_used_at ? ["last used ", localTime(key.last_used_at)] : ["never used"];
    return el("li", { "data-key-id": key.id },
      el("span", { class: "grow" },
        el("strong", { text: key.name }), " ",
        el("code", { text: `${key.prefix}…` }), " ",
        el("span", { class: "meta" },
          `${key.scope === "read" ? "read only" : "read and write"} · created `,
          localTime(key.created_at), " · ", ...used),
      ),
      el("button", {
        type: "button", class: "danger", text: "Revoke", "aria-label": `Revoke ${key.name}`,
        onclick: () => revokeKey(key),
      }),
    );
  }

  async function createKey(event) {
    event.preventDefault();
    clearErrors("key");
    let created;
    try {
      created = (await api("POST", "/api/v1/users/me/api-keys", {
        json: { name: $("key-name").value, scope: $("key-scope").value },
      })).data;
    } catch (error) {
      showApiError("key", error);
      return;
    }
    $("key-create").reset();
    $("key-value").textContent = created.key;
    $("key-created").hidden = false;
    await loadKeys();
  }

  async function revokeKey(key) {
    try {
      await api("DELETE", `/api/v1/users/me/api-keys/${key.id}`);
    } catch (error) {
      announce(error.message);
      return;
    }
    $("key-created").hidden = true;
    announce(`Key ${key.name} revoked.`);
    await loadKeys();
  }

  // --- start ---------------------------------------------------------------------------------

  function loadAll() {
    return Promise.all([loadItems(), loadFiles(), loadJobs(), loadKeys()]);
  }

  $("item-search").addEventListener("submit", (event) => {
    event.preventDefault();
    items.q = $("search-q").value.trim();
    items.tag = $("search-tag").value.trim();
    items.offset = 0;
    loadItems();
  });
  $("search-clear").addEventListener("click", () => {
    $("item-search").reset();
    items.q = "";
    items.tag = "";
    items.offset = 0;
    loadItems();
  });
  $("items-prev").addEventListener("click", () => {
    items.offset = Math.max(0, items.offset - PAGE_SIZE);
    loadItems();
  });
  $("items-next").addEventListener("click", () => {
    items.offset += PAGE_SIZE;
    loadItems();
  });
  $("item-create").addEventListener("submit", createItem);
  $("item-editor").addEventListener("submit", saveItem);
  $("item-editor-cancel").addEventListener("click", closeEditor);
  $("item-editor-reload").addEventListener("click", () => openEditor(editing.id));
  $("item-editor-delete").addEventListener("click", deleteItem);
  $("upload-form").addEventListener("submit", upload);
  $("export-csv").addEventListener("click", () => startJob({ type: "export_items", format: "csv" }));
  $("export-ndjson").addEventListener("click", () => startJob({ type: "export_items", format: "ndjson" }));
  $("key-create").addEventListener("submit", createKey);

  if (eventsMeta && "EventSource" in window) followEvents(eventsMeta.content);
  loadAll().then(() => document.body.setAttribute("data-ready", "true"));
})();
