// Worklist and case views of the report. Every value from the input reaches the page through
// textContent or an attribute, never as markup; the data is parsed from an inert JSON block.
(function () {
  "use strict";
  // Repeated strings travel once, in their own table; evidence rows hold indices into it.
  var S = JSON.parse(document.getElementById("report-strings").textContent);
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var cases = data.cases;
  // The severity scale (worst first: the pack's, when the report was given one), the style of
  // each severity, and the mention statuses that do not count all come with the data.
  var SEVERITIES = data.severities;
  var SEVERITY_CLASS = data.severity_class;
  var RULED_OUT = {};
  data.ruled_out.forEach(function (s) { RULED_OUT[s] = 1; });
  var byIndex = {};
  function evidence(rows) {
    return rows.map(function (r) {
      var e = { ref: S[r[0]], path: S[r[1]] };
      if (r[2] >= 0) { e.snippet = S[r[2]]; }
      if (r[3] >= 0) { e.note = S[r[3]]; }
      if (r[4] >= 0) { e.status = S[r[4]]; }
      if (r[5] >= 0) { e.cue = S[r[5]]; }
      if (r.length > 7) { e.span = [r[6], r[7]]; }
      return e;
    });
  }
  cases.forEach(function (c) {
    byIndex[c.i] = c;
    c.findings.forEach(function (f) { f.message = S[f.message]; });
    c.modifiers.forEach(function (m) { m.reason = S[m.reason]; });
    var rank = SEVERITIES.length;
    c.findings.forEach(function (f) {
      var r = SEVERITIES.indexOf(f.severity);
      if (r >= 0 && r < rank) { rank = r; }
    });
    c._worst = rank;
    c._codes = c.findings.map(function (f) { return f.code; });
    c._mods = c.modifiers.map(function (m) { return m.code; }).join(", ");
  });

  // What the search box looks through: ids, codes, messages, reasons and every quoted or
  // noted piece of evidence. Built on the first search, so that opening the page stays fast.
  function searchText(c) {
    if (c._text === undefined) {
      var parts = [c.procedure, c.patient, c.encounter, c.performer, c.payer, c.policy, c.date, c.pos, c.outcome, c._mods];
      var add = function (rows) { rows.forEach(function (r) { if (r[2] >= 0) { parts.push(S[r[2]]); } if (r[3] >= 0) { parts.push(S[r[3]]); } }); };
      c.findings.forEach(function (f) { parts.push(f.code, f.message); add(f.ev); });
      c.modifiers.forEach(function (m) { parts.push(m.code, m.reason); add(m.ev); });
      c.criteria.forEach(function (k) { parts.push(S[k[0]]); add(k[2]); });
      c._text = parts.join("\n").toLowerCase();
    }
    return c._text;
  }

  var $ = function (id) { return document.getElementById(id); };
  var state = { q: "", outcome: "", code: "", severity: "", payer: "", sort: "", dir: 1, page: 0, size: Number($("f-size").value) };
  var view = cases;

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }
  function sevClass(s) { return SEVERITY_CLASS[s] || "low"; }
  function badge(severity) { return el("span", severity, "sev sev-" + sevClass(severity)); }
  function outcomeBadge(outcome) {
    return el("span", outcome, "outcome outcome-" + (outcome === "claim" ? "claim" : "issues"));
  }

  // ---- worklist ---------------------------------------------------------------------------
  var KEYS = {
    procedure: function (c) { return c.procedure; },
    patient: function (c) { return c.patient; },
    date: function (c) { return c.date; },
    performer: function (c) { return c.performer; },
    payer: function (c) { return c.payer + "\n" + c.policy; },
    pos: function (c) { return c.pos; },
    outcome: function (c) { return c.outcome; },
    modifiers: function (c) { return c._mods; },
    findings: function (c) { return (SEVERITIES.length - c._worst) * 100000 + c.findings.length; }
  };

  function applyFilters() {
    var q = state.q.trim().toLowerCase();
    view = cases.filter(function (c) {
      if (state.outcome && c.outcome !== state.outcome) { return false; }
      if (state.payer && c.payer !== state.payer) { return false; }
      if (state.code === "-" && c.findings.length) { return false; }
      if (state.code && state.code !== "-" && c._codes.indexOf(state.code) < 0) { return false; }
      if (state.severity && !c.findings.some(function (f) { return f.severity === state.severity; })) { return false; }
      return !q || searchText(c).indexOf(q) >= 0;
    });
    if (state.sort) {
      var key = KEYS[state.sort], dir = state.dir;
      view = view.slice().sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x < y) { return -dir; }
        if (x > y) { return dir; }
        return a.i - b.i;
      });
    }
    state.page = 0;
  }

  function pages() { return Math.max(1, Math.ceil(view.length / state.size)); }

  function row(c) {
    var tr = document.createElement("tr");
    tr.dataset.case = String(c.i);
    var th = el("th");
    th.scope = "row";
    var a = el("a", c.procedure);
    a.href = "#case-" + c.i;
    th.appendChild(a);
    tr.appendChild(th);
    [[c.patient], [c.date, "date"], [c.performer]].forEach(function (v) {
      tr.appendChild(el("td", v[0] || "—", v[1]));
    });
    var payer = el("td", c.payer || "—");
    if (c.policy) { payer.appendChild(el("span", c.policy, "policy")); }
    tr.appendChild(payer);
    tr.appendChild(el("td", c.pos || "—"));
    var out = el("td");
    out.appendChild(outcomeBadge(c.outcome));
    tr.appendChild(out);
    tr.appendChild(el("td", c._mods || "—"));
    var td = el("td");
    if (c.findings.length) {
      var ul = el("ul", null, "codes");
      c.findings.forEach(function (f) {
        var li = el("li");
        li.appendChild(badge(f.severity));
        li.appendChild(document.createTextNode(" "));
        var code = el("code", f.code, "finding-code");
        code.title = f.message; // a tooltip for the mouse; the text below for everyone else
        li.appendChild(code);
        if (f.message) { li.appendChild(el("span", ": " + f.message, "visually-hidden")); }
        ul.appendChild(li);
      });
      td.appendChild(ul);
    } else {
      td.textContent = "—";
    }
    tr.appendChild(td);
    return tr;
  }

  function renderList() {
    var start = state.page * state.size;
    var end = Math.min(view.length, start + state.size);
    var frag = document.createDocumentFragment();
    for (var k = start; k < end; k++) { frag.appendChild(row(view[k])); }
    document.querySelector("#cases tbody").replaceChildren(frag);
    var filtered = view.length === cases.length ? "" : " (filtered from " + cases.length.toLocaleString("en-US") + ")";
    $("status").textContent = view.length
      ? "Showing " + (start + 1).toLocaleString("en-US") + "–" + end.toLocaleString("en-US") + " of " +
        view.length.toLocaleString("en-US") + " case(s)" + filtered + "."
      : "No case matches the filters" + filtered + ".";
    $("p-info").textContent = "Page " + (state.page + 1) + " of " + pages();
    $("p-first").disabled = $("p-prev").disabled = state.page === 0;
    $("p-next").disabled = $("p-last").disabled = state.page >= pages() - 1;
    document.querySelectorAll("#cases thead th").forEach(function (th) {
      var key = th.querySelector("button").dataset.sort;
      th.setAttribute("aria-sort", key === state.sort ? (state.dir > 0 ? "ascending" : "descending") : "none");
    });
  }

  function update() { applyFilters(); renderList(); }

  var typing = null;
  $("f-q").addEventListener("input", function () {
    clearTimeout(typing);
    typing = setTimeout(function () { state.q = $("f-q").value; update(); }, 120);
  });
  ["outcome", "code", "severity", "payer"].forEach(function (name) {
    $("f-" + name).addEventListener("change", function () { state[name] = this.value; update(); });
  });
  $("f-size").addEventListener("change", function () { state.size = Number(this.value); state.page = 0; renderList(); });
  $("f-reset").addEventListener("click", function () {
    ["q", "outcome", "code", "severity", "payer"].forEach(function (name) { state[name] = ""; $("f-" + name).value = ""; });
    update();
  });
  document.querySelectorAll("#cases thead button.sort").forEach(function (button) {
    button.addEventListener("click", function () {
      var key = button.dataset.sort;
      state.dir = state.sort === key ? -state.dir : 1;
      state.sort = key;
      update();
    });
  });
  function go(page) { state.page = Math.max(0, Math.min(pages() - 1, page)); renderList(); }
  $("p-first").addEventListener("click", function () { go(0); });
  $("p-prev").addEventListener("click", function () { go(state.page - 1); });
  $("p-next").addEventListener("click", function () { go(state.page + 1); });
  $("p-last").addEventListener("click", function () { go(pages() - 1); });
  document.querySelectorAll("[data-filter-code]").forEach(function (button) {
    button.addEventListener("click", function () {
      state.code = button.dataset.filterCode;
      $("f-code").value = state.code;
      update();
      location.hash = "#worklist";
      $("f-code").focus();
    });
  });

  // ---- printing: every case of the filtered worklist, not only the page on screen ---------
  var printing = false;
  function printAll(on) {
    if (on === printing || (on && $("worklist").hidden)) { return; } // a case prints as shown
    printing = on;
    if (!on) { renderList(); return; }
    var frag = document.createDocumentFragment();
    view.forEach(function (c) { frag.appendChild(row(c)); });
    document.querySelector("#cases tbody").replaceChildren(frag);
    var filtered = view.length === cases.length ? "" : " (filtered from " + cases.length.toLocaleString("en-US") + ")";
    $("status").textContent = view.length
      ? "All " + view.length.toLocaleString("en-US") + " case(s) of the worklist" + filtered + "."
      : "No case matches the filters" + filtered + ".";
  }
  window.addEventListener("beforeprint", function () { printAll(true); });
  window.addEventListener("afterprint", function () { printAll(false); });
  // Print preview and "save as PDF" switch the media without always firing beforeprint.
  var printMedia = window.matchMedia ? window.matchMedia("print") : null;
  if (printMedia && printMedia.addEventListener) {
    printMedia.addEventListener("change", function (event) { printAll(event.matches); });
  }

  // ---- case view --------------------------------------------------------------------------
  function snippet(ev) {
    var q = el("blockquote", null, "snippet");
    var s = ev.snippet;
    if (ev.span) {
      // Spans count code points (Python's str); JS strings count UTF-16 units, which differ
      // after an emoji or any other astral character: slice the code points instead.
      var cp = Array.from(s);
      q.appendChild(document.createTextNode(cp.slice(0, ev.span[0]).join("")));
      q.appendChild(el("mark", cp.slice(ev.span[0], ev.span[1]).join("")));
      q.appendChild(document.createTextNode(cp.slice(ev.span[1]).join("")));
    } else {
      q.textContent = s;
    }
    return q;
  }

  function evidenceList(items) {
    if (!items.length) { return el("span", "no evidence recorded", "empty"); }
    var ul = el("ul", null, "evidence");
    items.forEach(function (ev) {
      var li = el("li");
      var ruledOut = ev.status && RULED_OUT[ev.status];
      if (ruledOut) { li.className = "ruled-out"; }
      if (ev.snippet !== undefined) { li.appendChild(snippet(ev)); }
      if (ev.status) {
        var label = ruledOut ? ev.status + " — does not count" : ev.status;
        if (ev.cue) { label += " (cue: “" + ev.cue + "”)"; }
        li.appendChild(el("span", label, "status " + (ruledOut ? "status-ruled-out" : "status-affirmed")));
      }
      if (ev.note) { li.appendChild(el("span", " " + ev.note, "note")); }
      var where = el("cite", null, "where");
      where.appendChild(el("code", ev.ref));
      if (ev.path) {
        where.appendChild(document.createTextNode(" · "));
        where.appendChild(el("code", ev.path));
      }
      li.appendChild(where);
      ul.appendChild(li);
    });
    return ul;
  }

  function table(caption, headers, rows) {
    var t = el("table");
    t.appendChild(el("caption", caption));
    var head = el("thead"), hr = el("tr");
    headers.forEach(function (h) { var th = el("th", h); th.scope = "col"; hr.appendChild(th); });
    head.appendChild(hr);
    t.appendChild(head);
    var body = el("tbody");
    rows.forEach(function (cells) {
      var tr = el("tr");
      cells.forEach(function (v) {
        var td = el("td");
        if (v instanceof Node) { td.appendChild(v); } else { td.textContent = v === null || v === undefined || v === "" ? "—" : String(v); }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    t.appendChild(body);
    return t;
  }

  function section(title, id) {
    var s = el("section");
    var h = el("h3", title);
    h.id = id;
    s.setAttribute("aria-labelledby", id);
    s.appendChild(h);
    return s;
  }

  // A section of the case listing `items` in a table (a row each, cells(item)), titled with
  // their count; `none` says so when there are none.
  function listSection(title, id, items, caption, headers, cells, none) {
    var s = section(title + " (" + items.length + ")", id);
    s.appendChild(items.length ? table(caption, headers, items.map(cells)) : el("p", none, "empty"));
    return s;
  }

  function facts(pairs) {
    var dl = el("dl", null, "facts");
    pairs.forEach(function (p) { dl.appendChild(el("dt", p[0])); dl.appendChild(el("dd", p[1] || "—")); });
    return dl;
  }

  function renderCase(c) {
    var root = $("case");
    var back = el("a", "← Back to the worklist", "back");
    back.href = "#worklist";
    var h = el("h2", "Case " + c.procedure);
    h.id = "case-h";
    h.tabIndex = -1;
    var parts = [back, h];
    var head = facts([
      ["Outcome", c.outcome === "claim" ? "claim — ready to bill" : "issues — blocked"],
      ["Patient", c.patient], ["Encounter", c.encounter], ["Date of service", c.date],
      ["Performer", c.performer], ["Place of service", c.pos],
      ["Payer", c.payer], ["Payer policy", S[c.policy_title] + (c.policy_source ? " " + c.policy_source : "") + (c.policy_verdict ? " — " + c.policy_verdict : "")],
      ["Coverage", c.coverage],
      ["Unresolved references", c.unresolved.join(", ")]
    ]);
    parts.push(head);

    parts.push(listSection("Findings", "case-findings", c.findings, "What blocks or weakens the claim",
      ["Severity", "Finding", "Message", "Evidence"],
      function (f) { return [badge(f.severity), el("code", f.code), f.message, evidenceList(evidence(f.ev))]; },
      "No findings."));

    parts.push(listSection("Modifiers", "case-modifiers", c.modifiers, "Modifiers on the 47382 line",
      ["Modifier", "Why", "Evidence"],
      function (m) { return [el("code", m.code), m.reason, evidenceList(evidence(m.ev))]; },
      "No modifiers."));

    var cs = section("Criteria", "case-criteria");
    cs.appendChild(table("Each criterion, its verdict and evidence", ["Criterion", "Verdict", "Evidence"],
      c.criteria.map(function (k) {
        var passed = k[1] === 1;
        return [el("code", S[k[0]]), el("span", passed ? "✓ pass" : "✗ fail", "outcome " + (passed ? "verdict-pass" : "verdict-fail")), evidenceList(evidence(k[2]))];
      })));
    parts.push(cs);

    if (c.payer_criteria.length) {
      parts.push(listSection("Payer policy criteria", "case-payer-criteria", c.payer_criteria,
        "Each criterion of " + S[c.policy_title] + ", its result and evidence",
        ["Criterion", "Result", "Policy says", "Why", "Evidence"],
        function (k) {
          return [el("code", S[k[0]]), el("span", k[3], "outcome verdict-" + (k[3] === "met" ? "pass" : k[3] === "not-met" ? "fail" : "open")),
            S[k[1]] + " " + S[k[2]], S[k[4]], evidenceList(evidence(k[5]))];
        }, "No criteria."));
    }

    var cl = section("Claim", "case-claim");
    if (c.claim) {
      cl.appendChild(facts([["Status", c.claim.status], ["Billing provider", c.claim.provider],
        ["Rendering provider", c.claim.rendering], ["Insurer", c.claim.insurer],
        ["Coverage", c.claim.coverage.join(", ")]]));
      cl.appendChild(table("Claim lines", ["Line", "Code", "Description", "Modifiers", "Units", "Diagnosis pointers", "POS", "Date"],
        c.claim.lines.map(function (l) {
          return [l.seq, el("code", l.code), S[l.display], l.modifiers.join(", "), l.units, l.dx.join(", "), l.pos, l.date];
        })));
      cl.appendChild(table("Diagnoses", ["#", "Code", "Description", "Type"],
        c.claim.diagnoses.map(function (d) { return [d.seq, el("code", d.code), S[d.display], d.type]; })));
    } else {
      cl.appendChild(el("p", "No Claim: a blocking finding stops it.", "empty"));
    }
    parts.push(cl);

    parts.push(listSection("Detected issues", "case-issues", c.issues, "DetectedIssue resources written",
      ["Code", "Severity", "Detail"],
      function (d) { return [el("code", S[d[0]]), badge(S[d[1]]), el("pre", S[d[2]], "detail")]; },
      "None."));
    root.replaceChildren.apply(root, parts);
    document.title = "Case " + c.procedure + " — " + document.title.split(" — ").pop();
    return h;
  }

  // ---- routing: #case-N shows a case, anything else the overview and worklist --------------
  var baseTitle = document.title;
  var lastCase = null;
  function route() {
    var m = /^#case-(\d+)$/.exec(location.hash);
    var c = m ? byIndex[Number(m[1])] : undefined;
    $("overview").hidden = $("worklist").hidden = !!c;
    $("case").hidden = !c;
    if (c) {
      document.title = baseTitle;
      renderCase(c).focus();
      window.scrollTo(0, 0);
      lastCase = c.i;
    } else {
      document.title = baseTitle;
      if (lastCase !== null) {
        var link = document.querySelector('#cases tr[data-case="' + lastCase + '"] a');
        if (link) { link.focus(); }
        lastCase = null;
      }
    }
  }
  window.addEventListener("hashchange", route);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !$("case").hidden) { location.hash = "#worklist"; }
  });

  update();
  route();
  document.body.dataset.ready = "1";
})();
