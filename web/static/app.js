// baton's dashboard: live updates from the broker's event stream, the
// command runner, relative times. Plain JavaScript, no build step.
"use strict";

const page = document.body.dataset.page;

// --- times ---------------------------------------------------------------

function ago(ms) {
	const s = Math.max(0, Math.round(ms / 1000));
	if (s < 60) return s + "s ago";
	const m = Math.round(s / 60);
	if (m < 60) return m + " min ago";
	const h = Math.round(m / 60);
	if (h < 48) return h + " h ago";
	return Math.round(h / 24) + " days ago";
}

function duration(ms) {
	if (ms < 1000) return ms + "ms";
	if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + "s";
	const m = Math.floor(ms / 60000);
	return m + "m" + Math.round((ms % 60000) / 1000) + "s";
}

// Times marked .rel show how long ago; the exact time is their title.
function refreshTimes() {
	const now = Date.now();
	for (const t of document.querySelectorAll("time.rel")) {
		const at = Date.parse(t.getAttribute("datetime"));
		if (isNaN(at)) continue;
		if (!t.title) t.title = t.textContent;
		t.textContent = ago(now - at);
	}
	for (const td of document.querySelectorAll("td.heard")) {
		const seen = Number(td.dataset.seen);
		const age = Number(td.dataset.age);
		if (age < 0) { td.textContent = "-"; continue; }
		const since = age + (now - seen);
		td.textContent = since < 1000 ? "just now" : ago(since);
	}
}

function el(tag, attrs, ...children) {
	const e = document.createElement(tag);
	for (const [k, v] of Object.entries(attrs || {})) {
		if (v === undefined || v === null || v === false) continue;
		if (k === "text") e.textContent = v; else e.setAttribute(k, v);
	}
	for (const c of children) e.append(c);
	return e;
}

const label = (state) => state.replace("_", " ");

function stateBadge(state) {
	return el("span", { class: "badge st-" + state, text: label(state) });
}

// --- the event stream ----------------------------------------------------

// listen opens the broker's event stream from the event the page was
// rendered at; the browser reconnects by itself, resuming from the last
// event it saw.
function listen(handlers, withJobs) {
	const live = document.getElementById("live");
	const setLive = (cls, text) => { if (live) { live.hidden = false; live.className = "live " + cls; live.textContent = text; } };
	const q = new URLSearchParams({ after: document.body.dataset.cursor || "" });
	if (!withJobs) q.set("jobs", "0");
	const es = new EventSource("/api/events?" + q.toString());
	const liveText = live && live.dataset.text || "live";
	es.onopen = () => setLive("on", liveText);
	es.onerror = () => {
		setLive("off", es.readyState === EventSource.CLOSED ? "offline: reload the page" : "reconnecting…");
		// A session that ended (a new token, the broker's sign-in) is no
		// reconnecting matter.
		fetch("/api/status").then((r) => { if (r.status === 401) location.assign("/signin?next=" + encodeURIComponent(location.pathname + location.search)); }, () => {});
	};
	for (const [name, fn] of Object.entries(handlers)) {
		es.addEventListener(name, (ev) => fn(JSON.parse(ev.data)));
	}
	// What the page shows is older than what the broker still keeps: load it afresh.
	es.addEventListener("reset", () => { es.close(); location.reload(); });
	return es;
}

// --- Cluster -------------------------------------------------------------

function renderStatus(st) {
	const master = document.getElementById("master");
	master.replaceChildren(el("span", { class: st.master ? "badge master" : "badge st-lost", text: st.master || "none" }));
	document.getElementById("epoch").textContent = st.epoch;
	document.getElementById("count").textContent = st.members.length + (st.max_members ? "/" + st.max_members : "");
	document.getElementById("refused").textContent = st.max_members ? st.refused + " refused" : "";
	document.getElementById("change").textContent = st.last_change;
	const at = document.getElementById("change-at");
	at.setAttribute("datetime", st.last_change_at);
	at.title = new Date(st.last_change_at).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
	const body = document.querySelector("#members tbody");
	const now = Date.now();
	const rows = st.members.map((m) => el("tr", { class: m.master ? "is-master" : null },
		el("td", {}, el("strong", { text: m.name })),
		el("td", { class: "num opt", text: m.priority }),
		el("td", { class: "num opt", text: m.rank }),
		el("td", {}, m.master ? el("span", { class: "badge master", text: "master" }) : el("span", { class: "muted", text: "standby" })),
		el("td", { class: "heard", "data-age": m.heartbeat_age_ms, "data-seen": now }),
		el("td", { class: "opt mono", text: m.version || "-" })));
	if (rows.length === 0) {
		rows.push(el("tr", { class: "empty" }, el("td", { colspan: 6, class: "muted",
			text: "No node is a member. Start one: bin/node --broker-addr=ADDR --priority=N (and --credentials node.creds when the broker requires them)." })));
	}
	body.replaceChildren(...rows);
	refreshTimes();
}

function addTimeline(t) {
	const list = document.getElementById("timeline");
	list.querySelector("li.empty")?.remove();
	list.prepend(el("li", {},
		el("time", { class: "rel", datetime: t.at, text: t.at }),
		el("span", { class: "kind k-" + t.kind, text: t.kind }),
		el("span", { text: t.text })));
	while (list.children.length > 200) list.lastElementChild.remove();
	refreshTimes();
}

function clusterPage() {
	const now = Date.now();
	for (const td of document.querySelectorAll("td.heard")) td.dataset.seen = now;
	listen({ status: renderStatus, cluster: addTimeline }, false);
}

// --- Jobs ----------------------------------------------------------------

function jobRow(j) {
	const done = j.finished_at !== null;
	const ran = done && j.started_at !== null;
	return el("tr", { "data-id": j.id },
		el("td", { class: "mono opt" }, el("a", { href: "/jobs/" + j.id, text: j.id })),
		el("td", {}, stateBadge(j.state)),
		el("td", { class: "cmd mono", title: j.cmd }, el("a", { href: "/jobs/" + j.id, text: j.cmd.split("\n")[0] })),
		el("td", { class: "opt", text: j.master || "-" }),
		el("td", { class: "opt" }, el("time", { class: "rel", datetime: j.submitted_at || "", text: j.submitted_at || "-" })),
		el("td", { class: "num opt", text: ran ? duration(j.duration_ms) : "-" }),
		el("td", { class: "num", text: done && j.exit_code >= 0 ? j.exit_code : "-" }));
}

// olderFrom points "Older →" at the jobs before id, the last row shown
// (rows pushed off the page by new ones stay on the next), making the link
// if the page had none.
function olderFrom(id) {
	let older = document.querySelector('a[rel="next"]');
	if (!older) {
		older = el("a", { class: "button secondary", rel: "next", text: "Older →" });
		document.querySelector(".pager .actions").append(older);
	}
	const q = new URLSearchParams(location.search);
	q.set("before", id);
	older.href = "/jobs?" + q.toString();
}

function jobsPage() {
	const table = document.getElementById("jobs");
	if (!table) return;
	const body = table.querySelector("tbody");
	// New jobs join the first page of a list filtered only by state and
	// node; any list updates the jobs it shows.
	const live = table.dataset.live === "1";
	const indicator = document.getElementById("live");
	if (indicator && !live) indicator.dataset.text = "live: rows shown update; new jobs need a reload";
	const want = (j) => (!table.dataset.state || j.state === table.dataset.state) &&
		(!table.dataset.node || j.master === table.dataset.node || j.submitter === table.dataset.node);
	listen({
		job: (j) => {
			const old = body.querySelector(`tr[data-id="${CSS.escape(j.id)}"]`);
			if (old) {
				if (want(j) || !live) old.replaceWith(jobRow(j)); else old.remove();
			} else if (live && want(j)) {
				body.querySelector("tr.empty")?.remove();
				// Newest first: IDs sort by submission time.
				const after = [...body.rows].find((r) => r.dataset.id < j.id);
				body.insertBefore(jobRow(j), after || null);
				let cut = false;
				while (body.rows.length > Number(table.dataset.limit)) { body.lastElementChild.remove(); cut = true; }
				if (cut) olderFrom(body.lastElementChild.dataset.id);
			}
			refreshTimes();
		},
	}, true);
}

// --- Job -----------------------------------------------------------------

function jobPage() {
	const badge = document.getElementById("job-state");
	if (!badge || badge.dataset.state !== "running") return;
	// A running job: show its ending, output and all, when it comes.
	listen({ job: (j) => { if (j.id === badge.dataset.id && j.state !== "running") location.reload(); } }, true);
}

// --- Run -----------------------------------------------------------------

// parseTimeout reads a duration as Go writes them (30s, 2m30s, 1h30m,
// 1500ms, 1.5s) or a bare number of seconds; 0 for none (the master's
// default), NaN for anything else, or for less than a millisecond.
function parseTimeout(s) {
	s = s.trim().replace(/\s+/g, "");
	if (!s) return 0;
	if (/^[0-9]+(\.[0-9]+)?$/.test(s)) s += "s";
	const units = { ms: 1, s: 1000, m: 60000, h: 3600000 };
	const part = /([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)/y;
	let ms = 0, m;
	while (part.lastIndex < s.length && (m = part.exec(s))) ms += Number(m[1]) * units[m[2]];
	if (part.lastIndex !== s.length || (ms > 0 && ms < 1)) return NaN;
	return Math.round(ms);
}

// size is n bytes (or characters) for a person.
function size(n) {
	if (n < 1024) return n + " B";
	if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
	return (n / (1 << 20)).toFixed(1) + " MiB";
}

// The most output the Run page holds; the job's page has the rest.
const maxShown = 1 << 20;

function runPage() {
	const form = document.getElementById("run-form");
	if (!form) return;
	const cmd = document.getElementById("cmd");
	const timeout = document.getElementById("timeout");
	const files = document.getElementById("files");
	const collect = document.getElementById("collect");
	const runButton = document.getElementById("run-button");
	const stopButton = document.getElementById("stop-button");
	const panel = document.getElementById("result-panel");
	const summary = document.getElementById("result-summary");
	const output = document.getElementById("output");
	const banner = document.getElementById("output-banner");
	let abort = null;

	cmd.addEventListener("keydown", (ev) => {
		if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); form.requestSubmit(); }
	});
	stopButton.addEventListener("click", () => abort && abort.abort());
	timeout.addEventListener("input", () => timeout.setCustomValidity(""));
	// Leaving the page kills a running command: ask first.
	window.addEventListener("beforeunload", (ev) => { if (abort) ev.preventDefault(); });

	const show = (items) => summary.replaceChildren(...items.map(([k, v]) =>
		el("div", {}, el("span", { class: "label", text: k }), typeof v === "string" ? el("span", { class: "big", text: v }) : v)));

	async function run() {
		const ms = parseTimeout(timeout.value);
		if (isNaN(ms)) { timeout.setCustomValidity("A duration such as 30s, 2m30s or 1500ms (a bare number is seconds)"); timeout.reportValidity(); return; }
		timeout.setCustomValidity("");
		abort = new AbortController();
		runButton.disabled = true;
		stopButton.hidden = false;
		panel.hidden = false;
		output.replaceChildren();
		banner.hidden = true;
		show([["State", stateBadge("running")]]);
		const began = performance.now();
		let shown = 0, hidden = 0, pending = [], result = null, state = null, job = null, refused = false;
		const flush = () => {
			if (pending.length) { output.append(...pending); pending = []; }
		};
		const timer = setInterval(flush, 100);
		const append = (text, err) => {
			const room = maxShown - shown;
			if (room <= 0) { hidden += text.length; return; }
			if (text.length > room) { hidden += text.length - room; text = text.slice(0, room); }
			shown += text.length;
			pending.push(err ? el("span", { class: "err", text }) : document.createTextNode(text));
		};
		try {
			const globs = collect ? collect.value.split("\n").map((g) => g.trim()).filter((g) => g) : [];
			let request = { method: "POST", signal: abort.signal };
			if (files && files.files.length) {
				// As a form: the files stream to the broker, never held whole.
				const body = new FormData();
				body.append("cmd", cmd.value);
				body.append("timeout_ms", String(ms));
				for (const g of globs) body.append("collect", g);
				for (const f of files.files) body.append("file", f, f.name);
				request.body = body;
			} else {
				request.headers = { "Content-Type": "application/json" };
				request.body = JSON.stringify({ cmd: cmd.value, timeout_ms: ms, collect: globs });
			}
			const resp = await fetch("/api/exec?stream=1", request);
			if (!resp.ok && !(resp.headers.get("Content-Type") || "").includes("ndjson")) {
				refused = true;
				const body = await resp.json().catch(() => ({ error: resp.statusText }));
				throw new Error(body.error || resp.statusText);
			}
			const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
			let buf = "";
			for (;;) {
				const { value, done } = await reader.read();
				if (done) break;
				buf += value;
				let nl;
				while ((nl = buf.indexOf("\n")) >= 0) {
					const line = buf.slice(0, nl);
					buf = buf.slice(nl + 1);
					if (!line) continue;
					const msg = JSON.parse(line);
					if (msg.stdout !== undefined) append(msg.stdout, false);
					else if (msg.stderr !== undefined) append(msg.stderr, true);
					else if (msg.job && (job = msg.job)) show([["State", stateBadge("running")], ["Master", msg.master],
						["Job", el("a", { class: "big mono", href: "/jobs/" + msg.job, target: "_blank", text: msg.job })]]);
					else if (msg.result) { result = msg.result; state = msg.state; }
				}
			}
			flush();
			if (!result) throw new Error("the broker ended the answer without a result");
			const items = [["State", stateBadge(state)]];
			if (state !== "not_run" && state !== "unknown" && state !== "lost") {
				items.push(["Exit code", String(result.exit_code)], ["Duration", duration(result.duration_ms)]);
			}
			items.push(["Master", result.master || "-"]);
			if (result.job) items.push(["Job", el("a", { class: "big mono", href: "/jobs/" + result.job, text: result.job })]);
			if (globs.length && !result.outputs && result.job && state !== "not_run") {
				items.push(["Brought back", "nothing matched"]);
			} else if (result.outputs && result.job) {
				const n = result.outputs.length;
				items.push(["Brought back", el("a", { class: "big", id: "outputs-link", href: "/api/jobs/" + result.job + "/outputs.zip", download: "",
					text: n + (n === 1 ? " file" : " files") + " (zip)" })]);
			}
			show(items);
			if (result.error) summary.append(el("p", { class: "error-box", role: "alert", text: result.error }));
			const notes = [];
			if (hidden) notes.push(`The page shows the first ${size(maxShown)} of the output; ${size(hidden)} more are on the job's page.`);
			if (result.stdout_dropped || result.stderr_dropped) notes.push(`The master kept the first part and dropped ${size(result.stdout_dropped)} of stdout and ${size(result.stderr_dropped)} of stderr (its --max-output).`);
			if (notes.length) { banner.textContent = notes.join(" "); banner.hidden = false; }
		} catch (e) {
			flush();
			const stopped = e.name === "AbortError";
			const stoppedText = job ? "Stopped: the command was killed on the master. Its job says how it ended."
				: "Stopped before any master took it: nothing ran.";
			const items = [["State", stateBadge(stopped ? "cancelled" : refused ? "not_run" : "unknown")], ["After", duration(Math.round(performance.now() - began))]];
			if (job) items.push(["Job", el("a", { class: "big mono", href: "/jobs/" + job, text: job })]);
			show(items);
			summary.append(el("p", { class: "error-box", role: "alert",
				text: stopped ? stoppedText : String(e.message || e) }));
		} finally {
			clearInterval(timer);
			abort = null;
			runButton.disabled = false;
			stopButton.hidden = true;
		}
	}

	form.addEventListener("submit", (ev) => { ev.preventDefault(); if (!abort) run(); });
	if (form.dataset.autostart) {
		// A re-run, posted: a reload or Back shows the form, and runs nothing.
		history.replaceState(null, "", form.dataset.from ? "/run?from=" + form.dataset.from : "/run");
		run();
	}
}

// --- start ---------------------------------------------------------------

({ cluster: clusterPage, jobs: jobsPage, job: jobPage, run: runPage }[page] || (() => {}))();
refreshTimes();
setInterval(refreshTimes, 1000);
