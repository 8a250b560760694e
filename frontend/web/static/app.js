// sluice page: one WebSocket per tab carries the passkey ceremonies, the
// session list and the terminal. The sign-in lives only in that socket on
// the server; there is no cookie and nothing to store here.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const views = ["connecting", "enroll", "signin", "sessions", "term", "player"];
  const enc = new TextEncoder();

  function show(name) {
    for (const v of views) $("view-" + v).hidden = v !== name;
    document.body.dataset.view = name;
    if (name === "term" && term) {
      fit.fit();
      term.focus();
    }
  }

  function status(text, isError) {
    const s = $("status");
    s.textContent = text || "";
    s.className = isError ? "error" : "";
  }

  // --- base64url and WebAuthn JSON -------------------------------------

  function b64uToBuf(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function bufToB64u(buf) {
    const b = new Uint8Array(buf);
    let bin = "";
    for (let i = 0; i < b.length; i++) bin += String.fromCharCode(b[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(json) {
    const o = json.publicKey || json;
    o.challenge = b64uToBuf(o.challenge);
    o.user.id = b64uToBuf(o.user.id);
    for (const c of o.excludeCredentials || []) c.id = b64uToBuf(c.id);
    return o;
  }

  function requestOptions(json) {
    const o = json.publicKey || json;
    o.challenge = b64uToBuf(o.challenge);
    for (const c of o.allowCredentials || []) c.id = b64uToBuf(c.id);
    return o;
  }

  function credentialJSON(cred) {
    const r = cred.response;
    const out = {
      id: cred.id,
      rawId: bufToB64u(cred.rawId),
      type: cred.type,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: { clientDataJSON: bufToB64u(r.clientDataJSON) },
    };
    if (cred.authenticatorAttachment) out.authenticatorAttachment = cred.authenticatorAttachment;
    if (r.attestationObject) {
      out.response.attestationObject = bufToB64u(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    }
    if (r.authenticatorData) {
      out.response.authenticatorData = bufToB64u(r.authenticatorData);
      out.response.signature = bufToB64u(r.signature);
      if (r.userHandle) out.response.userHandle = bufToB64u(r.userHandle);
    }
    return out;
  }

  // --- socket ----------------------------------------------------------

  let ws = null;
  let pending = null; // {types, op, resolve, reject}
  let user = "";
  let fleetOn = false; // the server is a fleet's gateway (fleet.js)

  function send(m) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(m));
  }

  // request sends m and resolves with the first reply of one of types, or
  // rejects with the error the server sent for it.
  function request(m, ...types) {
    return new Promise((resolve, reject) => {
      if (pending) pending.reject(new Error("superseded"));
      pending = { types, op: m.t, resolve, reject };
      send(m);
    });
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(proto + "//" + location.host + "/ws");
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") return output(new Uint8Array(ev.data));
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (pending && (pending.types.includes(m.t) || (m.t === "error" && m.op === pending.op))) {
        const p = pending;
        pending = null;
        if (m.t === "error") p.reject(m); else p.resolve(m);
        if (m.t !== "attached") return;
      }
      control(m);
    };
    ws.onclose = (ev) => {
      // 4001: the server closed the socket because the grant it signed
      // in with was revoked (user disabled, passkey removed).
      status(ev.code === 4001 ? "Access revoked (" + (ev.reason || "sign in again") + "). Reload the page to sign in again."
        : "Disconnected. Reload the page to sign in again.", true);
      if (pending) pending.reject({ message: "disconnected" });
      pending = null;
      if (term) term.options.disableStdin = true;
    };
  }

  function errText(e) {
    if (!e) return "failed";
    if (e.code && e.message) return e.code === "denied" ? "Denied: " + e.message : e.message;
    return e.message || String(e);
  }

  // --- enrollment and sign-in -----------------------------------------

  function enrollToken() {
    let t = location.hash.replace(/^#/, "");
    if (t.startsWith("token=")) t = t.slice(6);
    return decodeURIComponent(t);
  }

  async function enroll() {
    status("");
    try {
      const token = enrollToken();
      const opts = await request({ t: "register-begin", token }, "register-options");
      $("enroll-user").textContent = opts.user;
      const cred = await navigator.credentials.create({ publicKey: creationOptions(opts.options) });
      const done = await request({ t: "register-finish", credential: credentialJSON(cred) }, "registered");
      // The token is spent; do not leave it in the address bar or history.
      history.replaceState(null, "", "/");
      $("signin-note").textContent = "Passkey created for " + done.user + ". Sign in with it now.";
      show("signin");
    } catch (e) {
      status(errText(e), true);
    }
  }

  async function signIn() {
    status("");
    try {
      const opts = await request({ t: "login-begin" }, "login-options");
      const cred = await navigator.credentials.get({ publicKey: requestOptions(opts.options) });
      const ok = await request({ t: "login-finish", assertion: credentialJSON(cred) }, "signed-in");
      user = ok.user;
      $("who").textContent = "signed in as " + user;
      // #join=ID/TOKEN, or #join=ID/TOKEN/HOST for a session on a host
      // of the fleet.
      const join = /^#join=([^/]+)\/([^/]+)(?:\/([^/]+))?$/.exec(location.hash);
      if (join) {
        const m = { t: "attach", id: decodeURIComponent(join[1]), share: join[2] };
        if (join[3]) m.host = decodeURIComponent(join[3]);
        await attach(m);
      } else {
        await listSessions();
      }
    } catch (e) {
      status(errText(e), true);
    }
  }

  // --- sessions --------------------------------------------------------

  async function listSessions() {
    const r = await request({ t: "list" }, "sessions");
    const body = $("sessions").tBodies[0];
    body.replaceChildren();
    for (const s of r.sessions) {
      const tr = document.createElement("tr");
      const cells = [
        s.machine,
        s.unix_user,
        new Date(s.created).toLocaleString(),
        viewerText(s.viewers, false) || "none",
        s.sharing,
      ];
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = c;
        tr.append(td);
      }
      const actions = document.createElement("td");
      const button = (label, fn) => {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        b.addEventListener("click", () => fn().catch((e) => status(errText(e), true)));
        actions.append(b);
      };
      button("open", () => attach({ t: "attach", id: s.id }));
      button("share read-only", () => share(s.id, "read-only"));
      button("share read-write", () => share(s.id, "read-write"));
      if (s.sharing !== "private") button("stop sharing", () => share(s.id, "private"));
      button("end", async () => {
        await request({ t: "end", id: s.id }, "ended");
        await listSessions();
      });
      tr.append(actions);
      body.append(tr);
    }
    $("no-sessions").hidden = r.sessions.length > 0;
    show("sessions");
    await loadTargets();
    await loadPasskeys();
    if (window.sluiceAudit) await window.sluiceAudit.refresh();
    if (window.sluiceFleet) await window.sluiceFleet.refresh();
  }

  // viewerText names who watches a session; an auditor (whom the policy,
  // not a share, lets watch) is always called one, so the owner knows.
  function viewerText(list, bareOwner) {
    return (list || [])
      .map((v) => v.user + (v.auditor ? " (auditor)" : bareOwner && v.mode === "owner" ? "" : " (" + v.mode + ")"))
      .join(", ");
  }

  // share changes a session's sharing. Viewers already attached lose what
  // the change takes away at once (the server detaches or lowers them);
  // the history box decides whether new viewers see earlier output.
  async function share(id, mode) {
    const history = $("share-history").checked;
    const r = await request({ t: "share", id, mode, history }, "shared");
    if (mode === "private") {
      $("share-link").hidden = true;
      $("share-link-text").value = "";
      status("Sharing stopped: everyone watching was detached and the old links no longer work.");
      await listSessions();
      return;
    }
    const link = location.origin + "/#join=" + encodeURIComponent(id) + "/" + r.token;
    $("share-link").hidden = false;
    $("share-link-text").value = link;
    $("share-link-text").select();
    status("Anyone signed in with this link can " + (mode === "read-only" ? "watch" : "type in") + " the session.");
    await listSessions();
  }

  // --- passkeys -----------------------------------------------------------

  // loadPasskeys lists the signed-in user's passkeys. The server asks auth
  // with this socket's own grant; the page names at most a passkey's ID.
  async function loadPasskeys() {
    let r;
    try {
      r = await request({ t: "passkey-list" }, "passkeys");
    } catch (e) {
      if (e instanceof Error && e.message === "superseded") return;
      status("Could not list your passkeys: " + errText(e), true);
      return;
    }
    const list = Array.isArray(r.passkeys) ? r.passkeys : [];
    const body = $("passkeys").tBodies[0];
    body.replaceChildren();
    $("passkey-last").hidden = true;
    for (const p of list) {
      const tr = document.createElement("tr");
      tr.dataset.id = p.id;
      const cells = [
        p.name || "(unnamed)",
        new Date(p.created).toLocaleString(),
        p.last_used ? new Date(p.last_used).toLocaleString() : "never",
        p.current ? "this one" : "",
      ];
      cells.forEach((c, i) => {
        const td = document.createElement("td");
        td.textContent = c;
        if (i === 3) td.className = "current";
        tr.append(td);
      });
      const actions = document.createElement("td");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "passkey-remove";
      b.textContent = "remove";
      b.addEventListener("click", () => {
        if (list.length === 1) {
          // The last one only after a confirmation (the server insists too).
          confirmLast = p.id;
          $("passkey-last").hidden = false;
          return;
        }
        removePasskey(p.id, false).catch((e) => status(errText(e), true));
      });
      actions.append(b);
      tr.append(actions);
      body.append(tr);
    }
  }

  let confirmLast = "";

  async function removePasskey(id, last) {
    const r = await request({ t: "passkey-revoke", id, last }, "passkey-revoked");
    status(r.remaining === 0 ? "Passkey removed. You have none left." : "Passkey removed.");
    // Removing the passkey this tab signed in with revokes the sign-in:
    // the server closes the socket, and the list would be refused.
    const row = [...$("passkeys").tBodies[0].rows].find((tr) => tr.dataset.id === id);
    if (row && row.cells[3].textContent === "this one") return;
    await loadPasskeys();
  }

  // addPasskey runs the registration ceremony of enrollment, with a token
  // the server got for this socket's user and keeps to itself.
  async function addPasskey(name) {
    status("");
    const opts = await request({ t: "passkey-add" }, "register-options");
    const cred = await navigator.credentials.create({ publicKey: creationOptions(opts.options) });
    await request({ t: "register-finish", credential: credentialJSON(cred), name }, "registered");
    status("Passkey added.");
    await loadPasskeys();
  }

  // --- new-session form ------------------------------------------------

  // loadTargets asks which shells the policy offers and fills the form
  // with them. It is asked each time the form is shown, as the policy
  // file may have changed. The list is a hint: the form still sends what
  // is typed, and the policy decides on create.
  async function loadTargets() {
    let r;
    try {
      r = await request({ t: "targets" }, "targets");
    } catch (e) {
      // Superseded: the user went on (opened a session) before the answer.
      if (e instanceof Error && e.message === "superseded") return;
      // Without the list the form works as before; create still decides.
      fillTargets(null, false);
      status("Could not ask which shells you may open: " + errText(e), true);
      return;
    }
    fillTargets(Array.isArray(r.targets) ? r.targets : [], !!r.truncated);
  }

  // fillTargets shows exact targets as buttons that open the shell in one
  // click, and offers every name the rules give as a suggestion for the
  // fields ("*" is any: a pattern lets the user type the rest). An empty
  // list (null: unknown) says so and disables the form's button.
  function fillTargets(list, truncated) {
    const buttons = [];
    const users = new Set();
    const machines = new Set();
    const patterns = [];
    for (const tg of list || []) {
      if (!tg || typeof tg.user !== "string" || typeof tg.machine !== "string") continue;
      if (tg.user !== "*") users.add(tg.user);
      if (tg.machine !== "*") machines.add(tg.machine);
      if (tg.pattern) {
        patterns.push(describe(tg));
        continue;
      }
      const b = document.createElement("button");
      b.type = "button";
      b.className = "target";
      b.textContent = tg.user + " on " + tg.machine;
      b.dataset.user = tg.user;
      b.dataset.machine = tg.machine;
      b.addEventListener("click", () => openShell(tg.machine, tg.user));
      buttons.push(b);
    }
    $("targets").replaceChildren(...buttons);
    choices($("user-choices"), users);
    choices($("machine-choices"), machines);
    const more = [];
    if (patterns.length) more.push("Also allowed: " + patterns.join("; ") + ".");
    if (truncated) more.push("The policy allows more than is listed here; type the one you want.");
    $("targets-patterns").textContent = more.join(" ");
    $("targets-patterns").hidden = more.length === 0;
    const none = list !== null && list.length === 0;
    $("targets-none").hidden = !none;
    $("new-session-submit").disabled = none;
  }

  function describe(tg) {
    return (tg.user === "*" ? "any account" : tg.user) + " on " + (tg.machine === "*" ? "any machine" : tg.machine);
  }

  function choices(datalist, values) {
    datalist.replaceChildren(...[...values].map((v) => {
      const o = document.createElement("option");
      o.value = v;
      return o;
    }));
  }

  function openShell(machine, user) {
    attach({ t: "create", machine, user })
      .catch((e) => { show("sessions"); status(errText(e), true); });
  }

  // --- terminal ----------------------------------------------------------

  let term = null;
  let fit = null;
  let att = 0; // attachment serial, echoed in acks
  let processed = 0;
  let acked = 0;
  let windowSize = 65536;
  let mode = "";
  let sessionTitle = "";

  function ensureTerminal() {
    if (term) return;
    term = new Terminal({ cursorBlink: true, scrollback: 5000, fontFamily: "monospace", fontSize: 14 });
    fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open($("terminal"));
    term.onData((d) => {
      if (mode !== "read-only") ws.send(enc.encode(d));
    });
    term.onBinary((d) => {
      if (mode === "read-only") return;
      const b = new Uint8Array(d.length);
      for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 255;
      ws.send(b);
    });
    term.onResize(({ cols, rows }) => {
      if (att && mode !== "read-only") send({ t: "resize", cols, rows });
    });
    term.onTitleChange((t) => { document.title = (t ? t + " — " : "") + sessionTitle; });
    new ResizeObserver(() => { if (!$("view-term").hidden) fit.fit(); }).observe($("terminal"));
  }

  // output writes pty bytes and acknowledges them once xterm has parsed
  // them, so the server never runs more than a window ahead of the screen.
  // It acknowledges at once when a quarter of the window is unacknowledged
  // (the server never waits on an acknowledgement held back), otherwise
  // within ACK_DELAY_MS: a keystroke's echo then costs no acknowledgement
  // of its own while typing goes on (a message, and a wake-up of the
  // server, per key), and the server hears of everything parsed soon
  // after output stops. tests/suiterun's Browser follows the same rule.
  const ACK_DELAY_MS = 20;
  let ackTimer = 0;
  function ackNow() {
    clearTimeout(ackTimer);
    ackTimer = 0;
    if (processed > acked) {
      acked = processed;
      send({ t: "ack", a: att, n: processed });
    }
  }
  function output(data) {
    if (!term) return;
    const n = data.length;
    const forAtt = att;
    term.write(data, () => {
      if (forAtt !== att) return;
      processed += n;
      if (processed - acked >= windowSize / 4) ackNow();
      else if (!ackTimer) ackTimer = setTimeout(ackNow, ACK_DELAY_MS);
    });
  }

  async function attach(m) {
    ensureTerminal();
    show("term");
    fit.fit();
    m.cols = term.cols;
    m.rows = term.rows;
    await request(m, "attached");
  }

  function attached(m) {
    att = m.a;
    clearTimeout(ackTimer);
    ackTimer = 0;
    processed = acked = 0;
    windowSize = m.window || windowSize;
    mode = m.mode;
    term.reset();
    term.options.disableStdin = mode === "read-only";
    const s = m.session;
    const where = s.machine === ".host" ? (s.host || location.hostname) : (s.host ? s.host + ":" : "") + s.machine;
    sessionTitle = s.unix_user + "@" + where + " — sluice";
    document.title = sessionTitle;
    $("term-title").textContent = s.unix_user + " on " + (s.host ? s.host + " " : "") + s.machine + (s.owner !== user ? " (" + s.owner + "'s)" : "");
    $("term-mode").textContent = mode === "owner" ? "" : mode;
    viewers(s.viewers);
    status("");
    show("term");
    if (mode !== "read-only") send({ t: "resize", cols: term.cols, rows: term.rows });
  }

  function viewers(list) {
    list = list || [];
    $("term-viewers").textContent = list.length > 1 ? "watching: " + viewerText(list, true) : "";
  }

  function control(m) {
    switch (m.t) {
      case "hello":
        fleetOn = !!m.fleet;
        route();
        break;
      case "attached":
        attached(m);
        break;
      case "viewers":
        if (m.a === att) viewers(m.viewers);
        break;
      case "skipped":
        if (m.a === att) term.write("\r\n\x1b[33m[" + m.bytes + " bytes skipped: this view fell behind]\x1b[0m\r\n");
        break;
      case "mode":
        if (m.a === att) {
          term.options.disableStdin = m.mode === "read-only";
          $("term-mode").textContent = m.mode;
          term.write("\r\n\x1b[33m[the owner made this session read-only]\x1b[0m\r\n");
          status("The owner made this session read-only.");
        }
        break;
      case "revoked":
        if (m.a === att) {
          term.options.disableStdin = true;
          term.write("\r\n\x1b[31m[the owner stopped sharing this session]\x1b[0m\r\n");
          status("The owner stopped sharing this session; you were detached.", true);
          att = 0;
        }
        break;
      case "detached":
        if (m.a === att) {
          term.options.disableStdin = true;
          term.write("\r\n\x1b[33m[" + m.message + "]\x1b[0m\r\n");
          status("Detached: " + m.message + ".", true);
          att = 0;
        }
        break;
      case "idle":
        if (m.a === att) {
          term.options.disableStdin = true;
          term.write("\r\n\x1b[33m[" + m.message + "]\x1b[0m\r\n");
          status("Detached: " + m.message + ". Reload the page to sign in again.", true);
          att = 0;
        }
        break;
      case "exit":
        if (m.a === att) {
          term.write("\r\n\x1b[2m[session ended]\x1b[0m\r\n");
          status("The session has ended.");
          att = 0;
        }
        break;
      case "error":
        status(errText(m), true);
        break;
    }
  }

  function route() {
    if (location.pathname === "/enroll") {
      show("enroll");
    } else {
      show("signin");
    }
  }

  // --- wiring ------------------------------------------------------------

  $("enroll-button").addEventListener("click", enroll);
  $("signin-button").addEventListener("click", signIn);
  $("term-back").addEventListener("click", async () => {
    try {
      await request({ t: "detach" }, "detached");
      att = 0;
      document.title = "sluice";
      await listSessions();
    } catch (e) {
      status(errText(e), true);
    }
  });
  $("new-session").addEventListener("submit", (ev) => {
    ev.preventDefault();
    // requestSubmit() and Enter in a field get here with the button
    // disabled too; the policy allows nothing, so there is nothing to ask.
    if ($("new-session-submit").disabled) return;
    const f = ev.target;
    openShell(f.machine.value.trim(), f.user.value.trim());
  });
  $("passkey-add").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    addPasskey(f.elements.namedItem("name").value.trim())
      .then(() => { f.reset(); })
      .catch((e) => status(errText(e), true));
  });
  $("passkey-last-confirm").addEventListener("click", () => {
    const id = confirmLast;
    confirmLast = "";
    $("passkey-last").hidden = true;
    if (id) removePasskey(id, true).catch((e) => status(errText(e), true));
  });
  $("passkey-last-cancel").addEventListener("click", () => {
    confirmLast = "";
    $("passkey-last").hidden = true;
  });
  // What audit.js (the auditor's view and the player) uses of this page.
  window.sluice = { $, request, attach, show, status, errText, viewerText,
    fleet: () => fleetOn, refresh: listSessions };
  connect();
})();
