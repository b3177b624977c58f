// duanlian's operator page: create links, upload or paste many, browse, statistics, QR codes,
// edit. Plain JavaScript talking to the admin API on the same origin; no external requests.
"use strict";

const T = {
  en: {
    title: "Short links", tab_create: "Create", tab_bulk: "Bulk", tab_links: "Links", logout: "Sign out",
    zone: "Time zone", zone_note: "Times are in {zone}.", zone_browser: "this computer",
    login_title: "API key", login_help: "Enter the admin API key. It is kept for this browser session only.",
    api_key: "API key", login: "Continue", bad_key: "That key was not accepted.",
    create_title: "Create a short link", long_url: "Long URL", domain: "Link domain", validity: "Valid for",
    v_1d: "1 day", v_7d: "7 days", v_30d: "30 days", v_1y: "1 year", v_forever: "Permanent", v_date: "Until a date…",
    custom_code: "Custom code (optional)", max_visits: "Max visits (optional)", create: "Create",
    more_options: "More options", redirect: "Redirect type",
    r_302: "302 temporary (default)", r_301: "301 permanent (browsers remember it)", r_307: "307 temporary, method kept", r_308: "308 permanent, method kept",
    forward_query: "Query parameters of the visit", fq_true: "Passed on (the target's own win)",
    fq_override: "Passed on (the visit's win)", fq_false: "Dropped",
    valid_since: "Valid from (optional)", expired_url: "After expiry, send visitors to (optional)",
    code_length: "Length of a generated code",
    your_link: "Your short link", copy: "Copy", copied: "Copied", target: "Target", expires: "Expires",
    never: "never", upload_title: "Upload a file",
    upload_help: "A CSV file or an Excel workbook (.xlsx). The first row names the columns: url (or 长链接), and optionally code, domain, expires_in, expires_at, valid_since, max_visits, expired_url, redirect. A file of URLs alone needs no header. Times without a zone are read in the zone chosen above.",
    file: "File", domain_default: "Link domain (rows without one)", validity_default: "Valid for (rows without an expiry)",
    encoding: "Encoding of a CSV file", enc_auto: "Detect (UTF-8 or GBK)", check_file: "Check the file",
    no_file: "Choose a file first.", create_valid: "Create the {n} valid rows", fix_retry: "Fix the file and upload again",
    upload_checked: "{ok} of {all} rows are valid; {bad} have errors.", upload_all_ok: "All {all} rows are valid.",
    upload_created: "Created {n} links; {bad} rows were left out.", row: "Row", result: "Result",
    row_ok: "OK", row_bad: "Error", row_created: "Created", download_qr_zip: "Download QR codes (ZIP)",
    zip_progress: "{done} of {all} QR codes…",
    bulk_title: "Or paste URLs", bulk_urls: "Long URLs, one per line", create_all: "Create all",
    download_csv: "Download CSV", short_link: "Short link", links_title: "Links", search: "Search code or target",
    state: "State", state_all: "All", state_active: "Active", state_expired: "Expired", state_pending: "Not yet valid",
    state_used_up: "Used up", sort: "Order", sort_newest: "Newest first", sort_oldest: "Oldest first",
    sort_most: "Most visited", sort_least: "Least visited", sort_code: "By code",
    code: "Code", created: "Created", visits: "Visits", prev: "Previous", next: "Next", no_links: "No links.",
    bots: "Bots", per_day: "Visits per day", chart_max: "max {n}", referrers: "Referrers", devices: "Devices",
    qr_code: "QR code", edit: "Edit",
    save: "Save", delete: "Delete", saved: "Saved", confirm_delete: "Delete this link? It stops redirecting at once.",
    no_urls: "Paste at least one URL.", line_n: "line {n}", direct: "(direct)", none_yet: "No visits yet.",
    mobile: "mobile", desktop: "desktop", other: "other", bot: "bot", expired: "expired", in_days: "in {n} days",
    request_failed: "The request failed", bad_time: "write a time as 2027-01-01 00:00:00",
    colon: ": ", semicolon: "; ",
  },
  zh: {
    title: "短链接", tab_create: "生成", tab_bulk: "批量", tab_links: "链接", logout: "退出",
    zone: "时区", zone_note: "时间按 {zone} 计。", zone_browser: "本机",
    login_title: "API 密钥", login_help: "请输入管理 API 密钥，仅在本次浏览器会话中保存。",
    api_key: "API 密钥", login: "继续", bad_key: "密钥无效。",
    create_title: "生成短链接", long_url: "长链接", domain: "短链域名", validity: "有效期",
    v_1d: "1 天", v_7d: "7 天", v_30d: "30 天", v_1y: "1 年", v_forever: "永久", v_date: "指定日期…",
    custom_code: "自定义短码（可选）", max_visits: "最大访问次数（可选）", create: "生成",
    more_options: "更多选项", redirect: "跳转方式",
    r_302: "302 临时跳转（默认）", r_301: "301 永久跳转（浏览器会缓存）", r_307: "307 临时跳转，保留请求方法", r_308: "308 永久跳转，保留请求方法",
    forward_query: "访问时带的参数", fq_true: "转发（目标链接的参数优先）",
    fq_override: "转发（访问带的参数优先）", fq_false: "不转发",
    valid_since: "生效时间（可选）", expired_url: "过期后跳转到（可选）",
    code_length: "自动生成短码的长度",
    your_link: "您的短链接", copy: "复制", copied: "已复制", target: "目标", expires: "过期时间",
    never: "永不过期", upload_title: "上传文件",
    upload_help: "CSV 文件或 Excel 工作簿（.xlsx）。第一行是列名：长链接（或 url），可选 短码、域名、有效期、过期时间、生效时间、最大访问次数、过期跳转、跳转方式。只有一列链接的文件可以不要列名。不带时区的时间按上方选择的时区计。",
    file: "文件", domain_default: "短链域名（未填写的行）", validity_default: "有效期（未填写过期时间的行）",
    encoding: "CSV 文件编码", enc_auto: "自动识别（UTF-8 或 GBK）", check_file: "检查文件",
    no_file: "请先选择文件。", create_valid: "生成其中 {n} 行有效的链接", fix_retry: "修改文件后重新上传",
    upload_checked: "共 {all} 行，{ok} 行有效，{bad} 行有错误。", upload_all_ok: "全部 {all} 行有效。",
    upload_created: "已生成 {n} 个链接，{bad} 行未生成。", row: "行", result: "结果",
    row_ok: "有效", row_bad: "错误", row_created: "已生成", download_qr_zip: "下载二维码（ZIP）",
    zip_progress: "二维码 {done}/{all}…",
    bulk_title: "或粘贴链接", bulk_urls: "长链接，每行一个", create_all: "全部生成",
    download_csv: "下载 CSV", short_link: "短链接", links_title: "链接列表", search: "搜索短码或目标",
    state: "状态", state_all: "全部", state_active: "有效", state_expired: "已过期", state_pending: "未生效",
    state_used_up: "已用完", sort: "排序", sort_newest: "最新创建", sort_oldest: "最早创建",
    sort_most: "访问最多", sort_least: "访问最少", sort_code: "按短码",
    code: "短码", created: "创建时间", visits: "访问量", prev: "上一页", next: "下一页", no_links: "没有链接。",
    bots: "机器人", per_day: "每日访问量", chart_max: "最高 {n}", referrers: "来源", devices: "设备",
    qr_code: "二维码", edit: "编辑",
    save: "保存", delete: "删除", saved: "已保存", confirm_delete: "确定删除此链接？删除后立即停止跳转。",
    no_urls: "请至少粘贴一个链接。", line_n: "第 {n} 行", direct: "（直接访问）", none_yet: "暂无访问。",
    mobile: "手机", desktop: "电脑", other: "其他", bot: "机器人", expired: "已过期", in_days: "{n} 天后",
    request_failed: "请求失败", bad_time: "请按 2027-01-01 00:00:00 的格式填写时间",
    colon: "：", semicolon: "；",
  },
};

// Field errors by the API's stable code, for the Chinese page; English uses the API's reason.
const FIELD_ERRORS_ZH = {
  required: "必填", unknown_field: "不认识的字段", immutable: "不能修改，请新建链接",
  not_string: "应为文字", not_object: "格式不对", url_empty: "请填写链接", url_too_long: "链接太长（最多 4096 字节）",
  url_scheme: "链接须以 http 或 https 开头", url_not_absolute: "须为完整链接（含 https 和域名）",
  url_control: "链接中不能有空格或控制字符", url_host: "链接的域名不正确",
  redirect_loop: "不能指向本服务的短链域名（会循环跳转）", code_empty: "短码不能为空",
  code_too_long: "短码太长", code_char: "短码只能用字母、数字、_ 和 -", code_reserved: "此短码为系统保留",
  code_length: "短码长度须在 4 到 32 之间", domain_empty: "请选择域名", domain_too_long: "域名太长",
  domain_syntax: "域名格式不正确", unknown_domain: "不是本服务的短链域名", redirect_status: "跳转方式须为 301、302、307 或 308",
  time: "时间格式不正确（例如 2027-01-01 00:00:00）", too_late: "时间太远", past: "过期时间已经过去",
  period: "有效期格式不正确（例如 7d、12h）", expiry_twice: "过期时间和有效期只能填一个",
  validity_order: "生效时间须早于过期时间", max_visits: "最大访问次数须为不小于 1 的整数",
  max_visits_zero: "最大访问次数至少为 1", forward_query: "参数转发的取值不正确", batch_size: "一次最多 10000 个链接",
  code_taken: "此短码已被占用", code_repeated: "此短码在前面的行中已出现", not_utf8: "编码不对（请选择 GBK 或另存为 UTF-8 CSV）",
  cell_error: "单元格里是错误值（#N/A 等）", bad_file: "文件无法读取", unknown_value: "取值不正确", range: "超出范围",
};

// Problems that are not about a field, by their type.
const PROBLEMS_ZH = {
  "code-taken": "此短码已被占用", "read-only": "此节点只读，不能修改链接", "unavailable": "暂时无法写入，请稍后再试",
  "no-space": "磁盘已满，无法写入", "body-too-large": "内容太大", "not-found": "没有这个链接",
  "cluster-node": "集群节点不支持此操作", "internal": "服务器内部错误",
};

const FIELD_NAMES_ZH = {
  url: "长链接", code: "短码", domain: "域名", expires_at: "过期时间", expires_in: "有效期", valid_since: "生效时间",
  max_visits: "最大访问次数", expired_url: "过期跳转", redirect: "跳转方式", forward_query: "参数转发", file: "文件",
};

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const el = (tag, props = {}, ...kids) => { const e = Object.assign(document.createElement(tag), props); e.append(...kids); return e; };
const state = {
  lang: "en", key: null, domains: [], cursors: [null], page: 0, next: null, selected: null,
  zone: "Asia/Shanghai", upload: null,
};

function t(k, vars) {
  let s = (T[state.lang] && T[state.lang][k]) || T.en[k] || k;
  for (const [name, v] of Object.entries(vars || {})) s = s.replace(`{${name}}`, v);
  return s;
}

function fieldError(f) {
  return state.lang === "zh" && FIELD_ERRORS_ZH[f.code] ? FIELD_ERRORS_ZH[f.code] : f.reason;
}

function fieldName(name) {
  return state.lang === "zh" && FIELD_NAMES_ZH[name] ? FIELD_NAMES_ZH[name] : name;
}

function problemText(err) {
  const p = err.problem || {};
  const slug = (p.type || "").replace("/problems/", "");
  if (state.lang === "zh" && PROBLEMS_ZH[slug]) return PROBLEMS_ZH[slug];
  return err.message;
}

function applyLang() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  for (const e of $$("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  $("#lang-switch").textContent = state.lang === "zh" ? "English" : "中文";
  applyZone();
}

function setLang(lang) {
  state.lang = lang;
  sessionStorage.setItem("duanlian-lang", lang);
  applyLang();
  if (state.key) {
    renderList(state.lastList || []);
    if (state.selected) openDetail(state.selected);
    if (state.upload) renderUpload();
  }
}

// --- time zones: times are shown and typed in one zone, chosen in the header ---

function browserZone() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch { return "UTC"; }
}

// Minutes east of UTC in `zone` at the instant `ms`.
function zoneOffset(ms, zone) {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).formatToParts(new Date(ms));
  const g = (type) => Number(parts.find((p) => p.type === type).value);
  const wall = Date.UTC(g("year"), g("month") - 1, g("day"), g("hour"), g("minute"), g("second"));
  return Math.round((wall - Math.floor(ms / 1000) * 1000) / 60000);
}

function offsetText(minutes) {
  const sign = minutes < 0 ? "-" : "+";
  const m = Math.abs(minutes);
  return `${sign}${String(Math.floor(m / 60)).padStart(2, "0")}:${String(m % 60).padStart(2, "0")}`;
}

function zoneLabel() {
  return `${state.zone} (UTC${offsetText(zoneOffset(Date.now(), state.zone))})`;
}

// `2027-01-01 00:00:00`, `2027/1/1 8:00`, `2027-01-01`: UTC seconds of that wall-clock time in
// the chosen zone; NaN if it is none of those.
function parseWhen(text) {
  const m = /^(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$/.exec(text.trim());
  if (!m) return NaN;
  const [y, mo, d, h, mi, s] = m.slice(1).map((v) => Number(v || 0));
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59) return NaN;
  const guess = Date.UTC(y, mo - 1, d, h, mi, s);
  let at = guess - zoneOffset(guess, state.zone) * 60000;
  // Across a daylight-saving change the offset at the answer differs from the guess's.
  const again = zoneOffset(at, state.zone);
  at = guess - again * 60000;
  return Math.floor(at / 1000);
}

// `2027-01-01 08:00` (with seconds if asked) in the chosen zone.
function wallText(secs, withSeconds) {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: state.zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).formatToParts(new Date(secs * 1000));
  const g = (type) => parts.find((p) => p.type === type).value;
  const hm = `${g("hour")}:${g("minute")}${withSeconds ? `:${g("second")}` : ""}`;
  return `${g("year")}-${g("month")}-${g("day")} ${hm}`;
}

function applyZone() {
  for (const note of $$(".zone-note")) note.textContent = t("zone_note", { zone: zoneLabel() });
  for (const e of $$(".zone-shown")) e.textContent = t("zone_note", { zone: zoneLabel() });
  const pick = $("#zone");
  if (pick) {
    const zones = [...new Set([browserZone(), "Asia/Shanghai", "UTC", state.zone])];
    pick.replaceChildren(...zones.map((z) => new Option(z === browserZone() ? `${z} (${t("zone_browser")})` : z, z, false, z === state.zone)));
  }
}

function setZone(zone) {
  state.zone = zone;
  localStorage.setItem("duanlian-zone", zone);
  applyZone();
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
  let payload;
  if (body instanceof Blob) {
    headers["Content-Type"] = "application/octet-stream";
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const r = await fetch(`/api/v1${path}`, { method, headers, body: payload });
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

const linkPath = (l) => `/links/${encodeURIComponent(l.domain)}/${encodeURIComponent(l.code)}`;

// Field errors go next to their field; anything else to the form's general slot.
function clearErrors(form) {
  for (const e of $$("[data-error-for]", form)) e.textContent = "";
  for (const e of $$(".invalid", form)) e.classList.remove("invalid");
}

const FIELD_ALIASES = { expires_in: "expires_at" };

function showErrors(form, err) {
  clearErrors(form);
  const fields = (err.problem && err.problem.invalid_fields) || [];
  let shown = false;
  for (const f of fields) {
    const name = FIELD_ALIASES[f.name] || f.name;
    const slot = $(`[data-error-for="${name}"]`, form);
    if (slot) {
      slot.textContent += (slot.textContent ? " " : "") + fieldError(f);
      const input = slot.parentElement && slot.parentElement.querySelector("input, select, textarea");
      if (input) input.classList.add("invalid");
      if (slot.closest("details")) slot.closest("details").open = true;
      shown = true;
    }
  }
  if (!shown) {
    const slot = $('[data-error-for="_form"]', form);
    if (slot) slot.textContent = `${t("request_failed")}: ${problemText(err)}`;
  }
}

// A time field read for the API: UTC seconds, null when empty, or an error shown on the spot.
function readWhen(form, input, field) {
  const text = input.value.trim();
  if (!text) return null;
  const secs = parseWhen(text);
  if (Number.isNaN(secs)) {
    const slot = $(`[data-error-for="${field}"]`, form);
    slot.textContent = t("bad_time");
    input.classList.add("invalid");
    throw new Error("bad time");
  }
  return secs;
}

// --- formatting ---

function fmtTime(secs) {
  if (secs === null || secs === undefined) return t("never");
  return wallText(secs, false);
}

function fmtExpires(secs) {
  if (secs === null || secs === undefined) return t("never");
  const days = Math.round((secs * 1000 - Date.now()) / 86400000);
  const rel = secs * 1000 < Date.now() ? t("expired") : t("in_days", { n: days });
  return `${fmtTime(secs)} (${rel})`;
}

function stateOf(l) {
  if (l.state === "expired" && l.expired_by === "visits") return ["used-up", t("state_used_up")];
  return [l.state, t(`state_${l.state}`)];
}

function visitsText(l) {
  return l.max_visits ? `${l.visits} / ${l.max_visits}` : String(l.visits);
}

// The validity select as create fields: a period, a date, or permanent.
function validityFields(form, select, dateInput) {
  const v = select.value;
  if (v === "date") return { expires_at: readWhen(form, dateInput, "expires_at") };
  return v ? { expires_in: v } : {};
}

// --- QR codes: shown, and downloaded in sizes for print ---

async function showQr(img, link) {
  const blob = await api("GET", `${linkPath(link)}/qr.svg`, undefined, "blob");
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  img.dataset.url = URL.createObjectURL(blob);
  img.src = img.dataset.url;
}

function saveBlob(blob, name) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

const QR_FILES = [["png", 256], ["png", 512], ["png", 1024], ["svg", 1024]];

function qrDownloads(box, link) {
  box.replaceChildren(...QR_FILES.map(([kind, size]) => {
    const b = el("button", { type: "button", textContent: kind === "svg" ? "SVG" : `PNG ${size}` });
    b.dataset.kind = kind;
    b.dataset.size = String(size);
    b.addEventListener("click", async () => {
      const blob = await api("GET", `${linkPath(link)}/qr.${kind}?size=${size}`, undefined, "blob");
      saveBlob(blob, `${link.code}${kind === "png" ? `-${size}` : ""}.${kind}`);
    });
    return b;
  }));
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
  for (const id of ["#domain", "#bulk-domain", "#list-domain", "#upload-domain"]) {
    $(id).replaceChildren(...state.domains.map((name) => new Option(name, name)));
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

async function onCreate(ev) {
  ev.preventDefault();
  const form = ev.target;
  clearErrors(form);
  let body;
  try {
    body = {
      url: $("#url").value.trim(), domain: $("#domain").value,
      redirect: Number($("#redirect").value), forward_query: fqValue($("#forward-query").value),
      ...validityFields(form, $("#validity"), $("#expires-date")),
    };
    const since = readWhen(form, $("#valid-since"), "valid_since");
    if (since !== null) body.valid_since = since;
  } catch { return; }
  const code = $("#code").value.trim();
  if (code) body.code = code;
  const length = $("#code-length").value.trim();
  if (length) body.code_length = Number(length);
  const max = $("#max-visits").value.trim();
  if (max) body.max_visits = Number(max);
  const expiredUrl = $("#expired-url").value.trim();
  if (expiredUrl) body.expired_url = expiredUrl;
  try {
    const link = await api("POST", "/links", body);
    const a = $("#short-url");
    a.textContent = link.short_url;
    a.href = link.short_url;
    a.dataset.domain = link.domain;
    a.dataset.code = link.code;
    $("#result-target").textContent = link.display_url;
    $("#result-expires").textContent = fmtExpires(link.expires_at);
    $("#copied").hidden = true;
    $("#result").hidden = false;
    qrDownloads($("#result-downloads"), link);
    await showQr($("#qr"), link);
  } catch (err) {
    $("#result").hidden = true;
    showErrors(form, err);
  }
}

function fqValue(v) {
  return v === "override" ? "override" : v === "true";
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

// --- bulk: results as CSV (with a byte-order mark, so Excel reads the Chinese) and QR ZIPs ---

function csvField(s) {
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function csvBlob(header, rows) {
  const text = [header, ...rows].map((r) => r.map((c) => csvField(String(c ?? ""))).join(",")).join("\r\n");
  return new Blob(["\ufeff", text, "\r\n"], { type: "text/csv;charset=utf-8" });
}

function resultsCsv(links) {
  return csvBlob(
    ["short_url", "code", "domain", "url", "expires", "max_visits"],
    links.map((l) => [l.short_url, l.code, l.domain, l.display_url, l.expires_at ? wallText(l.expires_at, true) : "", l.max_visits ?? ""]),
  );
}

// A ZIP of stored (uncompressed: PNGs are compressed already) files, names in UTF-8.
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function zip(files) {
  const enc = new TextEncoder();
  const parts = [];
  const central = [];
  let offset = 0;
  for (const { name, data } of files) {
    const nameBytes = enc.encode(name);
    const crc = crc32(data);
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true); local.setUint16(4, 20, true); local.setUint16(6, 0x0800, true);
    local.setUint32(14, crc, true); local.setUint32(18, data.length, true); local.setUint32(22, data.length, true);
    local.setUint16(26, nameBytes.length, true);
    parts.push(local.buffer, nameBytes, data);
    const dir = new DataView(new ArrayBuffer(46));
    dir.setUint32(0, 0x02014b50, true); dir.setUint16(4, 20, true); dir.setUint16(6, 20, true);
    dir.setUint16(8, 0x0800, true); dir.setUint32(16, crc, true); dir.setUint32(20, data.length, true);
    dir.setUint32(24, data.length, true); dir.setUint16(28, nameBytes.length, true); dir.setUint32(42, offset, true);
    central.push(dir.buffer, nameBytes);
    offset += 30 + nameBytes.length + data.length;
  }
  const size = central.reduce((n, p) => n + p.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true); end.setUint16(8, files.length, true); end.setUint16(10, files.length, true);
  end.setUint32(12, size, true); end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end.buffer], { type: "application/zip" });
}

async function qrZip(links, progress) {
  const files = [];
  const names = new Set();
  let next = 0;
  // A few at a time: the admin API has two workers.
  const worker = async () => {
    while (next < links.length) {
      const l = links[next++];
      const blob = await api("GET", `${linkPath(l)}/qr.png?size=512`, undefined, "blob");
      // Named by code; a code on two domains gets its domain too.
      const name = names.has(l.code) ? `${l.domain}-${l.code}.png` : `${l.code}.png`;
      names.add(l.code);
      files.push({ name, data: new Uint8Array(await blob.arrayBuffer()) });
      progress(files.length, links.length);
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  return zip(files);
}

function setDownload(a, blob, name) {
  if (a.dataset.url) URL.revokeObjectURL(a.dataset.url);
  a.dataset.url = URL.createObjectURL(blob);
  a.href = a.dataset.url;
  a.download = name;
}

// --- bulk: an uploaded file, checked row by row, then created ---

function uploadQuery(mode) {
  const p = new URLSearchParams({
    mode, domain: $("#upload-domain").value, encoding: $("#upload-encoding").value,
    utc_offset: offsetText(zoneOffset(Date.now(), state.zone)), name: $("#upload-file").files[0].name,
  });
  const v = $("#upload-validity").value;
  if (v) p.set("expires_in", v);
  return p;
}

async function onUploadCheck(ev) {
  ev.preventDefault();
  const form = ev.target;
  clearErrors(form);
  const file = $("#upload-file").files[0];
  if (!file) { $('[data-error-for="_form"]', form).textContent = t("no_file"); return; }
  try {
    const res = await api("POST", `/links/import?${uploadQuery("check")}`, file);
    state.upload = { file, res, created: false };
    renderUpload();
  } catch (err) {
    state.upload = null;
    $("#upload-result").hidden = true;
    const f = err.problem && err.problem.invalid_fields && err.problem.invalid_fields[0];
    $('[data-error-for="_form"]', form).textContent = f
      ? `${fieldName(f.name)}${t("colon")}${fieldError(f)}${state.lang === "zh" ? `（${f.reason}）` : ""}`
      : `${t("request_failed")}${t("colon")}${problemText(err)}`;
  }
}

async function onUploadCreate() {
  const up = state.upload;
  if (!up) return;
  try {
    const res = await api("POST", `/links/import?${uploadQuery("valid")}`, up.file);
    state.upload = { file: up.file, res, created: true };
    renderUpload();
  } catch (err) {
    $('[data-error-for="_form"]', $("#upload-form")).textContent = `${t("request_failed")}: ${problemText(err)}`;
  }
}

function renderUpload() {
  const { res, created } = state.upload;
  const all = res.rows.length;
  const bad = res.invalid;
  const ok = all - bad;
  $("#upload-summary").textContent = created
    ? t("upload_created", { n: res.created, bad })
    : bad ? t("upload_checked", { ok, all, bad }) : t("upload_all_ok", { all });
  const create = $("#upload-create");
  create.hidden = created || ok === 0;
  create.textContent = t("create_valid", { n: ok });
  $("#upload-retry").hidden = created || bad === 0;
  const rows = res.rows.map((r) => {
    const tr = el("tr", { className: r.ok ? "ok-row" : "bad-row" });
    tr.dataset.line = String(r.line);
    const status = r.ok ? t(created ? "row_created" : "row_ok") : t("row_bad");
    const link = r.link;
    const short = link ? el("a", { href: link.short_url, textContent: link.short_url, target: "_blank" }) : "";
    const what = r.ok
      ? (link ? link.display_url : r.display_url)
      : r.errors.map((e) => `${fieldName(e.name)}${t("colon")}${fieldError(e)}`).join(t("semicolon"));
    tr.append(el("td", { textContent: String(r.line) }), el("td", { textContent: status, className: "status" }),
      el("td", {}, short), el("td", { textContent: what, className: r.ok ? "target" : "errors" }));
    return tr;
  });
  $("#upload-table tbody").replaceChildren(...rows);
  const links = res.rows.filter((r) => r.link).map((r) => r.link);
  $("#upload-downloads").hidden = !links.length;
  if (links.length) setDownload($("#upload-csv"), resultsCsv(links), "short-links.csv");
  $("#upload-result").hidden = false;
}

async function onUploadZip() {
  const links = state.upload ? state.upload.res.rows.filter((r) => r.link).map((r) => r.link) : [];
  if (!links.length) return;
  const progress = $("#zip-progress");
  try {
    const blob = await qrZip(links, (done, all) => { progress.textContent = t("zip_progress", { done, all }); });
    progress.textContent = "";
    saveBlob(blob, "qr-codes.zip");
  } catch (err) {
    progress.textContent = `${t("request_failed")}: ${problemText(err)}`;
  }
}

function onUploadRetry() {
  $("#upload-file").value = "";
  $("#upload-result").hidden = true;
  state.upload = null;
  $("#upload-file").focus();
}

// --- bulk: pasted URLs ---

async function onBulk(ev) {
  ev.preventDefault();
  const errors = $("#bulk-errors");
  errors.replaceChildren();
  const lines = $("#bulk-urls").value.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  if (!lines.length) { errors.append(el("li", { textContent: t("no_urls") })); return; }
  const common = { domain: $("#bulk-domain").value, ...validityFields(ev.target, $("#bulk-validity"), { value: "" }) };
  try {
    const res = await api("POST", "/links/batch", { links: lines.map((url) => ({ url, ...common })) });
    const rows = res.links.map((l) => el("tr", {},
      el("td", {}, el("a", { href: l.short_url, textContent: l.short_url, target: "_blank" })),
      el("td", { textContent: l.display_url, className: "target" })));
    $("#bulk-table tbody").replaceChildren(...rows);
    setDownload($("#bulk-csv"), resultsCsv(res.links), "short-links.csv");
    $("#bulk-result").hidden = false;
  } catch (err) {
    // Batch errors name `links[i].field`: show them by line.
    const fields = (err.problem && err.problem.invalid_fields) || [];
    const items = fields.length ? fields.map((f) => {
      const m = /^links\[(\d+)\]\.(.*)$/.exec(f.name);
      return m
        ? `${t("line_n", { n: Number(m[1]) + 1 })}: ${lines[Number(m[1])]} — ${fieldError(f)}`
        : `${fieldName(f.name)}: ${fieldError(f)}`;
    }) : [`${t("request_failed")}: ${problemText(err)}`];
    errors.replaceChildren(...items.map((s) => el("li", { textContent: s })));
    $("#bulk-result").hidden = true;
  }
}

// --- list, detail, edit ---

async function loadList(reset) {
  if (reset) { state.cursors = [null]; state.page = 0; }
  const params = new URLSearchParams({ domain: $("#list-domain").value, limit: "20", sort: $("#list-sort").value });
  const q = $("#list-q").value.trim();
  if (q) params.set("q", q);
  const st = $("#list-state").value;
  if (st) params.set("state", st);
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
    const tr = el("tr");
    tr.dataset.domain = l.domain;
    tr.dataset.code = l.code;
    tr.dataset.expiresAt = l.expires_at === null ? "" : String(l.expires_at);
    const [cls, label] = stateOf(l);
    tr.dataset.state = cls;
    tr.classList.toggle("selected", !!state.selected && state.selected.code === l.code && state.selected.domain === l.domain);
    const cells = [
      [l.code, "code"], [l.display_url, "target"], [fmtTime(l.created_at), "created"],
      [fmtExpires(l.expires_at), "expires"], [visitsText(l), "visits"],
    ];
    for (const [text, c] of cells) tr.append(el("td", { textContent: text, className: c, title: c === "target" ? text : "" }));
    tr.append(el("td", { className: "state-cell" }, el("span", { className: `state ${cls}`, textContent: label })));
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
      title.textContent = `${d.date}: ${t("visits")} ${d.human}, ${t("bots")} ${d.bot}`;
      r.append(title);
      els.push(r);
    }
  });
  const label = (x, y, text, anchor) => {
    const e = document.createElementNS(ns, "text");
    e.setAttribute("x", String(x)); e.setAttribute("y", String(y)); e.setAttribute("text-anchor", anchor);
    e.textContent = text;
    return e;
  };
  if (days.length) {
    els.push(label(pad, H - 6, days[0].date, "start"), label(W - pad, H - 6, days[days.length - 1].date, "end"));
  }
  els.push(label(pad, 14, t("chart_max", { n: max }), "start"));
  svg.setAttribute("aria-label", t("per_day"));
  svg.replaceChildren(...els);
}

async function openDetail(link) {
  state.selected = link;
  for (const tr of $$("#links-table tbody tr")) tr.classList.toggle("selected", tr.dataset.code === link.code && tr.dataset.domain === link.domain);
  $("#detail").hidden = false;
  $("#detail-title").textContent = link.short_url;
  const [cls, label] = stateOf(link);
  $("#detail-state").className = `state ${cls}`;
  $("#detail-state").textContent = label;
  $("#detail-target").textContent = link.display_url;
  fillEdit(link);
  $("#saved").hidden = true;
  clearErrors($("#edit-form"));
  qrDownloads($("#detail-downloads"), link);
  showQr($("#detail-qr"), link).catch(() => {});
  try {
    // The last 30 days, so one busy day does not fill the whole chart.
    const from = new Date(Date.now() - 29 * 86400000).toISOString().slice(0, 10);
    const s = await api("GET", `${linkPath(link)}/stats?from=${from}`);
    $("#detail-visits").textContent = String(s.visits.human);
    $("#detail-bots").textContent = String(s.visits.bot);
    drawChart($("#chart"), s.per_day);
    const refs = s.referrers.map((r) => el("li", { textContent: `${r.host === "(direct)" ? t("direct") : r.host}: ${r.visits}` }));
    $("#detail-referrers").replaceChildren(...(refs.length ? refs : [el("li", { textContent: t("none_yet") })]));
    $("#detail-devices").replaceChildren(...["mobile", "desktop", "other", "bot"].map((k) =>
      el("li", { textContent: `${t(k)}: ${s.devices[k] || 0}` })));
  } catch (err) {
    $("#detail-visits").textContent = String(link.visits);
    $("#detail-bots").textContent = "–";
    drawChart($("#chart"), []);
  }
}

function fillEdit(link) {
  $("#edit-url").value = link.display_url;
  $("#edit-redirect").value = String(link.redirect);
  $("#edit-forward-query").value = String(link.forward_query);
  $("#edit-since").value = link.valid_since === null ? "" : wallText(link.valid_since, true);
  $("#edit-forever").checked = link.expires_at === null;
  $("#edit-expires").value = link.expires_at === null ? "" : wallText(link.expires_at, true);
  $("#edit-max-visits").value = link.max_visits === null ? "" : String(link.max_visits);
  $("#edit-expired-url").value = link.expired_url === null ? "" : link.expired_url;
}

async function onEdit(ev) {
  ev.preventDefault();
  const link = state.selected;
  if (!link) return;
  const form = ev.target;
  clearErrors(form);
  let body;
  try {
    body = {
      url: $("#edit-url").value.trim(),
      redirect: Number($("#edit-redirect").value),
      forward_query: fqValue($("#edit-forward-query").value),
      valid_since: readWhen(form, $("#edit-since"), "valid_since"),
      expires_at: $("#edit-forever").checked ? null : readWhen(form, $("#edit-expires"), "expires_at"),
    };
  } catch { return; }
  const max = $("#edit-max-visits").value.trim();
  body.max_visits = max ? Number(max) : null;
  const expiredUrl = $("#edit-expired-url").value.trim();
  body.expired_url = expiredUrl || null;
  try {
    const updated = await api("PATCH", linkPath(link), body);
    $("#saved").hidden = false;
    state.selected = updated;
    const [cls, label] = stateOf(updated);
    $("#detail-state").className = `state ${cls}`;
    $("#detail-state").textContent = label;
    $("#detail-target").textContent = updated.display_url;
    fillEdit(updated);
    await loadList(false);
  } catch (err) {
    showErrors(form, err);
  }
}

async function onDelete() {
  const link = state.selected;
  if (!link || !confirm(t("confirm_delete"))) return;
  try {
    await api("DELETE", linkPath(link));
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

function fillSelect(select, options, chosen) {
  select.replaceChildren(...options.map(([value, key]) => {
    const o = new Option(t(key), value, false, value === chosen);
    o.dataset.i18n = key;
    return o;
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  for (const select of $$("select.validity")) {
    fillSelect(select, "withDate" in select.dataset ? [...PERIODS, ["date", "v_date"]] : PERIODS, "7d");
  }
  for (const select of $$("select.redirect")) fillSelect(select, [["302", "r_302"], ["301", "r_301"], ["307", "r_307"], ["308", "r_308"]], "302");
  for (const select of $$("select.forward-query")) fillSelect(select, [["true", "fq_true"], ["override", "fq_override"], ["false", "fq_false"]], "true");
  const saved = sessionStorage.getItem("duanlian-lang");
  state.lang = saved || (document.documentElement.lang.startsWith("zh") ? "zh" : "en");
  // Operators here work in Shanghai time unless they chose otherwise.
  state.zone = localStorage.getItem("duanlian-zone") || (state.lang === "zh" ? "Asia/Shanghai" : browserZone());
  applyLang();
  $("#zone").addEventListener("change", () => setZone($("#zone").value));
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
      slot.textContent = err.status === 401 ? t("bad_key") : `${t("request_failed")}: ${problemText(err)}`;
    }
  });
  $("#validity").addEventListener("change", () => {
    const date = $("#validity").value === "date";
    $("#expires-date").hidden = !date;
    $('.zone-note[data-for="expires-date"]').hidden = !date;
  });
  $("#create-form").addEventListener("submit", onCreate);
  $("#copy").addEventListener("click", onCopy);
  $("#upload-form").addEventListener("submit", onUploadCheck);
  $("#upload-create").addEventListener("click", onUploadCreate);
  $("#upload-retry").addEventListener("click", onUploadRetry);
  $("#upload-zip").addEventListener("click", onUploadZip);
  $("#bulk-form").addEventListener("submit", onBulk);
  for (const id of ["#list-domain", "#list-state", "#list-sort"]) $(id).addEventListener("change", () => loadList(true));
  let typing;
  $("#list-q").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => loadList(true), 250); });
  $("#prev").addEventListener("click", () => { if (state.page > 0) { state.page -= 1; loadList(false); } });
  $("#next").addEventListener("click", () => {
    if (!state.next) return;
    state.cursors[state.page + 1] = state.next;
    state.page += 1;
    loadList(false);
  });
  $("#edit-forever").addEventListener("change", () => { if ($("#edit-forever").checked) $("#edit-expires").value = ""; });
  $("#edit-expires").addEventListener("input", () => { if ($("#edit-expires").value.trim()) $("#edit-forever").checked = false; });
  $("#edit-form").addEventListener("submit", onEdit);
  $("#delete").addEventListener("click", onDelete);
  const key = sessionStorage.getItem("duanlian-key");
  if (key) signIn(key).catch(() => signOut());
  else showApp(false);
});
