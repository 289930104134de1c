// Shared by the chat page and the cluster view: which node to talk to, the token, JSON calls
// with failover to the other members, and small DOM helpers. No framework, no build step.
"use strict";

const RR = (() => {
  const KNOWN = "rustyraft.nodes";
  const TOKEN = "rustyraft.token";
  // Base URLs (http://host:port) of every node seen in a cluster status; this page's own first.
  let nodes = [location.origin];
  try {
    for (const n of JSON.parse(localStorage.getItem(KNOWN) || "[]")) {
      if (!nodes.includes(n)) nodes.push(n);
    }
  } catch (_) { /* a corrupt list is replaced on the next status */ }
  let current = location.origin;
  const listeners = [];

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // A node's web address as this browser reaches it: a wildcard bind means "this host".
  function baseOf(httpAddr) {
    if (!httpAddr) return null;
    const host = httpAddr.replace(/^(0\.0\.0\.0|\[::\]):/, location.hostname + ":");
    return location.protocol + "//" + host;
  }

  function setCurrent(base) {
    if (base === current) return;
    current = base;
    for (const f of listeners) f(current);
  }

  function token() { return localStorage.getItem(TOKEN) || ""; }
  function setToken(t) {
    if (t) localStorage.setItem(TOKEN, t); else localStorage.removeItem(TOKEN);
  }

  function headers(json) {
    const h = {};
    if (json) h["Content-Type"] = "application/json";
    if (token()) h["Authorization"] = "Bearer " + token();
    return h;
  }

  // Learns the members' web addresses from a cluster status.
  function learn(status) {
    for (const m of status.members || []) {
      const b = m.status && baseOf(m.status.http_addr);
      if (b && !nodes.includes(b)) nodes.push(b);
    }
    localStorage.setItem(KNOWN, JSON.stringify(nodes));
  }

  // The next node after `base`, in the order they were learned.
  function next(base) {
    const i = nodes.indexOf(base);
    return nodes[(i + 1) % nodes.length];
  }

  class ApiError extends Error {
    constructor(status, body) {
      const e = (body && body.error) || {};
      super((e.code || "HTTP " + status) + ": " + (e.message || ""));
      this.status = status;
      this.code = e.code;
      this.reason = e.reason;
    }
  }

  async function once(base, method, path, body, timeoutMs) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    try {
      const resp = await fetch(base + path, {
        method,
        headers: headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: ctl.signal,
      });
      let data = null;
      try { data = await resp.json(); } catch (_) { /* not JSON */ }
      if (!resp.ok) throw new ApiError(resp.status, data);
      return data;
    } finally {
      clearTimeout(timer);
    }
  }

  // One JSON call, with failover: a node that does not answer (dead, shutting down), or that
  // answers UNAVAILABLE or a timeout (an election, or it is cut off from the majority), is left
  // for the next one after a pause; 429 (back off) is retried on the same node after a pause.
  // Every send carries a client_request_id, so retrying it anywhere cannot duplicate it.
  // Other refusals (400, 401, 404, ...) are final and thrown at once.
  async function call(method, path, body, opts = {}) {
    const deadline = Date.now() + (opts.budgetMs || 30000);
    let base = current;
    let last = null;
    for (let attempt = 0; Date.now() < deadline; attempt++) {
      try {
        const data = await once(base, method, path, body, opts.timeoutMs || 12000);
        setCurrent(base);
        return data;
      } catch (e) {
        last = e;
        const moveOn = !(e instanceof ApiError) || e.status === 503 || e.status === 504;
        const retry = moveOn || e.status === 429;
        if (!retry) throw e;
        if (moveOn) base = next(base);
        await sleep(Math.min(200 * (attempt + 1), 1000));
      }
    }
    throw last || new Error("no node answered");
  }

  // Finds a node that answers /healthz, starting after `avoid` (the one that just failed).
  async function findLive(avoid) {
    let base = avoid ? next(avoid) : current;
    for (let i = 0; i < nodes.length * 3; i++) {
      try {
        const r = await fetch(base + "/healthz", { signal: AbortSignal.timeout(1500) });
        if (r.ok) { setCurrent(base); return base; }
      } catch (_) { /* try the next one */ }
      base = next(base);
      if (i % nodes.length === nodes.length - 1) await sleep(500);
    }
    return current;
  }

  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) e.append(c);
    return e;
  }

  // The token box in the header: stored in this browser (localStorage), sent as a bearer token.
  function tokenBox(onChange) {
    const input = document.getElementById("token");
    if (!input) return;
    input.value = token();
    input.addEventListener("change", () => { setToken(input.value.trim()); onChange && onChange(); });
  }

  return {
    call, findLive, learn, uuid, el, token, tokenBox, ApiError, sleep,
    current: () => current,
    onSwitch: (f) => listeners.push(f),
  };
})();
