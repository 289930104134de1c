// The live cluster view: every member's role, term, indexes and lag, polled once a second
// through whichever node answers (failing over like the chat page).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  let leaderSince = null;

  function cell(text, cls) {
    return RR.el("td", cls ? { class: cls } : {}, text === undefined || text === null ? "—" : String(text));
  }

  function render(st) {
    const me = st.node;
    $("node").textContent = `via node ${me.id} · ${RR.current().replace(/^https?:\/\//, "")}`;
    const leader = st.members.find((m) => m.status && m.status.role === "leader" &&
      m.status.leader_id === m.id);
    const lags = new Map();
    if (leader) {
      lags.set(leader.id, 0);
      for (const p of leader.status.peers) lags.set(p.id, p.lag);
    }
    const rows = st.members.map((m) => {
      const s = m.status;
      const tr = RR.el("tr", { "data-node": m.id, class: s ? "role-" + s.role : "down" });
      tr.append(cell(m.id + (m.id === me.id ? " (this page)" : "")));
      if (s) {
        tr.append(cell(s.role, "role"), cell(s.term), cell(s.leader_id || "none"),
          cell(s.commit_index), cell(s.applied_index), cell(s.last_index), cell(s.snapshot_index),
          cell(lags.has(m.id) ? lags.get(m.id) : null), cell(m.voter ? "voter" : "learner"),
          cell(m.addr));
        const web = RR.el("td");
        if (s.http_addr) web.append(RR.el("a", { href: `http://${s.http_addr}/cluster` }, s.http_addr));
        tr.append(web);
      } else {
        const why = m.error ? `unreachable (${m.error.code})` : "unreachable";
        tr.append(cell(why, "role"), cell(), cell(), cell(), cell(), cell(), cell(), cell(),
          cell(m.voter ? "voter" : "learner"), cell(m.addr), cell());
      }
      return tr;
    });
    $("members").replaceChildren(...rows);
    const up = st.members.filter((m) => m.status).length;
    if (leader) {
      if (!leaderSince || leaderSince.id !== leader.id) leaderSince = { id: leader.id, at: new Date() };
      $("summary").textContent = `leader: node ${leader.id}, term ${leader.status.term} ` +
        `(since ${leaderSince.at.toLocaleTimeString()}) · ${up} of ${st.members.length} nodes answer · ` +
        `commit index ${leader.status.commit_index}`;
      $("summary").dataset.leader = leader.id;
    } else {
      $("summary").textContent = `no leader right now · ${up} of ${st.members.length} nodes answer`;
      $("summary").dataset.leader = "";
    }
  }

  async function tick() {
    try {
      const st = await RR.call("GET", "/v1/cluster/status", undefined, { budgetMs: 4000, timeoutMs: 2500 });
      RR.learn(st);
      render(st);
      $("error").textContent = "";
    } catch (e) {
      $("error").textContent = e.message;
      await RR.findLive(RR.current());
    }
    setTimeout(tick, 1000);
  }

  RR.tokenBox(() => {});
  tick();
})();
