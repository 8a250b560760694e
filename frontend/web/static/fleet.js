// sluice page, fleet view (docs/fleet.md): on a gateway the server says
// so in its hello, and the sessions view lists the fleet's hosts: per
// host, what that host's own policy offers this user and the user's
// sessions there. Every action names the host; the server asks the host
// with a grant of its own making, so nothing here is trusted for it.
"use strict";
(() => {
  const s = window.sluice;
  const $ = s.$;

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    e.append(...children);
    return e;
  }

  function button(label, fn, cls) {
    const b = el("button", { type: "button", textContent: label });
    if (cls) b.className = cls;
    b.addEventListener("click", () => fn().catch((e) => s.status(s.errText(e), true)));
    return b;
  }

  function open(host, machine, user) {
    return s.attach({ t: "create", host, machine, user })
      .catch((e) => { s.show("sessions"); s.status(s.errText(e), true); });
  }

  function hostSection(h) {
    const sec = el("section", { className: "fleet-host" });
    sec.dataset.host = h.name;
    sec.append(el("h3", { textContent: h.name }));
    if (h.error) {
      const p = el("p", { className: "fleet-error error", textContent: s.errText({ code: h.code, message: h.error }) });
      sec.append(p);
      return sec;
    }
    const exact = h.targets.filter((t) => !t.pattern);
    const patterns = h.targets.filter((t) => t.pattern);
    if (h.targets.length === 0) {
      sec.append(el("p", { className: "fleet-none", textContent: "The policy of " + h.name + " allows you no shells there." }));
    }
    const targets = el("div", { className: "targets" });
    for (const t of exact) {
      const b = button(t.user + " on " + t.machine, () => open(h.name, t.machine, t.user), "target");
      b.dataset.user = t.user;
      b.dataset.machine = t.machine;
      targets.append(b);
    }
    sec.append(targets);
    const more = patterns.map((t) => (t.user === "*" ? "any account" : t.user) + " on " + (t.machine === "*" ? "any machine" : t.machine));
    if (more.length || h.truncated) {
      sec.append(el("p", { className: "hint", textContent: (more.length ? "Also allowed: " + more.join("; ") + ". " : "") +
        (h.truncated ? "The policy allows more than is listed here." : "") }));
    }
    // Typed targets: the host's policy decides, and a refusal says why.
    const form = el("form", { className: "fleet-new" });
    const machine = el("input", { name: "machine", value: ".host", size: 12, autocomplete: "off" });
    const user = el("input", { name: "user", size: 12, autocomplete: "off" });
    form.append(el("label", {}, "machine ", machine), " ", el("label", {}, "unix user ", user), " ",
      el("button", { type: "submit", textContent: "Open a shell on " + h.name }));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      open(h.name, machine.value.trim(), user.value.trim());
    });
    sec.append(form);
    if (h.sessions.length) sec.append(sessionsTable(h));
    return sec;
  }

  function sessionsTable(h) {
    const table = el("table", { className: "fleet-sessions" });
    const head = el("tr");
    for (const c of ["machine", "unix user", "started", "viewers", "sharing", ""]) head.append(el("th", { textContent: c }));
    table.append(el("thead", {}, head));
    const body = el("tbody");
    for (const x of h.sessions) {
      const tr = el("tr");
      tr.dataset.id = x.id;
      for (const c of [x.machine, x.unix_user, new Date(x.created).toLocaleString(), s.viewerText(x.viewers, false) || "none", x.sharing]) {
        tr.append(el("td", { textContent: c }));
      }
      const actions = el("td");
      actions.append(
        button("open", () => s.attach({ t: "attach", host: h.name, id: x.id }), "open"),
        button("share read-only", () => share(h.name, x.id, "read-only")),
        button("share read-write", () => share(h.name, x.id, "read-write")));
      if (x.sharing !== "private") actions.append(button("stop sharing", () => share(h.name, x.id, "private")));
      actions.append(button("end", async () => {
        await s.request({ t: "end", host: h.name, id: x.id }, "ended");
        await s.refresh();
      }, "end"));
      tr.append(actions);
      body.append(tr);
    }
    table.append(body);
    return table;
  }

  async function share(host, id, mode) {
    const history = $("share-history").checked;
    const r = await s.request({ t: "share", host, id, mode, history }, "shared");
    if (mode === "private") {
      $("share-link").hidden = true;
      s.status("Sharing stopped: everyone watching was detached and the old links no longer work.");
    } else {
      // The host goes last, so the page's join link reads as before.
      $("share-link").hidden = false;
      $("share-link-text").value = location.origin + "/#join=" + encodeURIComponent(id) + "/" + r.token + "/" + encodeURIComponent(host);
      $("share-link-text").select();
      s.status("Anyone signed in here with this link can " + (mode === "read-only" ? "watch" : "type in") + " the session on " + host + ".");
    }
    await s.refresh();
  }

  // refresh asks the server for every host's view (it asks the hosts in
  // parallel; one down or denying host does not hold up the others).
  async function refresh() {
    if (!s.fleet()) return;
    $("fleet").hidden = false;
    $("fleet-note").textContent = "Asking the hosts…";
    let r;
    try {
      r = await s.request({ t: "fleet" }, "fleet");
    } catch (e) {
      if (e instanceof Error && e.message === "superseded") return;
      $("fleet-note").textContent = "Could not list the fleet's hosts: " + s.errText(e);
      return;
    }
    const hosts = Array.isArray(r.hosts) ? r.hosts : [];
    $("fleet-hosts").replaceChildren(...hosts.map(hostSection));
    $("fleet-note").textContent = hosts.length ? "" : "The fleet has no hosts.";
  }

  window.sluiceFleet = { refresh };
})();
