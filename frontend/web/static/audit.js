// sluice page, the auditor's part: live sessions the policy lets this user
// watch (read-only; the owner's page lists the auditor), and the player
// for recordings (asciicast v2 replayed into its own xterm.js, with pause
// and seek). Who may see what is decided by ptystore and policy on every
// call; this file only shows what they answered.
"use strict";
(() => {
  const app = window.sluice;
  const $ = app.$;

  // --- the audit section of the sessions page ----------------------------

  // refresh shows the audit section if the policy names this user as an
  // auditor, and fills it. The scope is a hint: every list and every
  // watch is decided again by ptystore, which asks policy itself.
  async function refresh() {
    let scope;
    try {
      scope = await app.request({ t: "audit-scope" }, "audit-scope");
    } catch (e) {
      $("audit").hidden = true;
      return;
    }
    const machines = Array.isArray(scope.machines) ? scope.machines : [];
    $("audit").hidden = machines.length === 0;
    if (machines.length === 0) return;
    $("audit-scope").textContent = machines.includes("*") ? " on every machine" : " on " + machines.join(", ");
    await listLive();
    await listRecordings();
  }

  function cell(tr, text) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.append(td);
    return td;
  }

  function button(td, label, fn) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.addEventListener("click", () => fn().catch((e) => app.status(app.errText(e), true)));
    td.append(b);
    return b;
  }

  async function listLive() {
    let r;
    try {
      r = await app.request({ t: "audit-list" }, "audit-sessions");
    } catch (e) {
      app.status("Could not list the sessions you may audit: " + app.errText(e), true);
      return;
    }
    const body = $("audit-sessions").tBodies[0];
    body.replaceChildren();
    for (const s of r.sessions || []) {
      const tr = document.createElement("tr");
      tr.dataset.id = s.id;
      cell(tr, s.owner);
      cell(tr, s.machine);
      cell(tr, s.unix_user);
      cell(tr, new Date(s.created).toLocaleString());
      cell(tr, app.viewerText(s.viewers, false) || "none");
      button(cell(tr, ""), "watch", () => app.attach({ t: "audit-attach", id: s.id }));
      body.append(tr);
    }
    $("audit-none").hidden = (r.sessions || []).length > 0;
  }

  async function listRecordings() {
    const note = $("recordings-note");
    const body = $("recordings").tBodies[0];
    body.replaceChildren();
    let r;
    try {
      r = await app.request({ t: "recordings" }, "recordings");
    } catch (e) {
      note.textContent = app.errText(e);
      note.hidden = false;
      return;
    }
    const list = Array.isArray(r.recordings) ? r.recordings : [];
    note.textContent = list.length ? "" : "No recordings you may play.";
    note.hidden = list.length > 0;
    for (const rec of list) {
      const tr = document.createElement("tr");
      tr.dataset.id = rec.id;
      cell(tr, rec.user);
      cell(tr, rec.machine);
      cell(tr, rec.started ? new Date(rec.started).toLocaleString() : "");
      cell(tr, Math.ceil(rec.size / 1024) + " KiB");
      button(cell(tr, ""), "play", () => open(rec.id, rec.user + "@" + rec.machine));
      body.append(tr);
    }
  }

  async function open(id, title) {
    const r = await app.request({ t: "recording", id }, "recording");
    player.load(r.cast, title);
    app.show("player");
  }

  // --- the player ----------------------------------------------------------

  // parseCast reads asciicast v2: a header line, then [time, code, data]
  // events. Output and resizes are replayed; input events ("i") are not
  // shown. A line that does not parse (the last one of a recording cut
  // short) is left out, so what was written before it still plays.
  function parseCast(text) {
    const lines = text.split("\n");
    let header;
    try {
      header = JSON.parse(lines[0]);
    } catch (e) {
      throw new Error("not an asciicast recording");
    }
    if (!header || header.version !== 2) throw new Error("not an asciicast v2 recording");
    const events = [];
    let last = 0;
    for (let i = 1; i < lines.length; i++) {
      const l = lines[i].trim();
      if (!l) continue;
      let e;
      try { e = JSON.parse(l); } catch (err) { continue; }
      if (!Array.isArray(e) || e.length < 3 || typeof e[0] !== "number" || typeof e[2] !== "string") continue;
      if (e[1] !== "o" && e[1] !== "r") continue;
      last = Math.max(last, e[0]);
      events.push([Math.max(e[0], events.length ? events[events.length - 1][0] : 0), e[1], e[2]]);
    }
    return { header, events, duration: last };
  }

  function clock(t) {
    t = Math.max(0, Math.floor(t));
    const s = t % 60;
    return Math.floor(t / 60) + ":" + (s < 10 ? "0" : "") + s;
  }

  const player = {
    term: null,
    cast: null,
    idx: 0, // next event to apply
    pos: 0, // position in seconds while paused; the base while playing
    wall: 0, // performance.now() when pos was taken, while playing
    playing: false,
    speed: 1,
    timer: 0,
    pending: 0, // writes xterm has not parsed yet

    ensure() {
      if (this.term) return;
      this.term = new Terminal({ scrollback: 5000, fontFamily: "monospace", fontSize: 14, disableStdin: true, cursorBlink: false });
      this.term.open($("player"));
    },

    load(text, title) {
      this.pause();
      this.cast = parseCast(text);
      this.ensure();
      $("player-title").textContent = title;
      $("player-seek").max = String(this.cast.duration);
      this.seek(0);
      this.play();
    },

    write(data) {
      this.pending++;
      this.term.write(data, () => { this.pending--; });
    },

    // apply replays one event into the terminal.
    apply(e) {
      if (e[1] === "o") {
        this.write(e[2]);
        return;
      }
      const m = /^(\d{1,4})x(\d{1,4})$/.exec(e[2]);
      if (m) this.term.resize(Math.max(2, +m[1]), Math.max(1, +m[2]));
    },

    now() {
      if (!this.playing) return this.pos;
      return Math.min(this.cast.duration, this.pos + (performance.now() - this.wall) / 1000 * this.speed);
    },

    play() {
      if (!this.cast || this.playing) return;
      if (this.pos >= this.cast.duration) this.seek(0); // from the start again
      this.playing = true;
      this.wall = performance.now();
      this.tick();
    },

    pause() {
      if (!this.playing) return;
      this.pos = this.now();
      this.playing = false;
      clearTimeout(this.timer);
      this.ui();
    },

    // tick applies every event due by now and sleeps until the next one
    // (at most a quarter second, to move the clock).
    tick() {
      if (!this.playing) return;
      const t = this.now();
      const ev = this.cast.events;
      while (this.idx < ev.length && ev[this.idx][0] <= t) this.apply(ev[this.idx++]);
      if (this.idx >= ev.length && t >= this.cast.duration) {
        this.pos = this.cast.duration;
        this.playing = false;
        this.ui();
        return;
      }
      this.ui();
      const next = this.idx < ev.length ? ev[this.idx][0] : this.cast.duration;
      this.timer = setTimeout(() => this.tick(), Math.min(250, Math.max(0, (next - t) / this.speed * 1000)));
    },

    // seek resets the terminal and replays everything up to t at once:
    // output in as few writes as it takes, resizes in their place.
    seek(t) {
      const was = this.playing;
      if (was) this.pause();
      t = Math.max(0, Math.min(t, this.cast.duration));
      const h = this.cast.header;
      this.term.reset();
      this.term.resize(Math.max(2, h.width | 0 || 80), Math.max(1, h.height | 0 || 24));
      let chunk = "";
      let i = 0;
      const ev = this.cast.events;
      for (; i < ev.length && ev[i][0] <= t; i++) {
        if (ev[i][1] === "o") {
          chunk += ev[i][2];
          continue;
        }
        if (chunk) this.write(chunk);
        chunk = "";
        this.apply(ev[i]);
      }
      if (chunk) this.write(chunk);
      this.idx = i;
      this.pos = t;
      this.ui();
      if (was) this.play();
    },

    ui() {
      const t = this.now();
      $("player-seek").value = String(t);
      $("player-time").textContent = clock(t) + " / " + clock(this.cast ? this.cast.duration : 0);
      $("player-play").textContent = this.playing ? "Pause" : "Play";
    },

    // state and text are what the page's tests read.
    state() {
      return { pos: this.now(), duration: this.cast ? this.cast.duration : 0, playing: this.playing,
        idx: this.idx, events: this.cast ? this.cast.events.length : 0, settled: this.pending === 0,
        cols: this.term ? this.term.cols : 0, rows: this.term ? this.term.rows : 0 };
    },

    text() {
      const b = this.term.buffer.active;
      const out = [];
      for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
      return out.join("\n");
    },
  };

  $("player-play").addEventListener("click", () => (player.playing ? player.pause() : player.play()));
  $("player-seek").addEventListener("input", (ev) => player.seek(parseFloat(ev.target.value) || 0));
  $("player-speed").addEventListener("change", (ev) => {
    const was = player.playing;
    player.pause();
    player.speed = parseFloat(ev.target.value) || 1;
    if (was) player.play();
  });
  $("player-back").addEventListener("click", () => {
    player.pause();
    app.show("sessions");
    refresh().catch((e) => app.status(app.errText(e), true));
  });

  window.sluiceAudit = { refresh };
  window.sluicePlayer = player;
})();
