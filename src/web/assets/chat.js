// The chat page: rooms, history with scroll-back, a send box, live messages over Server-Sent
// Events, and failover: when the node stops answering, the page moves to another member and
// resumes the stream after the last seq it has, so nothing is missed or shown twice.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  let room = params.get("room") || "general";
  // Messages shown, by seq: the only place a message is added, so each shows once.
  let shown = new Map();
  let lastSeq = 0;        // every seq up to this one has been received
  let olderToken = "";    // page token for scroll-back ("" = nothing older)
  let events = null;      // the EventSource of the room
  let generation = 0;     // bumped when the room changes; stale callbacks check it
  const sendQueue = [];   // sends in order, one at a time
  let sending = false;

  const showError = (msg) => { $("error").textContent = msg || ""; };

  function nodeLabel(status) {
    const s = status.node;
    const role = s.role === "leader" ? "leader" : s.role;
    $("node").textContent = `node ${s.id} (${role}) · ${RR.current().replace(/^https?:\/\//, "")}`;
    $("node").dataset.node = s.id;
  }

  async function refreshCluster() {
    try {
      const st = await RR.call("GET", "/v1/cluster/status", undefined, { budgetMs: 5000, timeoutMs: 3000 });
      RR.learn(st);
      nodeLabel(st);
    } catch (e) {
      $("node").textContent = e.status === 401 ? "enter a token: this cluster needs one"
        : "no node answers: " + e.message;
    }
  }

  function atBottom() {
    const s = $("scroll");
    return s.scrollHeight - s.scrollTop - s.clientHeight < 40;
  }

  function fmtTime(ms) {
    return ms ? new Date(Number(ms)).toLocaleTimeString() : "";
  }

  // Adds a message in seq order, once.
  function add(m) {
    if (m.room !== room || shown.has(m.seq)) return;
    const stick = atBottom();
    const li = RR.el("li", { class: "msg", "data-seq": m.seq, "data-id": m.id },
      RR.el("span", { class: "seq" }, "#" + m.seq),
      RR.el("span", { class: "author" }, m.author || "anonymous"),
      RR.el("span", { class: "text" }, m.text),
      RR.el("time", { class: "time" }, fmtTime(m.sent_at_unix_ms)));
    shown.set(m.seq, li);
    const list = $("messages");
    let before = null;
    for (const other of list.children) {
      if (other.dataset.seq && Number(other.dataset.seq) > m.seq) { before = other; break; }
    }
    // Messages with a seq go before the pending ones at the end.
    if (!before) before = list.querySelector("li.pending");
    list.insertBefore(li, before);
    while (shown.has(lastSeq + 1)) lastSeq++;
    const count = document.querySelector(`#rooms li.active .count`);
    if (count && Number(count.textContent) < m.seq) count.textContent = String(m.seq);
    if (stick) $("scroll").scrollTop = $("scroll").scrollHeight;
  }

  function stopEvents() {
    if (events) { events.close(); events = null; }
  }

  // Follows the room from lastSeq + 1 on the current node. On an error the stream is dropped
  // and reopened, on whichever node answers, after the last seq received.
  function startEvents() {
    stopEvents();
    const gen = generation;
    const t = RR.token();
    const url = `${RR.current()}/v1/rooms/${encodeURIComponent(room)}/events?from_seq=${lastSeq + 1}` +
      (t ? "&access_token=" + encodeURIComponent(t) : "");
    const es = new EventSource(url);
    events = es;
    es.addEventListener("message", (e) => {
      if (gen !== generation) return;
      try { add(JSON.parse(e.data)); } catch (_) { /* ignore a malformed event */ }
    });
    es.onerror = async () => {
      if (gen !== generation || events !== es) return;
      es.close();
      events = null;
      const failed = RR.current();
      await RR.sleep(300);
      // Same node if it is still alive (a dropped connection), else the next live one.
      try {
        const r = await fetch(failed + "/healthz", { signal: AbortSignal.timeout(1000) });
        if (!r.ok) throw new Error("unhealthy");
      } catch (_) {
        await RR.findLive(failed);
        refreshCluster();
      }
      if (gen === generation) startEvents();
    };
  }

  async function loadOlder() {
    if (!olderToken) return;
    const gen = generation;
    const s = $("scroll");
    const before = s.scrollHeight;
    const r = await RR.call("GET",
      `/v1/rooms/${encodeURIComponent(room)}/messages?reverse=true&limit=50&page_token=${encodeURIComponent(olderToken)}`);
    if (gen !== generation) return;
    for (const m of r.messages) add(m);
    olderToken = r.next_page_token;
    $("older").hidden = !olderToken;
    s.scrollTop += s.scrollHeight - before;
  }

  async function openRoom(name) {
    generation++;
    const gen = generation;
    room = name;
    stopEvents();
    shown = new Map();
    lastSeq = 0;
    olderToken = "";
    $("messages").replaceChildren();
    $("room-title").textContent = "#" + room;
    history.replaceState(null, "", "?room=" + encodeURIComponent(room));
    for (const li of $("rooms").children) li.classList.toggle("active", li.dataset.room === room);
    showError("");
    try {
      // The newest page, newest first; older pages on demand.
      const r = await RR.call("GET", `/v1/rooms/${encodeURIComponent(room)}/messages?reverse=true&limit=50`);
      if (gen !== generation) return;
      const page = r.messages.slice().reverse();
      // The stream starts after the newest message we have; seqs below it were read here.
      if (page.length) lastSeq = page[0].seq - 1;
      for (const m of page) add(m);
      olderToken = r.next_page_token;
      $("older").hidden = !olderToken;
    } catch (e) {
      if (e.code !== "NOT_FOUND") showError(e.message);
    }
    $("scroll").scrollTop = $("scroll").scrollHeight;
    if (gen === generation) startEvents();
  }

  async function loadRooms() {
    try {
      const r = await RR.call("GET", "/v1/rooms?limit=200");
      const names = r.rooms.map((x) => x.name);
      if (!names.includes(room)) names.unshift(room);
      $("rooms").replaceChildren(...names.map((n) => {
        const count = (r.rooms.find((x) => x.name === n) || {}).message_count || 0;
        const li = RR.el("li", { "data-room": n, class: n === room ? "active" : "" },
          RR.el("a", { href: "?room=" + encodeURIComponent(n) }, "#" + n),
          RR.el("span", { class: "count" }, String(count)));
        li.querySelector("a").addEventListener("click", (e) => { e.preventDefault(); openRoom(n); });
        return li;
      }));
    } catch (e) {
      showError("rooms: " + e.message);
    }
  }

  async function pump() {
    if (sending) return;
    sending = true;
    while (sendQueue.length) {
      const job = sendQueue[0];
      try {
        const r = await RR.call("POST", `/v1/rooms/${encodeURIComponent(job.room)}/messages`,
          { author: job.author, text: job.text, client_request_id: job.id }, { budgetMs: 60000 });
        job.li.remove();
        if (job.room === room) add(r.message);
        showError("");
      } catch (e) {
        job.li.remove();
        showError("not sent: " + e.message);
      }
      sendQueue.shift();
    }
    sending = false;
  }

  function send(text) {
    const author = $("author").value.trim();
    const id = RR.uuid();
    const li = RR.el("li", { class: "msg pending", "data-id": id },
      RR.el("span", { class: "seq" }, "…"),
      RR.el("span", { class: "author" }, author || "anonymous"),
      RR.el("span", { class: "text" }, text),
      RR.el("time", { class: "time" }, "sending"));
    $("messages").append(li);
    $("scroll").scrollTop = $("scroll").scrollHeight;
    sendQueue.push({ room, author, text, id, li });
    pump();
  }

  $("send").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value;
    if (!text.trim()) return;
    $("text").value = "";
    send(text);
  });
  $("new-room").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("room-name").value.trim();
    if (!name) return;
    try {
      await RR.call("POST", "/v1/rooms", { room: name });
      $("room-name").value = "";
      await loadRooms();
      openRoom(name);
    } catch (err) {
      showError("create room: " + err.message);
    }
  });
  $("older").addEventListener("click", () => loadOlder().catch((e) => showError(e.message)));
  $("scroll").addEventListener("scroll", () => {
    if ($("scroll").scrollTop === 0 && olderToken) loadOlder().catch(() => {});
  });
  $("author").value = localStorage.getItem("rustyraft.author") || "";
  $("author").addEventListener("change", () => localStorage.setItem("rustyraft.author", $("author").value.trim()));
  RR.tokenBox(() => { refreshCluster(); loadRooms(); openRoom(room); });
  RR.onSwitch(() => refreshCluster());

  refreshCluster();
  loadRooms();
  openRoom(room);
  setInterval(refreshCluster, 5000);
  setInterval(loadRooms, 10000);
})();
