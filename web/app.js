// The explainer page: calls fapi-guard-core (WebAssembly, built by scripts/build-web.sh)
// and renders its trace. No fetch() other than loading the engine from this page's origin.
import init, { explain_request, check_policy } from "./pkg/fapi_guard_web.js";

const MAX = 4 * 1024 * 1024;
const $ = (id) => document.getElementById(id);
let ready = false;

const EXAMPLE_POLICY = {
  api: { name: "example-fhir-api", audience: "example-fhir-api" },
  issuers: [{
    issuer: "https://sts.example.org",
    jwks_uri: "https://sts.example.org/.well-known/jwks",
    jwks_cluster: "outbound|80||sts.example.org",
  }],
  token: { schemes: ["DPoP"] },
  routes: [{ path_prefix: "/fhir/metadata", methods: ["GET"], require: "none" }],
  fhir: { base_path: "/fhir", resource_types: ["Patient", "Observation"] },
};

function text(el, s) { el.textContent = s; }

function showError(msg) {
  text($("error"), msg);
  $("answer").className = "";
  $("answer").dataset.status = "error";
  $("answer").dataset.reason = "";
}

function clearOutput() {
  text($("error"), "");
  $("steps").replaceChildren();
  $("notes").replaceChildren();
  text($("decoded"), "");
  text($("curl"), "");
}

function tooBig() {
  for (const id of ["policy", "headers", "jwks", "response", "request"]) {
    if ($(id).value.length > MAX) {
      return `${id}: ${$(id).value.length} characters is more than this page reads (${MAX}); nothing was parsed`;
    }
  }
  return null;
}

function call(fn) {
  try {
    return JSON.parse(fn());
  } catch (e) {
    return { ok: false, error: `the engine could not read this input (${e && e.message ? e.message : e})` };
  }
}

function render(result) {
  clearOutput();
  if (!result.ok) { showError(result.error); text($("answer"), "No answer: fix the input above."); return; }
  const t = result.trace;
  const a = t.answer;
  const ans = $("answer");
  ans.replaceChildren();
  const status = document.createElement("div");
  status.className = "status";
  if (a.forwarded) {
    ans.className = "allowed";
    text(status, a.status ? `Forwarded: the client gets the API's ${a.status}` : "Forwarded to the API");
  } else if (a.status) {
    ans.className = "denied";
    text(status, `HTTP ${a.status} from the ${a.filter} filter: ${a.reason}`);
  } else {
    ans.className = "pending";
    text(status, "Held: decided later");
  }
  ans.dataset.status = a.forwarded ? "forwarded" : String(a.status || "held");
  ans.dataset.reason = a.reason || "";
  ans.append(status);
  const why = document.createElement("div");
  text(why, a.why);
  ans.append(why);
  if (a.headers.length || a.body) {
    const pre = document.createElement("pre");
    text(pre, a.headers.map(([k, v]) => `${k}: ${v}`).join("\n") + (a.body ? `\n\n${a.body}` : ""));
    ans.append(pre);
  }
  for (const s of t.steps) {
    const tr = document.createElement("tr");
    tr.className = s.outcome;
    for (const [v, cls] of [[s.outcome, s.outcome], [s.filter], [s.check + (s.detail ? ` — ${s.detail}` : "")], [s.spec], [s.reason || ""]]) {
      const td = document.createElement("td");
      text(td, v);
      if (cls) td.className = cls;
      tr.append(td);
    }
    $("steps").append(tr);
  }
  for (const n of t.notes) { const li = document.createElement("li"); text(li, n); $("notes").append(li); }
  text($("decoded"), t.decoded.map((d) => `${d.what}: ${d.note}\nheader  ${JSON.stringify(d.header)}\npayload ${JSON.stringify(d.payload, null, 1)}`).join("\n\n") || "(no token or proof to decode)");
  text($("curl"), result.curl);
}

function explain() {
  if (!ready) { showError("the engine is still loading"); return; }
  const big = tooBig();
  if (big) { clearOutput(); showError(big); return; }
  const nowField = $("now").value.trim();
  const now = nowField === "" ? Math.floor(Date.now() / 1000) : Number(nowField);
  if (!Number.isFinite(now)) { showError("proxy clock: a number of seconds since 1970, or empty for now"); return; }
  const status = Number($("response-status").value || "200");
  if (!Number.isInteger(status) || status < 100 || status > 599) { showError("response status: 100–599"); return; }
  render(call(() => explain_request($("policy").value, $("request").value, $("headers").value, $("jwks").value,
    $("response").value, status, now, $("authority").value, $("filters").value, $("show-personal").checked)));
}

function check() {
  if (!ready) { showError("the engine is still loading"); return; }
  const big = tooBig();
  if (big) { showError(big); return; }
  const r = call(() => check_policy($("policy").value, $("target").value.trim()));
  const ul = $("description");
  ul.replaceChildren();
  text($("error"), "");
  if (!r.ok) { showError(r.error); return; }
  for (const l of r.lints) { const li = document.createElement("li"); li.className = "claims-note"; text(li, `${l.level}: ${l.field}: ${l.message}`); ul.append(li); }
  for (const d of r.description) { const li = document.createElement("li"); text(li, d); ul.append(li); }
}

function example() {
  $("policy").value = JSON.stringify(EXAMPLE_POLICY, null, 2);
  $("request").value = "GET /fhir/Patient/pat-anna";
  $("headers").value = "";
  explain();
}

async function copyCurl() {
  const s = $("curl").textContent;
  try { await navigator.clipboard.writeText(s); text($("copied"), "copied"); }
  catch { text($("copied"), "select the text below and copy it"); }
}

function online() {
  text($("offline"), navigator.onLine
    ? "Runs offline in your browser: nothing you paste leaves this page"
    : "Offline: fine, this page needs no network");
}

$("explain").addEventListener("click", explain);
$("check").addEventListener("click", check);
$("example").addEventListener("click", example);
$("copy-curl").addEventListener("click", copyCurl);
window.addEventListener("online", online);
window.addEventListener("offline", online);
online();

init().then(() => {
  ready = true;
  text($("engine"), "engine: fapi-guard-core (WebAssembly) ready");
  document.body.dataset.ready = "1";
}).catch((e) => {
  text($("engine"), "");
  showError(`could not start the engine: ${e}`);
});
