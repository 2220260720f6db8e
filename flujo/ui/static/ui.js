// flujo ui: live node phases over server-sent events, and a step's details on click.
// No framework, no build step; nothing is loaded from anywhere but this server.
"use strict";
(function () {
  const run = document.getElementById("run");
  function ready() {
    window.flujoReady = performance.now();
    document.body.dataset.ready = "true";
  }
  if (!run) { ready(); return; }
  const detail = document.getElementById("detail");
  const PHASES = /(^|\s)phase-\S+/g;

  function setPhase(el, phase) {
    el.setAttribute("class", el.getAttribute("class").replace(PHASES, "") + " phase-" + phase);
  }
  function text(id, value) {
    const el = document.getElementById(id);
    if (el && el.textContent !== value) el.textContent = value;
  }

  let awaiting = JSON.stringify([]);
  let finished = run.dataset.finished === "true";
  function refreshActions() {
    fetch(run.dataset.actions, { headers: { Accept: "text/html" } })
      .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
      .then((html) => { document.getElementById("actions").innerHTML = html; })
      .catch(() => {});
  }
  let shell = run.dataset.shell === "true";
  function apply(state) {
    if (shell) {  // the first state of a page sent before its run was replayed
      shell = false;
      run.dataset.shell = "false";
      const figure = document.querySelector("figure.graph");
      figure.classList.remove("loading");
      const note = figure.querySelector(".replaying");
      if (note) note.remove();
      fetch(run.dataset.io).then((r) => r.text()).then((html) => {
        document.getElementById("io").innerHTML = html;  // rendered and escaped by the server
      });
    }
    for (const [id, node] of Object.entries(state.nodes)) {
      const el = document.getElementById(id);
      if (!el) continue;
      if (el.dataset.phase !== node.label) {
        setPhase(el, node.phase);
        el.dataset.phase = node.label;
        const title = el.querySelector("title");
        if (title) title.textContent = title.textContent.replace(/: .*$/, ": " + node.label);
      }
      const note = el.querySelector(".note");
      if (note && note.textContent !== node.note) note.textContent = node.note;
    }
    const s = state.summary;
    const badge = document.getElementById("run-phase");
    if (badge.textContent !== s.phase) { badge.textContent = s.phase; setPhase(badge, s.phaseClass); }
    text("run-progress", s.progress);
    text("run-tokens", s.tokens.toLocaleString("en-US"));
    text("run-cost", s.cost);
    text("run-launches", String(s.launches));
    text("run-message", s.message);
    const nowAwaiting = JSON.stringify(s.awaiting);
    if (nowAwaiting !== awaiting || s.finished !== finished) {
      awaiting = nowAwaiting;
      finished = s.finished;
      refreshActions();
    }
    run.dataset.finished = String(s.finished);
    run.dataset.updates = String(Number(run.dataset.updates || 0) + 1);
  }

  if (!finished) {
    const events = new EventSource(run.dataset.events);
    events.addEventListener("open", () => { run.dataset.live = "open"; });
    events.addEventListener("state", (e) => apply(JSON.parse(e.data)));
    events.addEventListener("end", () => {
      events.close();
      run.dataset.live = "ended";
      text("live", "");
      fetch(run.dataset.io).then((r) => r.text()).then((html) => {
        document.getElementById("io").innerHTML = html;
      });
    });
    events.addEventListener("failure", (e) => {
      events.close();
      run.dataset.live = "failed";
      text("live", JSON.parse(e.data).message);
    });
  }

  function open(name, push) {
    const url = run.dataset.step + "?node=" + encodeURIComponent(name);
    detail.setAttribute("aria-busy", "true");
    fetch(url, { headers: { Accept: "text/html" } })
      .then((r) => r.text())
      .then((html) => {
        detail.innerHTML = html;  // rendered and escaped by the server
        detail.removeAttribute("aria-busy");
        for (const el of document.querySelectorAll(".node.selected")) el.classList.remove("selected");
        const el = document.getElementById("n-" + name);
        if (el) el.classList.add("selected");
        if (push) history.replaceState(null, "", "?node=" + encodeURIComponent(name));
      });
  }
  for (const link of document.querySelectorAll("a.node-link")) {
    link.addEventListener("click", (e) => {
      e.preventDefault();
      open(link.dataset.node, true);
    });
  }
  ready();
})();
