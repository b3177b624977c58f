// duanlian's operator page: create links, bulk-create, browse, statistics, edit.
// Plain JavaScript talking to the admin API on the same origin; no external requests.
"use strict";

const T = {
  en: {
    title: "Short links", tab_create: "Create", tab_bulk: "Bulk", tab_links: "Links", logout: "Sign out",
    login_title: "API key", login_help: "Enter the admin API key. It is kept for this browser session only.",
    api_key: "API key", login: "Continue", bad_key: "That key was not accepted.",
    create_title: "Create a short link", long_url: "Long URL", domain: "Link domain", validity: "Valid for",
    v_1d: "1 day", v_7d: "7 days", v_30d: "30 days", v_1y: "1 year", v_forever: "Permanent", v_date: "Until a date…",
    custom_code: "Custom code (optional)", max_visits: "Max visits (optional)", create: "Create",
    your_link: "Your short link", copy: "Copy", copied: "Copied", target: "Target", expires: "Expires",
    never: "never", bulk_title: "Many links at once", bulk_urls: "Long URLs, one per line", create_all: "Create all",
    download_csv: "Download CSV", short_link: "Short link", links_title: "Links", search: "Search code or target",
    code: "Code", created: "Created", visits: "Visits", prev: "Previous", next: "Next", no_links: "No links.",
    bots: "Bots", per_day: "Visits per day", referrers: "Referrers", devices: "Devices", edit: "Edit",
    save: "Save", delete: "Delete", saved: "Saved", confirm_delete: "Delete this link? It stops redirecting at once.",
    no_urls: "Paste at least one URL.", line: "line", direct: "(direct)", none_yet: "No visits yet.",
    mobile: "mobile", desktop: "desktop", other: "other", bot: "bot", expired: "expired", in_days: "in {n} days",
    request_failed: "The request failed",
  },
  zh: {
    title: "短链接", tab_create: "生成", tab_bulk: "批量", tab_links: "链接", logout: "退出",
    login_title: "API 密钥", login_help: "请输入管理 API 密钥，仅在本次浏览器会话中保存。",
    api_key: "API 密钥", login: "继续", bad_key: "密钥无效。",
    create_title: "生成短链接", long_url: "长链接", domain: "短链域名", validity: "有效期",
    v_1d: "1 天", v_7d: "7 天", v_30d: "30 天", v_1y: "1 年", v_forever: "永久", v_date: "指定日期…",
    custom_code: "自定义短码（可选）", max_visits: "最大访问次数（可选）", create: "生成",
    your_link: "您的短链接", copy: "复制", copied: "已复制", target: "目标", expires: "过期时间",
    never: "永不过期", bulk_title: "批量生成", bulk_urls: "长链接，每行一个", create_all: "全部生成",
    download_csv: "下载 CSV", short_link: "短链接", links_title: "链接列表", search: "搜索短码或目标",
    code: "短码", created: "创建时间", visits: "访问量", prev: "上一页", next: "下一页", no_links: "没有链接。",
    bots: "机器人", per_day: "每日访问量", referrers: "来源", devices: "设备", edit: "编辑",
    save: "保存", delete: "删除", saved: "已保存", confirm_delete: "确定删除此链接？删除后立即停止跳转。",
    no_urls: "请至少粘贴一个链接。", line: "第", direct: "（直接访问）", none_yet: "暂无访问。",
    mobile: "手机", desktop: "电脑", other: "其他", bot: "机器人", expired: "已过期", in_days: "{n} 天后",
    request_failed: "请求失败",
  },
};

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const state = { lang: "en", key: null, domains: [], cursors: [null], page: 0, next: null, selected: null };

function t(k, vars) {
  let s = (T[state.lang] && T[state.lang][k]) || T.en[k] || k;
  for (const [name, v] of Object.entries(vars || {})) s = s.replace(`{${name}}`, v);
  return s;
}

function applyLang() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  for (const el of $$("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  $("#lang-switch").textContent = state.lang === "zh" ? "English" : "中文";
}

function setLang(lang) {
  state.lang = lang;
  sessionStorage.setItem("duanlian-lang", lang);
  applyLang();
  if (state.key) { renderList(state.lastList || []); if (state.selected) openDetail(state.selected); }
}

// --- the API ---

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

async function api(method, path, body, as) {
  const headers = { Authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 204) return null;
  const type = r.headers.get("content-type") || "";
  if (!r.ok) {
    const problem = type.includes("json") ? await r.json().catch(() => null) : null;
    if (r.status === 401 && path !== "/domains") signOut();
    throw new ApiError(r.status, problem);
  }
  if (as === "blob") return r.blob();
  return type.includes("json") ? r.json() : r.text();
}

// Field errors go next to their field; anything else to the form's general slot.
function clearErrors(form) {
  for (const el of $$("[data-error-for]", form)) el.textContent = "";
  for (const el of $$(".invalid", form)) el.classList.remove("invalid");
}

const FIELD_ALIASES = { expires_in: "expires_at", valid_since: "expires_at" };

function showErrors(form, err) {
  clearErrors(form);
  const fields = (err.problem && err.problem.invalid_fields) || [];
  let shown = false;
  for (const f of fields) {
    const name = FIELD_ALIASES[f.name] || f.name;
    const slot = $(`[data-error-for="${name}"]`, form);
    if (slot) {
      slot.textContent += (slot.textContent ? " " : "") + f.reason;
      const input = slot.parentElement && slot.parentElement.querySelector("input, select, textarea");
      if (input) input.classList.add("invalid");
      shown = true;
    }
  }
  if (!shown) {
    const slot = $('[data-error-for="_form"]', form);
    if (slot) slot.textContent = `${t("request_failed")}: ${err.message}`;
  }
}

// --- formatting ---

function fmtTime(secs) {
  if (secs === null || secs === undefined) return t("never");
  return new Date(secs * 1000).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB", {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
  });
}

function fmtExpires(secs) {
  if (secs === null || secs === undefined) return t("never");
  const days = Math.round((secs * 1000 - Date.now()) / 86400000);
  const rel = secs * 1000 < Date.now() ? t("expired") : t("in_days", { n: days });
  return `${fmtTime(secs)} (${rel})`;
}

// The validity select as create fields: a period, a date, or permanent.
function validityFields(select, dateInput) {
  const v = select.value;
  if (v === "date") {
    return dateInput.value ? { expires_at: new Date(dateInput.value).toISOString() } : { expires_at: "" };
  }
  return v ? { expires_in: v } : {};
}

// --- sign-in ---

function signOut() {
  state.key = null;
  sessionStorage.removeItem("duanlian-key");
  showApp(false);
}

function showApp(on) {
  $("#login").hidden = on;
  $("#tabs").hidden = !on;
  $("#logout").hidden = !on;
  if (!on) { for (const s of $$(".tab")) s.hidden = true; $("#api-key").focus(); return; }
  showTab("create");
}

async function signIn(key) {
  state.key = key;
  const d = await api("GET", "/domains");
  state.domains = d.domains.map((x) => x.domain);
  for (const id of ["#domain", "#bulk-domain", "#list-domain"]) {
    const sel = $(id);
    sel.replaceChildren(...state.domains.map((name) => new Option(name, name)));
  }
  sessionStorage.setItem("duanlian-key", key);
  showApp(true);
}

function showTab(name) {
  for (const b of $$("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of $$(".tab")) s.hidden = s.id !== `tab-${name}`;
  if (name === "links") loadList(true);
}

// --- create ---

async function showQr(img, link) {
  const blob = await api("GET", `/links/${encodeURIComponent(link.domain)}/${encodeURIComponent(link.code)}/qr.svg`, undefined, "blob");
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  img.dataset.url = URL.createObjectURL(blob);
  img.src = img.dataset.url;
}

async function onCreate(ev) {
  ev.preventDefault();
  const form = ev.target;
  clearErrors(form);
  const body = { url: $("#url").value.trim(), domain: $("#domain").value, ...validityFields($("#validity"), $("#expires-date")) };
  const code = $("#code").value.trim();
  if (code) body.code = code;
  const max = $("#max-visits").value.trim();
  if (max) body.max_visits = Number(max);
  try {
    const link = await api("POST", "/links", body);
    const a = $("#short-url");
    a.textContent = link.short_url;
    a.href = link.short_url;
    a.dataset.domain = link.domain;
    a.dataset.code = link.code;
    $("#result-target").textContent = link.url;
    $("#result-expires").textContent = fmtExpires(link.expires_at);
    $("#copied").hidden = true;
    $("#result").hidden = false;
    await showQr($("#qr"), link);
  } catch (err) {
    $("#result").hidden = true;
    showErrors(form, err);
  }
}

async function onCopy() {
  const text = $("#short-url").textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Without clipboard permission (plain http), select the text for a manual copy.
    const range = document.createRange();
    range.selectNodeContents($("#short-url"));
    const sel = getSelection(); sel.removeAllRanges(); sel.addRange(range);
    document.execCommand && document.execCommand("copy");
  }
  $("#copied").hidden = false;
}

// --- bulk ---

function csvField(s) {
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

async function onBulk(ev) {
  ev.preventDefault();
  const errors = $("#bulk-errors");
  errors.replaceChildren();
  const lines = $("#bulk-urls").value.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  if (!lines.length) { errors.append(Object.assign(document.createElement("li"), { textContent: t("no_urls") })); return; }
  const common = { domain: $("#bulk-domain").value, ...validityFields($("#bulk-validity"), { value: "" }) };
  try {
    const res = await api("POST", "/links/batch", { links: lines.map((url) => ({ url, ...common })) });
    const rows = res.links.map((l) => {
      const tr = document.createElement("tr");
      const a = Object.assign(document.createElement("a"), { href: l.short_url, textContent: l.short_url, target: "_blank" });
      const td1 = document.createElement("td"); td1.append(a);
      const td2 = Object.assign(document.createElement("td"), { textContent: l.url, className: "target" });
      tr.append(td1, td2);
      return tr;
    });
    $("#bulk-table tbody").replaceChildren(...rows);
    const csv = ["short_url,url,expires", ...res.links.map((l) => [l.short_url, l.url, l.expires || ""].map(csvField).join(","))].join("\r\n");
    const link = $("#bulk-csv");
    if (link.dataset.url) URL.revokeObjectURL(link.dataset.url);
    link.dataset.url = URL.createObjectURL(new Blob([csv + "\r\n"], { type: "text/csv" }));
    link.href = link.dataset.url;
    $("#bulk-result").hidden = false;
  } catch (err) {
    // Batch errors name `links[i].field`: show them by line.
    const fields = (err.problem && err.problem.invalid_fields) || [];
    const items = fields.length ? fields.map((f) => {
      const m = /^links\[(\d+)\]\.(.*)$/.exec(f.name);
      return m ? `${t("line")} ${Number(m[1]) + 1}: ${lines[Number(m[1])]} — ${f.reason}` : `${f.name}: ${f.reason}`;
    }) : [`${t("request_failed")}: ${err.message}`];
    errors.replaceChildren(...items.map((s) => Object.assign(document.createElement("li"), { textContent: s })));
    $("#bulk-result").hidden = true;
  }
}

// --- list, detail, edit ---

async function loadList(reset) {
  if (reset) { state.cursors = [null]; state.page = 0; }
  const params = new URLSearchParams({ domain: $("#list-domain").value, limit: "20" });
  const q = $("#list-q").value.trim();
  if (q) params.set("q", q);
  const cursor = state.cursors[state.page];
  if (cursor) params.set("cursor", cursor);
  try {
    const res = await api("GET", `/links?${params}`);
    state.next = res.next_cursor;
    renderList(res.links);
  } catch (err) {
    renderList([]);
  }
}

function renderList(links) {
  state.lastList = links;
  const rows = links.map((l) => {
    const tr = document.createElement("tr");
    tr.dataset.domain = l.domain;
    tr.dataset.code = l.code;
    tr.dataset.expiresAt = l.expires_at === null ? "" : String(l.expires_at);
    tr.classList.toggle("selected", !!state.selected && state.selected.code === l.code && state.selected.domain === l.domain);
    const cells = [
      [l.code, "code"], [l.url, "target"], [fmtTime(l.created_at), "created"],
      [fmtExpires(l.expires_at), "expires"], [String(l.visits), "visits"],
    ];
    for (const [text, cls] of cells) tr.append(Object.assign(document.createElement("td"), { textContent: text, className: cls }));
    tr.addEventListener("click", () => openDetail(l));
    return tr;
  });
  $("#links-table tbody").replaceChildren(...rows);
  $("#list-empty").hidden = links.length > 0;
  $("#prev").disabled = state.page === 0;
  $("#next").disabled = !state.next;
}

function drawChart(svg, days) {
  const W = 640, H = 180, pad = 24;
  const ns = "http://www.w3.org/2000/svg";
  const max = Math.max(1, ...days.map((d) => d.human + d.bot));
  const bw = (W - pad * 2) / Math.max(1, days.length);
  const els = [];
  days.forEach((d, i) => {
    const x = pad + i * bw;
    let y = H - pad;
    for (const [n, cls] of [[d.human, "human"], [d.bot, "bot"]]) {
      if (!n) continue;
      const h = (n / max) * (H - pad * 2);
      y -= h;
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", String(x + 1)); r.setAttribute("y", String(y));
      r.setAttribute("width", String(Math.max(1, bw - 2))); r.setAttribute("height", String(h));
      r.setAttribute("class", cls);
      const title = document.createElementNS(ns, "title");
      title.textContent = `${d.date}: ${d.human} ${t("visits")}, ${d.bot} ${t("bots")}`;
      r.append(title);
      els.push(r);
    }
  });
  const label = (x, text, anchor) => {
    const el = document.createElementNS(ns, "text");
    el.setAttribute("x", String(x)); el.setAttribute("y", String(H - 6)); el.setAttribute("text-anchor", anchor);
    el.textContent = text;
    return el;
  };
  if (days.length) {
    els.push(label(pad, days[0].date, "start"), label(W - pad, days[days.length - 1].date, "end"));
  }
  const top = document.createElementNS(ns, "text");
  top.setAttribute("x", String(pad)); top.setAttribute("y", "14"); top.textContent = `max ${max}`;
  els.push(top);
  svg.replaceChildren(...els);
}

async function openDetail(link) {
  state.selected = link;
  for (const tr of $$("#links-table tbody tr")) tr.classList.toggle("selected", tr.dataset.code === link.code && tr.dataset.domain === link.domain);
  $("#detail").hidden = false;
  $("#detail-title").textContent = link.short_url;
  $("#edit-url").value = link.url;
  $("#edit-forever").checked = link.expires_at === null;
  $("#edit-expires").value = link.expires_at === null ? "" : toLocalInput(link.expires_at);
  $("#saved").hidden = true;
  clearErrors($("#edit-form"));
  const path = `/links/${encodeURIComponent(link.domain)}/${encodeURIComponent(link.code)}`;
  try {
    // The last 30 days, so one busy day does not fill the whole chart.
    const from = new Date(Date.now() - 29 * 86400000).toISOString().slice(0, 10);
    const s = await api("GET", `${path}/stats?from=${from}`);
    $("#detail-visits").textContent = String(s.visits.human);
    $("#detail-bots").textContent = String(s.visits.bot);
    drawChart($("#chart"), s.per_day);
    const refs = s.referrers.map((r) => Object.assign(document.createElement("li"), {
      textContent: `${r.host === "(direct)" ? t("direct") : r.host}: ${r.visits}`,
    }));
    $("#detail-referrers").replaceChildren(...(refs.length ? refs : [Object.assign(document.createElement("li"), { textContent: t("none_yet") })]));
    $("#detail-devices").replaceChildren(...["mobile", "desktop", "other", "bot"].map((k) =>
      Object.assign(document.createElement("li"), { textContent: `${t(k)}: ${s.devices[k] || 0}` })));
  } catch (err) {
    $("#detail-visits").textContent = String(link.visits);
    $("#detail-bots").textContent = "–";
    drawChart($("#chart"), []);
  }
}

function toLocalInput(secs) {
  const d = new Date(secs * 1000);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

async function onEdit(ev) {
  ev.preventDefault();
  const link = state.selected;
  if (!link) return;
  const form = ev.target;
  clearErrors(form);
  const body = { url: $("#edit-url").value.trim() };
  if ($("#edit-forever").checked) body.expires_at = null;
  else if ($("#edit-expires").value) body.expires_at = new Date($("#edit-expires").value).toISOString();
  try {
    const updated = await api("PATCH", `/links/${encodeURIComponent(link.domain)}/${encodeURIComponent(link.code)}`, body);
    $("#saved").hidden = false;
    state.selected = updated;
    await loadList(false);
  } catch (err) {
    showErrors(form, err);
  }
}

async function onDelete() {
  const link = state.selected;
  if (!link || !confirm(t("confirm_delete"))) return;
  try {
    await api("DELETE", `/links/${encodeURIComponent(link.domain)}/${encodeURIComponent(link.code)}`);
    state.selected = null;
    $("#detail").hidden = true;
    await loadList(false);
  } catch (err) {
    showErrors($("#edit-form"), err);
  }
}

// --- wiring ---

// The validity periods offered, as the API's `expires_in` values ("" is permanent); 7 days first
// chosen. Selects marked data-with-date also offer a date.
const PERIODS = [["1d", "v_1d"], ["7d", "v_7d"], ["30d", "v_30d"], ["1y", "v_1y"], ["", "v_forever"]];

function fillValidity(select) {
  const periods = "withDate" in select.dataset ? [...PERIODS, ["date", "v_date"]] : PERIODS;
  select.replaceChildren(...periods.map(([value, key]) => {
    const o = new Option(t(key), value, false, value === "7d");
    o.dataset.i18n = key;
    return o;
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  for (const select of $$("select.validity")) fillValidity(select);
  const saved = sessionStorage.getItem("duanlian-lang");
  state.lang = saved || (document.documentElement.lang.startsWith("zh") ? "zh" : "en");
  applyLang();
  $("#lang-switch").addEventListener("click", () => setLang(state.lang === "zh" ? "en" : "zh"));
  $("#logout").addEventListener("click", signOut);
  for (const b of $$("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const slot = $('[data-error-for="api_key"]');
    slot.textContent = "";
    try {
      await signIn($("#api-key").value.trim());
    } catch (err) {
      state.key = null;
      slot.textContent = err.status === 401 ? t("bad_key") : `${t("request_failed")}: ${err.message}`;
    }
  });
  $("#validity").addEventListener("change", () => { $("#expires-date").hidden = $("#validity").value !== "date"; });
  $("#create-form").addEventListener("submit", onCreate);
  $("#copy").addEventListener("click", onCopy);
  $("#bulk-form").addEventListener("submit", onBulk);
  $("#list-domain").addEventListener("change", () => loadList(true));
  let typing;
  $("#list-q").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => loadList(true), 250); });
  $("#prev").addEventListener("click", () => { if (state.page > 0) { state.page -= 1; loadList(false); } });
  $("#next").addEventListener("click", () => {
    if (!state.next) return;
    state.cursors[state.page + 1] = state.next;
    state.page += 1;
    loadList(false);
  });
  $("#edit-form").addEventListener("submit", onEdit);
  $("#delete").addEventListener("click", onDelete);
  const key = sessionStorage.getItem("duanlian-key");
  if (key) signIn(key).catch(() => signOut());
  else showApp(false);
});
